"""Failures from outside the code, named in one line: a full disk, a read-only or corrupt
database, input that is not valid UTF-8 or nests too deeply.

The CLI prints `message` and exits 2; the POS API answers `status` with `code` as JSON. A
traceback would tell a cashier nothing, and "disk full" must say disk full: it is the one
failure they can fix on the spot.
"""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path

# Below this much free space an I/O error is taken for a full disk: SQLite reports a full
# disk as SQLITE_FULL only sometimes (growing the WAL index gives SQLITE_IOERR_SHMSIZE), and
# Python does not expose the errno behind an SQLite I/O error.
LOW_SPACE_BYTES = 1 << 20
# SQLite's primary result codes (the low byte of an extended code).
_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_READONLY, _SQLITE_IOERR = 5, 6, 8, 10
_SQLITE_CORRUPT, _SQLITE_FULL, _SQLITE_CANTOPEN, _SQLITE_NOTADB = 11, 13, 14, 26


@dataclass(frozen=True)
class Failure:
    """What went wrong (`code`), a sentence for a person, and the HTTP status to answer."""

    code: str
    message: str
    status: int


DISK_FULL = Failure("disk_full", "disk full: no space left for the database; free some space and "
                    "try again (nothing was recorded)", 503)
READ_ONLY = Failure("read_only", "the database is read-only (file, folder or disk): nothing can be "
                    "recorded until it is writable again", 503)
CORRUPT = Failure("corrupt_database", "the database is damaged or not a tillstamp database: restore it "
                  "from a backup (nothing was recorded)", 503)
CANT_OPEN = Failure("cannot_open_database", "the database cannot be opened (missing folder or "
                    "no permission)", 503)
BUSY = Failure("database_busy", "the database is busy; try again in a moment", 503)
IO_ERROR = Failure("io_error", "the disk reported an error while writing the database", 503)
INVALID_UTF8 = Failure("invalid_utf8", "input is not valid UTF-8 text", 422)
SURROGATE = Failure("invalid_text", "input holds an unpaired UTF-16 surrogate (like \\ud800), "
                    "which is not text", 422)
TOO_DEEP = Failure("too_deep", "input nests too deeply (JSON arrays or objects inside each other)", 422)


def classify(exc: BaseException, folder: Path | None = None) -> Failure | None:
    """The Failure an exception stands for, or None when it is a bug (or a known refusal).

    `folder` is the data folder: an I/O error there with almost no free space is a full disk.
    """
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        primary = code & 0xFF if isinstance(code, int) else None
        found = {
            _SQLITE_FULL: DISK_FULL, _SQLITE_READONLY: READ_ONLY, _SQLITE_CORRUPT: CORRUPT,
            _SQLITE_NOTADB: CORRUPT, _SQLITE_CANTOPEN: CANT_OPEN, _SQLITE_BUSY: BUSY,
            _SQLITE_LOCKED: BUSY, _SQLITE_IOERR: IO_ERROR,
        }.get(primary) if primary is not None else _by_text(str(exc))
        if found in (IO_ERROR, CANT_OPEN) and folder is not None:
            # SQLite cannot create the WAL index (-shm) on a read-only filesystem and says
            # "unable to open"; it cannot grow it on a full one and says "I/O error".
            if _read_only(folder):
                return READ_ONLY
            if found is IO_ERROR and _low_space(folder):
                return DISK_FULL
        return found
    if isinstance(exc, OSError):
        return {errno.ENOSPC: DISK_FULL, errno.EDQUOT: DISK_FULL, errno.EFBIG: DISK_FULL,
                errno.EROFS: READ_ONLY, errno.EIO: IO_ERROR}.get(exc.errno or 0)
    if isinstance(exc, UnicodeDecodeError):
        return INVALID_UTF8
    if isinstance(exc, UnicodeEncodeError):
        return SURROGATE if "surrogate" in str(exc) else INVALID_UTF8
    if isinstance(exc, RecursionError):
        return TOO_DEEP
    return None


def _read_only(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY) or not os.access(folder, os.W_OK)
    except OSError:
        return False


def _low_space(folder: Path) -> bool:
    try:
        return shutil.disk_usage(folder).free < LOW_SPACE_BYTES
    except OSError:
        return False


def _by_text(text: str) -> Failure | None:
    lowered = text.lower()
    for needle, failure in (("disk is full", DISK_FULL), ("readonly", READ_ONLY),
                            ("malformed", CORRUPT), ("not a database", CORRUPT)):
        if needle in lowered:
            return failure
    return None


def find_surrogate(value: object) -> bool:
    """True when a string anywhere inside `value` (dicts, lists) holds a lone surrogate."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return False
