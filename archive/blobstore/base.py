"""What every job of the blob store shares: the constants, an attachment's digest and
parts, and the store's state (catalog, keys, tier, settings, per-thread zstd contexts).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import zstandard

from archive.catalog import BlobRecord, Catalog
from archive.perthread import PerThread
from archive.settings import StorageSettings
from archive.split import NATIVE_CHUNK
from security.api import BlobNamer, KeyRing
from tiering.api import FileStore, Journal

__all__ = [
    "CONTENT_DICOM",
    "CONTENT_DICOM_UNTIL_PIXEL_DATA",
    "FLAG_ZSTD",
    "INLINE",
    "AttachmentPart",
    "StoreBase",
    "attachment_digest",
]

logger = logging.getLogger(__name__)


INLINE = "inline"
CONTENT_DICOM = 1
CONTENT_DICOM_UNTIL_PIXEL_DATA = 3
FLAG_ZSTD = 0x01


def attachment_digest(namer: BlobNamer, parts: list[tuple[bytes, int]]) -> bytes:
    """Keyed digest of an attachment: its part names and lengths, in order.

    Each part name is already a keyed hash of the part's bytes, so this binds the whole
    content without hashing it a second time.
    """
    if len(parts) == 1:
        return parts[0][0]
    return namer(b"".join(blob_id + length.to_bytes(8, "big") for blob_id, length in parts))


@dataclass(frozen=True, slots=True)
class AttachmentPart:
    """One stored part of an attachment: bytes ``[start, end)`` of the file.

    ``kind`` is header, pixels, trailer or other (see ``archive.split``). Read it with
    :meth:`BlobStore.read_part`; the blob record (or, for an attachment still in the
    write-behind journal, the bytes themselves) travels along opaquely.
    """

    start: int
    end: int
    kind: str
    blob: BlobRecord | None = field(default=None, repr=False, compare=False)
    data: bytes | None = field(default=None, repr=False, compare=False)


class StoreBase:
    """The state the store's jobs share; :class:`archive.blobstore.BlobStore` has them all."""

    def __init__(
        self,
        catalog: Catalog,
        keys: KeyRing,
        hot: FileStore,
        settings: StorageSettings,
        journal: Journal | None = None,
        *,
        native_chunk: int = NATIVE_CHUNK,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.catalog = catalog
        self.keys = keys
        self.hot = hot
        self.settings = settings
        self.journal = journal
        # the largest part of native pixel data (archive.split); tests make frames straddle parts
        self.native_chunk = native_chunk
        # the time the grace period of gc counts from; tests move it instead of sleeping
        self.clock = clock
        # the content checksum (XXH64, ~0.05 ms per 512 KiB) lets a client that receives a
        # stored frame as is (Content-Encoding: zstd) check what it decompressed
        self._compressors: PerThread[zstandard.ZstdCompressor] = PerThread(
            lambda: zstandard.ZstdCompressor(level=settings.zstd_level, write_checksum=True)
        )
        self._decompressors: PerThread[zstandard.ZstdDecompressor] = PerThread(
            zstandard.ZstdDecompressor
        )
        self._digest_queue: queue.Queue[str | None] | None = None
        self._digester: threading.Thread | None = None
        # a lone store's pixel data use a second core (_name_parts)
        self._overlap = settings.overlap_hash_and_compress and (os.cpu_count() or 1) > 1
        self._hasher: ThreadPoolExecutor | None = None
        self._hasher_lock = threading.Lock()
        self._in_flight = 0  # attachments being stored right now, by any thread
        self._last_pixels_new = True  # did the last large part need storing (_name_parts)

    # zstd contexts are not thread-safe; one per thread is cheap
    def _compressor(self) -> zstandard.ZstdCompressor:
        return self._compressors.get()

    def _decompressor(self) -> zstandard.ZstdDecompressor:
        return self._decompressors.get()
