"""Local-directory tier: ``<root>/<k[0:2]>/<k[2:4]>/<k>``, written with fsync and rename."""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

from security.api import IntegrityError, NotFound, StorageFull
from tiering.base import Staged

__all__ = ["FileStore", "Journal"]


def write_new_file(path: Path, data: bytes, *, sync: bool, what: str) -> None:
    """Create ``path`` (0600, must not exist) holding ``data``, fdatasynced when ``sync``.

    On failure nothing is left behind; a full disk is a StorageFull naming ``what``.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # exists: FileExistsError
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if sync:
                os.fdatasync(fd)  # data and size; mtime need not wait
        finally:
            os.close(fd)
    except OSError as exc:
        path.unlink(missing_ok=True)
        if exc.errno == 28:  # ENOSPC
            raise StorageFull(f"{what} is full: free space") from exc
        raise


class FileStore:
    """An :class:`~tiering.api.ObjectStore` on a local file system."""

    def __init__(self, root: Path, *, fsync: bool = True, name: str = "hot") -> None:
        self.root = root
        self.name = name
        self.fsync = fsync
        self._staging = root / "staging"
        self._staging.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._known_dirs: set[Path] = set()

    def path(self, key: str) -> Path:
        return self.root / key[0:2] / key[2:4] / key

    def _ensure_dir(self, directory: Path) -> None:
        if directory not in self._known_dirs:
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._known_dirs.add(directory)

    def stage(self, data: bytes, key: str) -> Staged:
        # the payload's directory is made now, not in publish: the archive publishes while
        # it holds the catalog's write lock, and a new inode costs 0.1-1 ms on a busy ext4
        self._ensure_dir(self.path(key).parent)
        token = f"{key}.{secrets.token_hex(8)}"
        write_new_file(
            self._staging / token, data, sync=self.fsync, what=f"tier {self.name} at {self.root}"
        )
        return Staged(token, key, len(data))

    def publish(self, staged: Staged) -> None:
        """Move a staged payload under its key.

        The payload was fsynced when staged (which also makes its staging name durable on
        Linux file systems); the rename is not synced here: if a crash loses it, the payload
        is still in staging under a name that starts with its key, and recovery moves it.
        """
        target = self.path(staged.key)
        self._ensure_dir(target.parent)  # made when staged, unless by another process
        os.replace(self._staging / staged.token, target)

    def discard(self, staged: Staged) -> None:
        (self._staging / staged.token).unlink(missing_ok=True)

    def get(self, key: str) -> bytes:
        try:
            with open(self.path(key), "rb") as handle:
                return handle.read()
        except FileNotFoundError as exc:
            raise IntegrityError(f"blob {key} is missing from tier {self.name}") from exc

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def exists(self, key: str) -> bool:
        return self.path(key).exists()

    def iter_keys(self) -> Iterator[str]:
        for first in sorted(self.root.iterdir()):
            if first.name == "staging" or not first.is_dir():
                continue
            for second in sorted(first.iterdir()):
                if not second.is_dir():
                    continue
                for entry in sorted(second.iterdir()):
                    yield entry.name

    def sweep_staged(self, older_than_seconds: float) -> int:
        """Remove staged payloads left by a crash; returns how many were removed."""
        cutoff = time.time() - older_than_seconds
        removed = 0
        for entry in self._staging.iterdir():
            try:
                if entry.stat().st_mtime < cutoff:
                    entry.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
        return removed

    def staged_payloads(self) -> Iterator[Staged]:
        for entry in self._staging.iterdir():
            key, _, _ = entry.name.partition(".")
            try:
                yield Staged(entry.name, key, entry.stat().st_size)
            except FileNotFoundError:
                continue

    def read_staged(self, staged: Staged) -> bytes:
        return (self._staging / staged.token).read_bytes()

    def size_of(self, key: str) -> int:
        try:
            return self.path(key).stat().st_size
        except FileNotFoundError as exc:
            raise NotFound(key) from exc


class Journal:
    """Durable named files for write-behind: each written once, fdatasynced, then deleted.

    A name is an attachment uuid; the catalog row that makes a journal entry visible is
    committed only after the file is on disk, so a file without a row is crash residue.
    """

    def __init__(self, root: Path, *, fsync: bool = True) -> None:
        self.root = root
        self.fsync = fsync
        root.mkdir(parents=True, exist_ok=True, mode=0o700)

    def _path(self, name: str) -> Path:
        if "/" in name or name.startswith("."):
            raise IntegrityError(f"invalid journal entry name {name!r}")
        return self.root / name

    def write(self, name: str, data: bytes) -> None:
        write_new_file(self._path(name), data, sync=self.fsync, what=f"journal at {self.root}")

    def read(self, name: str) -> bytes:
        try:
            return self._path(name).read_bytes()
        except FileNotFoundError as exc:
            raise IntegrityError(f"journal entry {name} is missing") from exc

    def delete(self, name: str) -> None:
        self._path(name).unlink(missing_ok=True)

    def names(self) -> Iterator[str]:
        for entry in self.root.iterdir():
            yield entry.name
