"""Key material on disk: the dedup (MAC) key and the key-encryption keys (KEKs).

Layout under ``<home>/keys`` (directory 0700, files 0600)::

    dedup.key        32 random bytes, keys the hash that names blobs
    mac-algorithm    that hash: "blake3" (written with a new dedup.key); absent in homes
                     made before it existed, which name blobs with BLAKE2b-256
    kek-<id>.key     32 random bytes per key-encryption key
    current          the id of the KEK that wraps new data keys

Rotation adds a KEK and points ``current`` at it; existing data keys are re-wrapped by
the archive (the blobs themselves are never re-encrypted).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import threading
from pathlib import Path

from security.envelope import MAC_ALGORITHMS, BlobNamer
from security.errors import NotFound

__all__ = ["KeyRing", "write_secret_file"]

_KEK_NAME = re.compile(r"^kek-([0-9a-f]{8})\.key$")


def write_secret_file(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600 atomically; never overwrite an existing secret."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # fails if path exists: a concurrent first start keeps one key
    finally:
        tmp.unlink()


def _stamp(path: Path) -> tuple[int, int]:
    """Identity of a version of `current`: rotation replaces it by rename, so a new inode."""
    st = path.stat()
    return st.st_ino, st.st_mtime_ns


class KeyRing:
    """The keys of one archive home; thread-safe, reloads when another process rotates."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        self._keks: dict[str, bytes] = {}
        self._current: str = ""
        self._dedup: bytes = b""
        self._namer = BlobNamer(b"")
        self._current_stamp: tuple[int, int] = (0, 0)
        self.reload()

    @staticmethod
    def present(directory: Path) -> bool:
        """Whether ``directory`` holds a key ring (its dedup key and current KEK)."""
        return (directory / "dedup.key").exists() and (directory / "current").exists()

    @classmethod
    def open_or_create(cls, directory: Path, mac_algorithm: str = "blake3") -> KeyRing:
        """Open the key ring, generating the keys on first start.

        ``mac_algorithm`` only matters then: a home keeps the hash it started with.
        """
        if mac_algorithm not in MAC_ALGORITHMS:
            raise ValueError(f"unknown blob MAC algorithm {mac_algorithm!r}")
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(directory, 0o700)
        dedup = directory / "dedup.key"
        if not dedup.exists():
            # the algorithm first: a dedup.key without it would mean BLAKE2b for good
            with contextlib.suppress(FileExistsError):
                write_secret_file(directory / "mac-algorithm", mac_algorithm.encode() + b"\n")
            with contextlib.suppress(FileExistsError):
                write_secret_file(dedup, secrets.token_bytes(32))
        if not (directory / "current").exists():
            cls._add_kek(directory)
        return cls(directory)

    @staticmethod
    def _add_kek(directory: Path) -> str:
        key_id = secrets.token_hex(4)
        write_secret_file(directory / f"kek-{key_id}.key", secrets.token_bytes(32))
        tmp = directory / f".current.{key_id}.tmp"
        tmp.write_text(key_id + "\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, directory / "current")
        return key_id

    def reload(self) -> None:
        """Read every key file again (after a rotation by another process)."""
        if not (self.directory / "dedup.key").exists():
            raise NotFound(
                f"no keys in {self.directory}: start the archive once (`vna up`) to create them"
            )
        current_file = self.directory / "current"
        # read `current` before listing keys: a rotation in between then adds a key we see
        for _attempt in range(3):
            stamp = _stamp(current_file)
            current = current_file.read_text().strip()
            keks = self._read_keks()
            if current in keks:
                break
        else:
            raise NotFound(f"current key {current!r} missing from {self.directory}")
        with self._lock:
            self._keks = keks
            self._current = current
            self._current_stamp = stamp
            self._dedup = (self.directory / "dedup.key").read_bytes()
            self._namer = BlobNamer(self._dedup, self._read_mac_algorithm())

    def _read_mac_algorithm(self) -> str:
        path = self.directory / "mac-algorithm"
        if not path.exists():
            return "blake2b"
        name = path.read_text().strip()
        if name not in MAC_ALGORITHMS:
            raise NotFound(f"{path} names {name!r}, not one of {', '.join(MAC_ALGORITHMS)}")
        return name

    def _read_keks(self) -> dict[str, bytes]:
        keks: dict[str, bytes] = {}
        for entry in self.directory.iterdir():
            match = _KEK_NAME.match(entry.name)
            if match:
                keks[match.group(1)] = entry.read_bytes()
        return keks

    @property
    def dedup_key(self) -> bytes:
        return self._dedup

    @property
    def namer(self) -> BlobNamer:
        """Names and checks blobs: the dedup key with this home's MAC algorithm."""
        return self._namer

    @property
    def current_id(self) -> str:
        return self._current

    def current(self) -> tuple[str, bytes]:
        """The KEK for new data keys; notices a rotation done by another process."""
        if _stamp(self.directory / "current") != self._current_stamp:
            self.reload()
        with self._lock:
            return self._current, self._keks[self._current]

    def kek(self, key_id: str) -> bytes:
        """The KEK ``key_id``; reloads once from disk if it was added by another process."""
        key = self._keks.get(key_id)
        if key is None:
            self.reload()
            key = self._keks.get(key_id)
        if key is None:
            raise NotFound(f"key-encryption key {key_id} is not in {self.directory}")
        return key

    def key_ids(self) -> list[str]:
        return sorted(self._keks)

    def rotate(self) -> str:
        """Create a new KEK, make it current, and return its id."""
        key_id = self._add_kek(self.directory)
        self.reload()
        return key_id
