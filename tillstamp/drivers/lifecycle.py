"""What every opened device shares: its URL, explicit close, and `with` support."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class Device:
    """An opened device: use it in `with`, or call `close()` yourself."""

    url = ""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Release the device (nothing to do by default)."""
