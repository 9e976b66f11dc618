"""One agent per data folder: an exclusive `flock` on `DATA/agent.lock`, held while it runs.

SQLite would let a second agent open the same `till.db`, and both would then drive the same
printer spool, receipts due and sync cursor (rule 4: one writer). The kernel drops the lock
with the process, so a crashed agent never leaves a stale lock behind; the file only keeps
the pid of the holder for the message.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Self

from .config import ConfigError

LOCK_NAME = "agent.lock"


class AlreadyRunning(ConfigError):
    """Another agent holds the data folder."""


class AgentLock:
    """The data folder's agent lock; `acquire()` raises AlreadyRunning when it is taken."""

    def __init__(self, data: Path) -> None:
        self.path = Path(data) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> Self:
        """Take the lock, or raise AlreadyRunning naming the holder's pid."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            raise AlreadyRunning(f"{self.path.parent}: another agent is already running on this data "
                                 f"folder (pid {holder}); stop it first") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        """Let the lock go (closing the file releases the flock)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
