"""Devices opened from URLs: camera QR reader, serial scanner, ESC/POS printer, decoder.

Import from the modules (`tillstamp.drivers.printer.open_printer`, ...): importing this
package loads nothing heavy and starts nothing. See docs/DRIVERS.md.
"""
