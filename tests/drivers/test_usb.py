"""escpos+usb:// opens through pyusb: a printer that is not plugged in is "retry later",
a malformed URL is "needs a person". No USB printer is attached to these machines."""

from __future__ import annotations

import pytest

from tillstamp.drivers.errors import DeviceConfigError, DeviceUnavailable
from tillstamp.drivers.printer import open_printer


def test_absent_usb_printer_is_unavailable_not_misconfigured():
    with pytest.raises(DeviceUnavailable, match="04b8:0202"):
        open_printer("escpos+usb://04b8:0202")


@pytest.mark.parametrize("url", ["escpos+usb://epson", "escpos+usb://04b8", "escpos+usb://zz:0202"])
def test_malformed_usb_url_is_a_config_error(url):
    with pytest.raises(DeviceConfigError):
        open_printer(url)
