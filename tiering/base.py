"""Tier backends: what every backend is (the payload store protocol, a staged write).

A backend stores opaque payloads under a key (the blob id in hex). Writes are staged and
then published so a crash never leaves a partial payload under its final name.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

__all__ = ["ObjectStore", "Staged"]


@dataclass(frozen=True, slots=True)
class Staged:
    """A payload written durably under a temporary name, not yet visible.

    The temporary name starts with the payload's key, so recovery can finish a publish
    that a crash interrupted.
    """

    token: str
    key: str
    size: int


class ObjectStore(Protocol):
    name: str

    def stage(self, data: bytes, key: str) -> Staged: ...

    def publish(self, staged: Staged) -> None: ...

    def discard(self, staged: Staged) -> None: ...

    def get(self, key: str) -> bytes: ...

    def delete(self, key: str) -> None: ...

    def exists(self, key: str) -> bool: ...

    def iter_keys(self) -> Iterator[str]: ...

    def sweep_staged(self, older_than_seconds: float) -> int: ...

    def staged_payloads(self) -> Iterator[Staged]: ...

    def read_staged(self, staged: Staged) -> bytes: ...
