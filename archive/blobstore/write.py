"""The write path: attachments in as ordered parts, parts as deduplicated blobs.

Write path per attachment: split, name every part by a keyed hash (BLAKE3), look the names up,
and only for unseen parts compress (zstd), encrypt (AES-256-GCM) and stage a payload; one
catalog transaction then takes the references and publishes the new payloads. A re-sent
instance costs hashing plus one small transaction. The heavy steps (BLAKE3, zstd, AES)
run in C and release the GIL, so Orthanc's storage threads overlap.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor

from archive.blobstore.base import (
    CONTENT_DICOM,
    CONTENT_DICOM_UNTIL_PIXEL_DATA,
    FLAG_ZSTD,
    INLINE,
    attachment_digest,
)
from archive.blobstore.journal import Journaling
from archive.catalog import BlobRecord, Sender
from archive.split import Span, split_dicom
from security.api import IntegrityError, seal
from tiering.api import Staged

__all__ = [
    "Writer",
]

logger = logging.getLogger(__name__)

_MAX_ATTEMPTS = 5
# a part this large is hashed on the helper thread while it is compressed (see _name_parts)
_OVERLAP_MIN_BYTES = 128 * 1024


class Writer(Journaling):
    """Attachments in: split, named, deduplicated, compressed, sealed, published."""

    def _spans(self, content_type: int, data: memoryview) -> list[Span]:
        if content_type == CONTENT_DICOM:
            return split_dicom(data, native_chunk=self.native_chunk)
        kind = "header" if content_type == CONTENT_DICOM_UNTIL_PIXEL_DATA else "other"
        return [Span(0, len(data), kind)]

    def _make_payload(
        self, blob_id: bytes, chunk: memoryview, kind: str, packed: bytes | None = None
    ) -> tuple[Staged | None, BlobRecord]:
        """Compress (unless ``packed`` is its compressed form already) and seal one part;
        stage it as a file unless it is small enough to live in its catalog row."""
        body: bytes | memoryview = chunk
        flags = 0
        if len(chunk) >= 64:
            if packed is None:
                packed = self._compressor().compress(chunk)
            if len(packed) <= len(chunk) * (1.0 - self.settings.min_compression_gain):
                body, flags = packed, FLAG_ZSTD
        kek_id, kek = self.keys.current()
        sealed = seal(bytes(body), flags, blob_id, kek_id, kek)
        inline = len(sealed.payload) <= self.settings.inline_max_bytes
        staged = None if inline else self.hot.stage(sealed.payload, blob_id.hex())
        record = BlobRecord(
            id=blob_id,
            size=len(chunk),
            stored_size=len(sealed.payload),
            flags=flags,
            kek_id=kek_id,
            wrapped_key=sealed.wrapped_key,
            kind=kind,
            tier=INLINE if inline else self.hot.name,
            payload=sealed.payload if inline else None,
        )
        return staged, record

    def _helper(self) -> ThreadPoolExecutor:
        with self._hasher_lock:
            if self._hasher is None:
                self._hasher = ThreadPoolExecutor(1, thread_name_prefix="vna-hash")
            return self._hasher

    def _name_parts(
        self, view: memoryview, spans: list[Span], alone: bool
    ) -> tuple[list[bytes], dict[bytes, bytes], int | None]:
        """Name every part (the home's keyed hash).

        Returns the names, any part compressed already, and the index of the large part
        when the overlap below applied to this attachment.

        A lone store (one C-STORE association) leaves a core idle while it hashes, then
        compresses, its pixel data. So that core takes part of the work, in C without the
        GIL, when the previous such attachment brought new pixel data: ingest of new
        instances, where a re-send (which needs no compression) follows re-sends. With
        keyed BLAKE3 (a tenth of zstd's time) the helper compresses the first half of the
        large part while this thread compresses the second: two zstd frames, which read
        back as one (``_decompress``). With BLAKE2b (older homes) the helper hashes the
        part while this thread compresses it whole. A wrong guess costs one compression
        or one missed overlap, never a lookup. With several stores in flight the cores
        are busy already and everything runs here, one part after the other.
        """
        namer = self.keys.namer
        sizes = [s.end - s.start for s in spans]
        big = max(range(len(spans)), key=sizes.__getitem__)
        if not (self._overlap and len(spans) > 1 and sizes[big] >= _OVERLAP_MIN_BYTES):
            return [namer(view[s.start : s.end]) for s in spans], {}, None
        chunk = view[spans[big].start : spans[big].end]
        overlap = alone and self._last_pixels_new
        if not overlap or namer.algorithm != "blake2b":
            names = [namer(view[s.start : s.end]) for s in spans]
            early = {names[big]: self._compress_on_two_cores(chunk)} if overlap else {}
            return names, early, big
        future: Future[bytes] = self._helper().submit(namer, chunk)
        try:
            packed = self._compressor().compress(chunk)
            names = [b"" if i == big else namer(view[s.start : s.end]) for i, s in enumerate(spans)]
        except BaseException:
            future.exception()  # let the helper finish with ``chunk`` before unwinding
            raise
        names[big] = future.result()
        return names, {names[big]: packed}, big

    def _compress_on_two_cores(self, chunk: memoryview) -> bytes:
        """Two zstd frames, the first half compressed on the helper thread."""
        half = len(chunk) // 2
        future: Future[bytes] = self._helper().submit(self._compress, chunk[:half])
        try:
            second = self._compress(chunk[half:])
        except BaseException:
            future.exception()  # let the helper finish with ``chunk`` before unwinding
            raise
        return future.result() + second

    def _compress(self, data: memoryview) -> bytes:
        return self._compressor().compress(data)

    def put(self, uuid: str, content_type: int, data: bytes, sender: Sender | None = None) -> None:
        """Store one attachment handed over by Orthanc.

        With write-behind running, a large DICOM file is journaled (sealed whole, fsynced)
        and digested in the background; otherwise it is split and stored at once. A DICOM
        file's header and ``sender`` are queued for the indexer in the same transaction.
        """
        if (
            self._digest_queue is not None
            and self.journal is not None
            and content_type == CONTENT_DICOM
            and len(data) >= self.settings.write_behind_min_bytes
        ):
            self._journal_put(uuid, content_type, data, sender)
            return
        self._put_parts(uuid, content_type, data, from_pending=False, sender=sender)

    def _put_parts(
        self,
        uuid: str,
        content_type: int,
        data: bytes,
        *,
        from_pending: bool,
        sender: Sender | None = None,
    ) -> None:
        view = memoryview(data)
        spans = self._spans(content_type, view)
        with self._hasher_lock:
            alone = self._in_flight == 0
            self._in_flight += 1
        try:
            self._put_named(uuid, content_type, data, view, spans, alone, from_pending, sender)
        finally:
            with self._hasher_lock:
                self._in_flight -= 1

    def _put_named(
        self,
        uuid: str,
        content_type: int,
        data: bytes,
        view: memoryview,
        spans: list[Span],
        alone: bool,
        from_pending: bool,
        sender: Sender | None,
    ) -> None:
        names, packed, big = self._name_parts(view, spans, alone)
        parts = [(blob_id, s.end - s.start) for blob_id, s in zip(names, spans, strict=True)]
        digest = attachment_digest(self.keys.namer, parts)
        kinds = {blob_id: span.kind for (blob_id, _), span in zip(parts, spans, strict=True)}
        chunks = {
            blob_id: view[s.start : s.end] for (blob_id, _), s in zip(parts, spans, strict=True)
        }
        staged: dict[bytes, Staged] = {}
        records: dict[bytes, BlobRecord] = {}

        def on_inserted(blob_id: bytes) -> None:
            if blob_id in staged:
                self.hot.publish(staged.pop(blob_id))

        def on_lost_race(blob_id: bytes) -> None:
            if blob_id in staged:
                self.hot.discard(staged.pop(blob_id))

        if (
            content_type == CONTENT_DICOM_UNTIL_PIXEL_DATA
            and not from_pending
            and self.catalog.add_attachment(
                uuid, content_type, len(data), digest, parts, {}, on_inserted, on_lost_race
            )
        ):
            # Orthanc's copy of the header it stored a moment ago as part of the DICOM file:
            # its blob exists, so the references are taken without looking it up first (if
            # it does not exist, nothing changed and the general path below stores it)
            return
        try:
            for _attempt in range(_MAX_ATTEMPTS):
                present = self.catalog.existing_blobs(kinds)
                if big is not None and _attempt == 0:
                    self._last_pixels_new = names[big] not in present
                for blob_id in kinds:
                    if blob_id not in present and blob_id not in records:
                        payload, records[blob_id] = self._make_payload(
                            blob_id, chunks[blob_id], kinds[blob_id], packed.pop(blob_id, None)
                        )
                        if payload is not None:
                            staged[blob_id] = payload
                wanted = {b: records[b] for b in kinds if b not in present}
                if self.catalog.add_attachment(
                    uuid,
                    content_type,
                    len(data),
                    digest,
                    parts,
                    wanted,
                    on_inserted,
                    on_lost_race,
                    from_pending=from_pending,
                    index_header=(
                        bytes(view[: spans[0].end]) if content_type == CONTENT_DICOM else None
                    ),
                    sender=sender,
                ):
                    return
                logger.info("a blob of attachment %s was collected meanwhile; retrying", uuid)
            raise IntegrityError(f"could not store attachment {uuid}: blobs kept vanishing")
        finally:
            for leftover in staged.values():
                self.hot.discard(leftover)

    def remove(self, uuid: str) -> None:
        for _attempt in range(3):
            if self.catalog.remove_attachment(uuid):
                return
            if self.catalog.remove_pending(uuid):
                if self.journal is not None:
                    self.journal.delete(uuid)
                return
        logger.warning("asked to remove unknown attachment %s; nothing to do", uuid)
