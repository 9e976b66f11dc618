"""Exponential backoff with full jitter for the reader threads' reopen loops."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Delays 0.1 s, 0.2 s, 0.4 s ... capped at `maximum`, each jittered by up to `jitter`."""

    initial: float = 0.1
    maximum: float = 5.0
    factor: float = 2.0
    jitter: float = 0.1
    rand: Callable[[], float] = field(default=random.random)
    attempt: int = 0

    def next_delay(self) -> float:
        """Return the delay before the next attempt and count the attempt."""
        base = min(self.maximum, self.initial * self.factor**self.attempt)
        self.attempt += 1
        return base + self.jitter * base * self.rand()

    def reset(self) -> None:
        """Start again from the initial delay after a success."""
        self.attempt = 0
