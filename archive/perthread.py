"""Per-thread resources that survive Orthanc's way of calling into Python.

Orthanc's Python plugin enters Python from its own C++ threads with a fresh thread state for
every callback, so ``threading.local`` is empty each time: a cached SQLite connection or
zstd context would be rebuilt on every call. Keying by the OS thread id keeps one per
Orthanc thread for the life of the process.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["PerThread"]

T = TypeVar("T")


class PerThread(Generic[T]):
    """One lazily built ``T`` per OS thread."""

    def __init__(self, factory: Callable[[], T]) -> None:
        self._factory = factory
        self._items: dict[int, T] = {}
        self._lock = threading.Lock()

    def get(self) -> T:
        key = threading.get_ident()
        item = self._items.get(key)
        if item is None:
            item = self._factory()
            with self._lock:
                self._items[key] = item
        return item

    def values(self) -> list[T]:
        with self._lock:
            return list(self._items.values())
