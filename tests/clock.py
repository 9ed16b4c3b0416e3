"""A clock tests move forward instead of sleeping."""

from __future__ import annotations

import time

__all__ = ["Clock"]


class Clock:
    """Wall time plus an offset a test moves forward instead of sleeping: pass it where the
    code takes a ``clock`` (a callable returning seconds since the epoch)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds
