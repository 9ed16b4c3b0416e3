"""Reading stored instances for WADO-RS: verified plaintexts, a small cache, a thread pool.

Every blob read from a tier is decrypted (AES-GCM), decompressed and checked against its
name (the keyed hash of its plaintext) by ``BlobStore.read_part``; this module never
skips that. What it adds:

* ``ContentCache``: an LRU of plaintexts that passed that check, keyed by blob id
  (``dicomweb.wado.metacache`` uses the same class for DICOM JSON per header blob).
  A blob id is a MAC of the plaintext, so an entry can never go stale: the bytes that
  verified against an id once are the bytes of that id forever. Access control is
  unaffected: a request reaches the cache only after the catalog said the instance is
  reachable and still references the blob. What a hit gives up is the re-check of the
  stored payload: damage at rest is then found by the next read from the tier or by
  ``vna fsck``, not by this request. So it is off by default (``gateway.blob_cache_mb``),
  as Orthanc's own storage cache is in the archive; the metadata cache, which holds
  derived JSON, is on.
* ``InstanceReader``: reads instances part by part on its own small pool, so the
  decompression and hashing of the next instances (C code that releases the GIL) run on
  the second core while the event loop writes the current one to the socket.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import zstandard

from archive.api import AttachmentPart, BlobStore
from security.api import IntegrityError

__all__ = ["InstanceReader", "PlannedInstance", "ContentCache"]


class ContentCache:
    """Bytes keyed by a content address (a blob id), least recently used evicted first,
    bounded in bytes. Only for values that are a function of the key: nothing expires.

    Thread-safe. ``max_bytes`` 0 keeps nothing. A blob larger than an eighth of the bound
    is not kept, so one huge instance cannot flush everything else.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[bytes, bytes] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @property
    def size(self) -> int:
        return self._size

    def get(self, blob_id: bytes) -> bytes | None:
        with self._lock:
            data = self._entries.get(blob_id)
            if data is None:
                self.misses += 1
                return None
            self._entries.move_to_end(blob_id)
            self.hits += 1
            return data

    def put(self, blob_id: bytes, data: bytes) -> None:
        """Keep ``data``, which the caller derived from the verified content of ``blob_id``."""
        if len(data) > self.max_bytes // 8:
            return
        with self._lock:
            old = self._entries.pop(blob_id, None)
            if old is not None:
                self._size -= len(old)
            self._entries[blob_id] = data
            self._size += len(data)
            while self._size > self.max_bytes:
                _id, evicted = self._entries.popitem(last=False)
                self._size -= len(evicted)


@dataclass(frozen=True, slots=True)
class PlannedInstance:
    """An attachment to send: its parts when the catalog listed them (``None`` for one
    still in the write-behind journal, looked up when read) and its size if known."""

    uuid: str
    parts: tuple[AttachmentPart, ...] | None

    @property
    def size(self) -> int | None:
        return None if self.parts is None else sum(p.end - p.start for p in self.parts)


class InstanceReader:
    """Verified reads of whole instances on a dedicated pool of ``threads`` workers,
    at most ``read_ahead`` bytes ahead of each retrieval's socket.

    A dedicated pool keeps long retrievals from queueing ahead of the short catalog
    queries other requests send to the event loop's default executor.
    """

    def __init__(
        self, blobs: BlobStore, cache: ContentCache, threads: int, read_ahead: int = 4 << 20
    ) -> None:
        self.blobs = blobs
        self.cache = cache
        self.read_ahead = read_ahead  # bytes a retrieval may read ahead of its socket
        self.executor = ThreadPoolExecutor(threads, thread_name_prefix="vna-read")
        self._local = threading.local()  # a zstd context per pool thread (read_zstd)

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)

    def plan(self, uuids: Sequence[str]) -> list[PlannedInstance]:
        """Look up the parts of every attachment (catalog only, no blob read)."""
        stored = self.blobs.stored_parts(list(uuids))
        return [
            PlannedInstance(uuid, None if uuid not in stored else tuple(stored[uuid]))
            for uuid in uuids
        ]

    def read_part(self, part: AttachmentPart) -> bytes:
        """One part's verified bytes, from the cache or from its tier."""
        if part.data is not None or part.blob is None:
            return self.blobs.read_part(part)
        blob_id = part.blob.id
        data = self.cache.get(blob_id)
        if data is None:
            data = self.blobs.read_part(part)  # decrypts, decompresses, verifies the MAC
            self.cache.put(blob_id, data)
        return data

    def _parts(self, planned: PlannedInstance) -> tuple[AttachmentPart, ...]:
        return planned.parts if planned.parts is not None else tuple(self.blobs.parts(planned.uuid))

    def _read_sized(self, planned: PlannedInstance, part: AttachmentPart) -> bytes:
        data = self.read_part(part)
        if len(data) != part.end - part.start:  # the answer's Content-Length relies on it
            raise IntegrityError(f"a part of attachment {planned.uuid} has the wrong size")
        return data

    def read(self, planned: PlannedInstance) -> list[bytes]:
        """The instance as its parts' bytes in file order (joined by writing them out)."""
        return [self._read_sized(planned, part) for part in self._parts(planned)]

    def read_batch(self, batch: Sequence[PlannedInstance]) -> list[list[bytes]]:
        return [self.read(planned) for planned in batch]

    def read_zstd(self, planned: PlannedInstance) -> list[bytes]:
        """The instance as zstd frames, one per part, whose decompression is the file.

        A part stored compressed is sent as stored (AES-GCM checked, not decompressed:
        ``BlobStore.read_zstd``); one stored uncompressed is read and verified as usual,
        then compressed at a fast level.
        """
        out = []
        for part in self._parts(planned):
            frame = None
            if part.data is None and part.blob is not None:
                frame = self.blobs.read_zstd(part.blob)
            if frame is None:
                frame = self._fast_compressor().compress(self._read_sized(planned, part))
            out.append(frame)
        return out

    def _fast_compressor(self) -> zstandard.ZstdCompressor:
        # parts stored uncompressed (zstd could not shrink them: noise, compressed pixel
        # data; or still journaled by write-behind): speed first
        compressor = getattr(self._local, "zstd", None)
        if compressor is None:
            compressor = self._local.zstd = zstandard.ZstdCompressor(level=-5, write_checksum=True)
        return compressor

    def read_zstd_batch(self, batch: Sequence[PlannedInstance]) -> list[list[bytes]]:
        return [self.read_zstd(planned) for planned in batch]
