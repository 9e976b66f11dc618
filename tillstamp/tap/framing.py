"""Streaming ESC/POS framing: where each command ends, where the cuts are, what state is set.

The proxy cannot wait for a whole job before forwarding it (the POS may be waiting for the
answer to a status query in the middle), yet it must stop right before a cut to insert the
loyalty block. `Framer` is fed chunks as they arrive and reports, by absolute offset, the
cuts and status queries it finds. Command lengths are the decoder's (`escpos_decode`), so a
cut the framer finds is a cut `decode()` finds at the same offset (a property test checks
this). Bytes inside a command's data (a raster image can hold `GS V` by accident) are
skipped by length, never scanned. Only a command *header* cut off at the end of a chunk is
held back, a few bytes at most, until the rest arrives.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from tillstamp.drivers.escpos_commands import Reader, skip_unknown

DLE, ESC, FS, GS = 0x10, 0x1B, 0x1C, 0x1D
_SPECIAL = re.compile(rb"[\x10\x1b\x1c\x1d]")
_PRINTABLE = re.compile(rb"[\x20-\xff]")
_CUT_ARG = (65, 66, 97, 98, 103, 104)  # GS V m n: these modes carry a feed argument

# The commands whose effect the loyalty block overwrites, so the proxy can restore the POS's
# setting afterwards: ESC command -> state slot (and GS ! -> "size").
_ESC_STATE = {0x21: "mode", 0x45: "bold", 0x2D: "underline", 0x61: "align", 0x74: "page"}


@dataclass(frozen=True)
class Mark:
    """A command the proxy acts on: a cut, or a status query, at absolute `offset`."""

    kind: str  # "cut" | "status"
    offset: int
    data: bytes
    state: tuple[bytes, ...] = ()  # for a cut: the POS's setting commands in force before it
    mid_line: bool = False  # for a cut: text is waiting on an unfinished line
    text: int = 0  # for a cut: bytes of text since the previous cut


@dataclass
class Framer:
    """Walks a stream fed in chunks; `feed` returns the marks found and how far it is sure."""

    pos: int = 0  # absolute offset of the next byte to classify
    state: dict[str, bytes] = field(default_factory=dict)
    mid_line: bool = False  # text was printed since the last line end
    text_since_cut: bool = False  # printable text came after the last cut
    texts: int = 0  # runs of printable text seen so far
    text_bytes: int = 0  # bytes of text (and line ends) since the last cut
    _buf: bytearray = field(default_factory=bytearray)  # bytes from `_base` not yet classified
    _base: int = 0  # absolute offset of _buf[0]
    _skip_to: int = 0  # data of a measured command runs up to here

    def feed(self, chunk: bytes) -> tuple[int, list[Mark]]:
        """Classify `chunk`; returns (offset before which every command is complete, marks)."""
        self._buf += chunk
        marks: list[Mark] = []
        buf = self._buf
        end = self._base + len(buf)
        while True:
            if self._skip_to > self.pos:  # inside a command's data: skip it whole
                if self._skip_to >= end:
                    self.pos = end
                    break
                self.pos = self._skip_to
            i = self.pos - self._base
            found = _SPECIAL.search(buf, i)
            j = len(buf) if found is None else found.start()
            self._text(buf, i, j)
            if found is None:
                self.pos = end
                break
            length = measure(buf, j)
            if length is None:  # header cut off: hold it until the rest arrives
                self.pos = self._base + j
                break
            self._note(buf, j, length, marks)
            self.pos = self._base + j
            self._skip_to = self.pos + length
        # Drop what is classified, keeping a held header; absolute offsets stay valid.
        keep = self.pos - self._base
        del buf[:keep]
        self._base += keep
        return self.pos, marks

    def _text(self, buf: bytearray, i: int, j: int) -> None:
        if j <= i:
            return
        self.text_bytes += j - i
        lf = buf.rfind(b"\n", i, j)
        if _PRINTABLE.search(buf, lf + 1 if lf >= 0 else i, j):
            self.mid_line = self.text_since_cut = True
            self.texts += 1
        elif lf >= 0:
            self.mid_line = False
            if _PRINTABLE.search(buf, i, lf):
                self.text_since_cut = True
                self.texts += 1

    def _note(self, buf: bytearray, j: int, length: int, marks: list[Mark]) -> None:
        prefix, cmd = buf[j], buf[j + 1]
        if prefix == ESC:
            if cmd in (0x64, 0x4A):  # print and feed: the line is done
                self.mid_line = False
            elif cmd in _ESC_STATE:
                self._set(_ESC_STATE[cmd], bytes(buf[j : j + length]))
            elif cmd == 0x40:  # ESC @ resets every setting
                self.state.clear()
            elif cmd in (0x69, 0x6D):
                self._cut(buf, j, length, marks)
        elif prefix == GS:
            if cmd == 0x56:
                self._cut(buf, j, length, marks)
            elif cmd == 0x21:
                self._set("size", bytes(buf[j : j + length]))
            elif cmd in (0x72, 0x61):
                marks.append(Mark("status", self._base + j, bytes(buf[j : j + length])))
        elif prefix == DLE and cmd == 0x04:
            marks.append(Mark("status", self._base + j, bytes(buf[j : j + length])))

    def _set(self, slot: str, command: bytes) -> None:
        self.state.pop(slot, None)  # re-insert: replay keeps the order they were sent in
        self.state[slot] = command

    def _cut(self, buf: bytearray, j: int, length: int, marks: list[Mark]) -> None:
        marks.append(Mark("cut", self._base + j, bytes(buf[j : j + length]),
                          tuple(self.state.values()), self.mid_line, self.text_bytes))
        self.mid_line = self.text_since_cut = False
        self.text_bytes = 0

    def page(self) -> bytes:
        """The ESC t command in force now (b"" for the printer's default page)."""
        return self.state.get("page", b"")


def _u16(buf: bytes | bytearray, i: int) -> int:
    return buf[i] | buf[i + 1] << 8


def measure(buf: bytes | bytearray, i: int) -> int | None:
    """Length of the command starting at `buf[i]`, which may reach past the end of `buf`.

    None while its header is incomplete. Lengths follow `escpos_decode` exactly.
    """
    n = len(buf)
    lead = buf[i]
    if lead not in (DLE, ESC, FS, GS):
        return 1
    if i + 1 >= n:
        return None
    c = buf[i + 1]
    k: int | None  # a fixed length: complete once k bytes are here
    if lead == ESC and c in (0x21, 0x45, 0x2D, 0x61, 0x74, 0x64, 0x4A):
        k = 3  # the commonest commands first: styles and feeds
    elif lead == DLE:
        k = 3 if c in (0x04, 0x05) else 5 if c == 0x14 else 2
    elif c == 0x28:  # ESC|GS|FS ( X pL pH body
        return None if i + 5 > n else 5 + _u16(buf, i + 3)
    elif lead == ESC:
        if c == 0x2A:  # ESC * m nL nH: column image
            if i + 5 > n:
                return None
            return 5 + _u16(buf, i + 3) * (3 if buf[i + 2] in (32, 33) else 1)
        if c == 0x44:  # ESC D tab stops, NUL terminated
            stop = buf.find(0, i + 2)
            return None if stop < 0 else stop - i + 1
        if c in (0x40, 0x69, 0x6D):
            return 2
        k = 5 if c == 0x70 else _table(buf, i, lead, c)
    elif lead == GS:
        return _gs(buf, i, c)  # checks its own header: image data may still be on its way
    else:
        k = _table(buf, i, lead, c)
    return None if k is None or i + k > n else k


def _gs(buf: bytes | bytearray, i: int, c: int) -> int | None:
    n = len(buf)
    if c == 0x56:
        if i + 3 > n:
            return None
        k = 4 if buf[i + 2] in _CUT_ARG else 3
        return k if i + k <= n else None
    if c == 0x21:
        return 3 if i + 3 <= n else None
    if c == 0x76:  # GS v 0 m xL xH yL yH data
        return None if i + 8 > n else 8 + _u16(buf, i + 4) * _u16(buf, i + 6)
    if c == 0x6B:  # GS k m: NUL terminated (m <= 6) or n-prefixed
        if i + 3 > n:
            return None
        if buf[i + 2] <= 6:
            stop = buf.find(0, i + 3)
            return None if stop < 0 else stop - i + 1
        return None if i + 4 > n else 4 + buf[i + 3]
    if c == 0x38:  # GS 8 L p1..p4 body
        if i + 3 > n:
            return None
        if buf[i + 2] != 0x4C:
            return 3
        return None if i + 7 > n else 7 + int.from_bytes(buf[i + 3 : i + 7], "little")
    if c == 0x2A:  # GS * x y data
        return None if i + 4 > n else 4 + buf[i + 2] * buf[i + 3] * 8
    return _table(buf, i, GS, c)


def _table(buf: bytes | bytearray, i: int, lead: int, c: int) -> int | None:
    # The fixed-argument tables live with the decoder; read them through its own skipper.
    window = bytes(buf[i + 2 : i + 18])
    r = Reader(window)
    try:
        skip_unknown(r, lead, c)
    except EOFError:
        return None
    return 2 + r.pos
