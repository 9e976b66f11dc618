"""What the tap says about each print job, and the bounded folder of jobs kept for fixing.

A job that was not read as a receipt (no template matched, a template is broken, recording
failed, the agent itself failed) is kept byte for byte as the POS sent it, beside a JSON
note of what went wrong, so a person can write or fix the template with
`tillstamp tap parse JOB.bin --template FILE`. The folder is bounded (50 jobs, 20 MB by
default): the oldest go first.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("tillstamp.tap")


@dataclass
class JobReport:
    """One print job through the tap: what was read, recorded, inserted and printed."""

    job: str
    bytes_in: int = 0
    bytes_out: int = 0
    parsed: bool = False
    receipt: str | None = None
    total: int | None = None
    template: str | None = None
    member: str | None = None
    stamps: int = 0
    duplicate: bool = False
    inserted: bool = False
    claim: str | None = None
    printed: bool = True  # False when the printer did not take the whole job
    spooled: bool = False  # kept in the print spool, to print when the printer is back
    kept: str | None = None  # where the raw job was kept for a person to look at
    error: str | None = None
    receipts: list[dict[str, Any]] = field(default_factory=list)  # every receipt in the job

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: one line of `tillstamp tap run`."""
        d = asdict(self)
        if len(self.receipts) <= 1:
            d.pop("receipts")
        return d


class JobKeeper:
    """A folder of raw jobs with a JSON note each, pruned to `max_jobs` and `max_bytes`."""

    def __init__(self, folder: str | Path, max_jobs: int = 50, max_bytes: int = 20_000_000) -> None:
        self.folder = Path(folder)
        self.max_jobs = max_jobs
        self.max_bytes = max_bytes
        self._lock = threading.Lock()

    def keep(self, job: str, data: bytes, note: dict[str, Any]) -> Path | None:
        """Write the job and its note, then prune; None (logged) when the disk refuses."""
        with self._lock:
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
                path = self.folder / f"{job}.bin"
                tmp = path.with_suffix(".tmp")
                tmp.write_bytes(data[: self.max_bytes])
                os.replace(tmp, path)
                path.with_suffix(".json").write_text(
                    json.dumps(note, ensure_ascii=False, default=str, indent=1), encoding="utf-8")
                self._prune()
            except OSError as e:
                # Keeping is a convenience for whoever fixes templates; printing must go on.
                log.error("could not keep job %s in %s: %s", job, self.folder, e)
                return None
        return path

    def jobs(self) -> list[Path]:
        """Kept jobs, oldest first."""
        return sorted(self.folder.glob("*.bin"))

    def _prune(self) -> None:
        jobs = self.jobs()
        sizes = [p.stat().st_size for p in jobs]
        total = sum(sizes)
        while jobs and (len(jobs) > self.max_jobs or total > self.max_bytes):
            oldest = jobs.pop(0)
            total -= sizes.pop(0)
            oldest.unlink(missing_ok=True)
            oldest.with_suffix(".json").unlink(missing_ok=True)
