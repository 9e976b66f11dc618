"""Byte reading and argument lengths of the ESC/POS commands the decoder only skips."""

from __future__ import annotations


class Reader:
    """A cursor over bytes that raises EOFError instead of reading past the end."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def at_end(self) -> bool:
        """True when every byte has been read."""
        return self.pos >= len(self.data)

    def byte(self) -> int:
        """Read one byte."""
        if self.pos >= len(self.data):
            raise EOFError
        self.pos += 1
        return self.data[self.pos - 1]

    def take(self, n: int) -> bytes:
        """Read exactly `n` bytes."""
        if self.pos + n > len(self.data):
            self.pos = len(self.data)
            raise EOFError
        self.pos += n
        return self.data[self.pos - n : self.pos]

    def u16(self) -> int:
        """Read a little-endian 16-bit number (nL nH)."""
        return int.from_bytes(self.take(2), "little")

    def u32(self) -> int:
        """Read a little-endian 32-bit number (p1..p4)."""
        return int.from_bytes(self.take(4), "little")

    def until(self, stop: int) -> bytes:
        """Read up to and excluding the next `stop` byte, consuming it."""
        end = self.data.find(bytes([stop]), self.pos)
        if end < 0:
            self.pos = len(self.data)
            raise EOFError
        out = self.data[self.pos : end]
        self.pos = end + 1
        return out


# Fixed argument counts after the command byte, from Epson's ESC/POS reference.
_ESC_ARGS = {0x20: 1, 0x21: 1, 0x24: 2, 0x25: 1, 0x2D: 1, 0x32: 0, 0x33: 1, 0x3D: 1, 0x3F: 1,
             0x42: 2, 0x47: 1, 0x4C: 0, 0x4D: 1, 0x52: 1, 0x53: 0, 0x54: 1, 0x55: 1, 0x56: 1,
             0x5C: 2, 0x63: 2, 0x72: 1, 0x7B: 1, 0x4B: 1, 0x65: 1, 0x66: 2, 0x57: 8, 0x43: 1,
             0x6C: 1, 0x4A: 1}
_GS_ARGS = {0x42: 1, 0x62: 1, 0x48: 1, 0x66: 1, 0x68: 1, 0x77: 1, 0x4C: 2, 0x57: 2, 0x50: 2,
            0x24: 2, 0x5C: 2, 0x61: 1, 0x72: 1, 0x49: 1, 0x3A: 0, 0x5E: 3, 0x7C: 1, 0x2F: 1,
            0x45: 1, 0x54: 1, 0x63: 0, 0x41: 2, 0x5A: 1}
_FS_ARGS = {0x2E: 0, 0x26: 0, 0x21: 1, 0x2D: 1, 0x43: 1, 0x53: 2, 0x57: 1, 0x70: 2}


def skip_unknown(r: Reader, prefix: int, c: int) -> bool:
    """Skip the arguments of a command not interpreted; False if its length is unknown."""
    if c == 0x28:  # ESC ( X / GS ( X / FS ( X: a 16-bit length-prefixed body
        r.byte()
        r.take(r.u16())
        return True
    if prefix == 0x1D and c == 0x2A:  # GS * x y: define downloaded bit image
        x, y = r.byte(), r.byte()
        r.take(x * y * 8)
        return True
    table = {0x1B: _ESC_ARGS, 0x1D: _GS_ARGS, 0x1C: _FS_ARGS}[prefix]
    r.take(table.get(c, 0))
    return c in table
