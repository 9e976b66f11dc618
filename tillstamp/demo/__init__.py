"""`tillstamp demo`: a scripted morning at a Jakarta coffee shop, then head office, no hardware.

It composes every actor (the till, its devices, the POS API, head office and its CRM), so it
lives in a package of its own that may import all of them, like the command line.
"""
