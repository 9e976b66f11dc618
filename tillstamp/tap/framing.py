"""Streaming ESC/POS framing: where each command ends, where the cuts are, what state is set.

The proxy cannot wait for a whole job before forwarding it (the POS may be waiting for the
answer to a status query in the middle), yet it must stop right before a cut to insert the
loyalty block. `Framer` is fed chunks as they arrive and reports, by absolute offset, the
cuts and status queries it finds. Command lengths are the decoder's (`escpos_decode`), so a
cut the framer finds is a cut `decode()` finds at the same offset (a property test checks
this). Bytes inside a command's data (a raster image can hold `GS V` by accident) are
skipped by length, never scanned. Only a command *header* cut off at the end of a chunk is
held back, a few bytes at most, until the rest arrives.

Two walkers give the same answers (a property test checks that too). The exact one takes a
command at a time in Python (~3 us each), which is what a receipt needs. A 1 MB report holds
40,000 style commands, so long stretches go through `_stretch` first: numpy finds every
DLE/ESC/FS/GS byte at once, looks up each command's length in a table, and proves the
stretch is aligned (no command's arguments hold the next such byte). The style commands,
feeds and text in it are then summed up without visiting them one by one; it stops before
anything it cannot vouch for (a cut, a status query, image or code data, `ESC @`, arguments
that look like commands, the end of the chunk), which the exact walker then takes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from tillstamp.drivers.escpos_commands import Reader, skip_unknown

DLE, ESC, FS, GS = 0x10, 0x1B, 0x1C, 0x1D
_SPECIAL = re.compile(rb"[\x10\x1b\x1c\x1d]")
_C0 = bytes(range(0x20))  # control bytes: everything else in text prints
_WINDOW = 1 << 17  # bytes the stretch walker looks at per call
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
    last_text: int = -1  # absolute offset of the last printable text byte
    last_break: int = -1  # ... of the last line end (LF, ESC d, ESC J) or cut
    last_cut: int = -1  # ... of the last cut
    text_bytes: int = 0  # bytes of text (and line ends) since the last cut
    # Stretches shorter than this are walked command by command (numpy costs ~50 us a call).
    stretch_min: int = 2048
    _buf: bytearray = field(default_factory=bytearray)  # bytes from `_base` not yet classified
    _base: int = 0  # absolute offset of _buf[0]
    _skip_to: int = 0  # data of a measured command runs up to here
    _stretch_after: int = 0  # after a stretch that gained little, walk exactly up to here
    _backoff: int = 0  # how far that is: doubles while stretches keep gaining little

    @property
    def mid_line(self) -> bool:
        """Text was printed since the last line end."""
        return self.last_text > self.last_break

    @property
    def text_since_cut(self) -> bool:
        """Printable text came after the last cut."""
        return self.last_text > self.last_cut

    @property
    def mid_command(self) -> bool:
        """A command's header or data is only partly here: a job cannot end inside it."""
        return self.pos < self._base + len(self._buf) or self._skip_to > self.pos

    def abandon_command(self) -> None:
        """Forget a partial command (the POS gave up in the middle): what follows is new."""
        self.pos = self._base + len(self._buf)
        self._skip_to = self.pos
        del self._buf[:]
        self._base = self.pos

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
            if len(buf) - i >= self.stretch_min and self.pos >= self._stretch_after:
                j = self._stretch(buf, i)
                if j - i < self.stretch_min:  # too dense for it: walk exactly for a while
                    self._backoff = min(2 * self._backoff or 256, 32_768)
                    self._stretch_after = self._base + j + self._backoff
                else:
                    self._backoff = 0
                i = j
                self.pos = self._base + j
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
        if lf >= 0:
            self.last_break = self._base + lf
        printed = len(buf[i:j].rstrip(_C0))  # up to and with the last printable byte
        if printed:
            self.last_text = self._base + i + printed - 1

    def _note(self, buf: bytearray, j: int, length: int, marks: list[Mark]) -> None:
        prefix, cmd = buf[j], buf[j + 1]
        if prefix == ESC:
            if cmd in (0x64, 0x4A):  # print and feed: the line is done
                self.last_break = self._base + j
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
        self.last_cut = self.last_break = self._base + j
        self.text_bytes = 0

    def _stretch(self, buf: bytearray, i: int) -> int:
        """Take the plain commands and text from `buf[i]` on at once; returns where it stopped.

        It stops at the first command the exact walker must take (see the module docstring),
        always on a command boundary, so the two walkers cannot disagree on alignment.
        """
        found = _SPECIAL.search(buf, i)
        first = len(buf) if found is None else found.start()
        if first + 1 >= len(buf) or not _LENGTHS[buf[first] << 8 | buf[first + 1]]:
            self._text(buf, i, first)  # text, then (if anything) a command to walk exactly
            return first
        # A window at a time: the arrays stay in cache, and a stop near the start costs little.
        # The window is a copy, because `buf` must stay resizable.
        a = np.frombuffer(bytes(memoryview(buf)[i : i + _WINDOW]), np.uint8)
        n = len(a)
        sp = (((a - np.uint8(ESC)) < 3) | (a == DLE)).nonzero()[0]  # every DLE/ESC/FS/GS byte
        codes = (a[sp].astype(np.intp) << 8) | a[np.minimum(sp + 1, n - 1)]
        length = _LENGTHS[codes]
        if sp[-1] == n - 1:
            length[-1] = 0  # a lead byte with its command byte still to come
        ends = sp + length
        # A command is plain when its length is fixed, it is complete, and the next lead byte
        # is not inside it. Up to the first that is not, every lead byte starts a command.
        bad = (length == 0) | (ends > np.append(sp[1:], n))
        k = int(bad.argmax()) if bad.any() else len(sp)
        stop = int(sp[k]) if k < len(sp) else n
        sp, ends, codes = sp[:k], ends[:k], codes[:k]
        self.text_bytes += stop - int((ends - sp).sum())
        # The style commands: the last of each kind, applied in the order they were sent.
        last = {}
        for code, slot in _SLOTS.items():
            hits = (codes == code).nonzero()[0]
            if len(hits):
                last[int(hits[-1])] = slot
        for c in sorted(last):
            self._set(last[c], bytes(buf[i + sp[c] : i + ends[c]]))
        feeds = ((codes == ESC << 8 | 0x64) | (codes == ESC << 8 | 0x4A)).nonzero()[0]
        brk = int(sp[feeds[-1]]) if len(feeds) else -1
        # Text runs lie between one command's end and the next command. Walk back over the
        # runs to the last printable byte: a line end met on the way (or a feed after it)
        # ends the line; one before it does not matter. Usually the last run decides.
        starts = np.concatenate(([0], ends))
        stops = np.append(sp, stop)
        runs = (starts < stops).nonzero()[0]
        for r in reversed(range(len(runs))):
            lo, hi = i + int(starts[runs[r]]), i + int(stops[runs[r]])
            printed = len(buf[lo:hi].rstrip(_C0))
            lf = buf.rfind(b"\n", lo + printed, hi)
            if lf >= 0:
                brk = max(brk, lf - i)
            if printed:
                self.last_text = self._base + lo + printed - 1
                break
        if brk >= 0:
            self.last_break = self._base + i + brk
        return i + stop

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


def _tables() -> tuple[np.ndarray, dict[int, str]]:
    """The stretch walker's lookups, built from `measure` so the two walkers share lengths."""
    # What only the exact walker may take: cuts, status queries, ESC @, and the commands whose
    # length depends on their arguments (image, code and tab data). Length 0 stands for them.
    exact = {(ESC, 0x40), (ESC, 0x69), (ESC, 0x6D), (ESC, 0x2A), (ESC, 0x44), (ESC, 0x28),
             (GS, 0x56), (GS, 0x72), (GS, 0x61), (GS, 0x76), (GS, 0x6B), (GS, 0x38), (GS, 0x2A),
             (GS, 0x28), (FS, 0x28), (DLE, 0x04)}
    lengths = np.zeros(1 << 16, np.intp)  # by lead << 8 | command byte
    for lead in (DLE, ESC, FS, GS):
        for c in range(256):
            if (lead, c) not in exact:
                lengths[lead << 8 | c] = measure(bytes([lead, c]) + bytes(16), 0) or 0
    slots = {ESC << 8 | c: slot for c, slot in _ESC_STATE.items()} | {GS << 8 | 0x21: "size"}
    return lengths, slots


_LENGTHS, _SLOTS = _tables()
