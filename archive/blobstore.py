"""The single-copy store: attachments as ordered parts, parts as deduplicated blobs.

Write path per attachment: split, name every part by a keyed hash (BLAKE3), look the names up,
and only for unseen parts compress (zstd), encrypt (AES-256-GCM) and stage a payload; one
catalog transaction then takes the references and publishes the new payloads. A re-sent
instance costs hashing plus one small transaction. The heavy steps (BLAKE3, zstd, AES)
run in C and release the GIL, so Orthanc's storage threads overlap.
"""

from __future__ import annotations

import functools
import hmac
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import zstandard

from archive.catalog import BlobRecord, Catalog, PendingAttachment, Sender
from archive.perthread import PerThread
from archive.settings import StorageSettings
from archive.split import Span, pixel_data_offset, split_dicom
from security.envelope import BlobNamer, open_sealed, rewrap, seal
from security.errors import Conflict, IntegrityError, NotFound
from security.keys import KeyRing
from tiering.api import Staged
from tiering.fs import FileStore, Journal

__all__ = [
    "AttachmentPart",
    "BlobStore",
    "FsckReport",
    "CONTENT_DICOM",
    "CONTENT_DICOM_UNTIL_PIXEL_DATA",
]

logger = logging.getLogger(__name__)

INLINE = "inline"
CONTENT_DICOM = 1
CONTENT_DICOM_UNTIL_PIXEL_DATA = 3
FLAG_ZSTD = 0x01
_MAX_ATTEMPTS = 5
# a part this large is hashed on the helper thread while it is compressed (see _name_parts)
_OVERLAP_MIN_BYTES = 128 * 1024


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


@dataclass(slots=True)
class FsckReport:
    """What ``vna fsck`` found; ``ok`` is False on any damage."""

    blobs_checked: int = 0
    bytes_checked: int = 0
    damaged_blobs: list[tuple[str, str]] = field(default_factory=list)
    refcount_errors: list[tuple[str, int, int]] = field(default_factory=list)
    dangling_parts: list[tuple[str, str]] = field(default_factory=list)
    orphan_payloads: list[str] = field(default_factory=list)
    missing_attachments: list[str] = field(default_factory=list)
    orphan_attachments: list[str] = field(default_factory=list)
    damaged_attachments: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (
            self.damaged_blobs
            or self.refcount_errors
            or self.dangling_parts
            or self.orphan_payloads
            or self.missing_attachments
            or self.orphan_attachments
            or self.damaged_attachments
        )


class BlobStore:
    """Attachments in, attachments out, exactly the same bytes, stored once."""

    def __init__(
        self,
        catalog: Catalog,
        keys: KeyRing,
        hot: FileStore,
        settings: StorageSettings,
        journal: Journal | None = None,
    ) -> None:
        self.catalog = catalog
        self.keys = keys
        self.hot = hot
        self.settings = settings
        self.journal = journal
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

    # -- write -------------------------------------------------------------------------

    def _spans(self, content_type: int, data: memoryview) -> list[Span]:
        if content_type == CONTENT_DICOM:
            return split_dicom(data)
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

    # -- read --------------------------------------------------------------------------

    def _decompress(self, body: bytes, size: int) -> bytes:
        """One zstd frame, or several in a row (a part compressed on two cores)."""
        decompressor = self._decompressor()
        if zstandard.frame_content_size(body) == size:
            return decompressor.decompress(body, max_output_size=size)
        return decompressor.decompressobj(read_across_frames=True).decompress(body)

    def _open(self, record: BlobRecord) -> tuple[int, bytes]:
        """Fetch a blob's payload from its tier (or row) and decrypt it: ``(flags, body)``."""
        if record.tier == INLINE:
            if record.payload is None:
                raise IntegrityError(f"inline blob {record.id.hex()} has no payload")
            payload = record.payload
        else:
            payload = self.hot.get(record.id.hex())
        return open_sealed(payload, record.id, record.wrapped_key, self.keys.kek(record.kek_id))

    def read_blob(self, record: BlobRecord) -> bytes:
        """Decrypt, decompress and verify one blob; IntegrityError on any mismatch.

        Two checks, and neither is redundant with the other:

        * the AES-GCM tag (the blob id and flags as associated data, under a data key that
          only unwraps with a KEK) proves the payload is what a holder of the KEK sealed
          for this id: a flipped, truncated or swapped payload fails here;
        * the keyed hash of the plaintext (BLAKE3; BLAKE2b in older homes), compared with
          the id, proves that what was sealed is the content the id names. GCM cannot: it
          authenticates whatever bytes the writer encrypted. The MAC catches a write path
          that sealed the wrong bytes (a buffer changed between hashing and compressing,
          a compressor or decompressor fault) and a forger who has a KEK but not the
          dedup key. Every attachment that shares the blob would inherit such a fault,
          so the check that makes dedup safe stays on every read from a tier (with
          BLAKE3 about a fifth of the read's CPU; it was 60 % with BLAKE2b).
        """
        flags, body = self._open(record)
        if flags & FLAG_ZSTD:
            try:
                body = self._decompress(body, record.size)
            except zstandard.ZstdError as exc:
                raise IntegrityError(f"blob {record.id.hex()} does not decompress") from exc
        if len(body) != record.size or not self.keys.namer.verify(body, record.id):
            raise IntegrityError(f"blob {record.id.hex()} does not match its name")
        return body

    def read_zstd(self, record: BlobRecord) -> bytes | None:
        """The stored zstd frame of a compressed blob, authenticated but not decompressed;
        None when the blob is stored uncompressed.

        For a client that decompresses itself (HTTP ``Content-Encoding: zstd``). The GCM
        tag is checked as on every read, so a flipped, truncated or swapped payload is
        still an IntegrityError; the keyed-hash check of :meth:`read_blob` needs the
        plaintext and is not made (the frame's own content checksum, when it has one,
        is checked by the client's decoder).
        """
        flags, body = self._open(record)
        return body if flags & FLAG_ZSTD else None

    def get(self, uuid: str) -> bytes:
        """Return exactly the bytes of attachment ``uuid`` (digested or still journaled)."""
        for _attempt in range(3):
            try:
                size, _digest, parts = self.catalog.attachment_parts(uuid)
            except NotFound:
                pending = self.catalog.pending(uuid)
                if pending is not None:
                    try:
                        return self._read_journal(pending)
                    except IntegrityError:
                        if self.catalog.pending(uuid) is not None:
                            raise
                continue  # digested between the two lookups: look again
            if len(parts) == 1:
                data = self.read_blob(parts[0][0])
            else:
                data = b"".join(self.read_blob(record) for record, _ in parts)
            if len(data) != size:
                raise IntegrityError(
                    f"attachment {uuid} reassembles to {len(data)} bytes, expected {size}"
                )
            return data
        raise NotFound(f"attachment {uuid} is not in the archive")

    def get_header(self, uuid: str) -> bytes:
        """The bytes of a DICOM attachment before Pixel Data, reading only that part.

        For metadata: a study of thousands of instances costs one small blob each.
        """
        try:
            _size, _digest, parts = self.catalog.attachment_parts(uuid)
        except NotFound:
            data = self.get(uuid)  # still journaled (write-behind): cut the whole file
            return data[: pixel_data_offset(data) or len(data)]
        record, _length = parts[0]
        return self.read_blob(record)

    def parts(self, uuid: str) -> list[AttachmentPart]:
        """The parts of attachment ``uuid`` in file order, without reading any blob.

        With :meth:`read_part` this reads one frame or one bulk value of a large file
        without reassembling (decrypting, decompressing) the whole of it.
        """
        try:
            _size, _digest, stored = self.catalog.attachment_parts(uuid)
        except NotFound:
            # still journaled (write-behind): cut the file as the digester will
            data = self.get(uuid)
            return [
                AttachmentPart(s.start, s.end, s.kind, data=data[s.start : s.end])
                for s in split_dicom(data)
            ]
        out = []
        offset = 0
        for record, length in stored:
            out.append(AttachmentPart(offset, offset + length, record.kind, blob=record))
            offset += length
        return out

    def stored_parts(self, uuids: list[str]) -> dict[str, list[AttachmentPart]]:
        """The parts of every digested attachment among ``uuids``, reading no blob.

        An attachment still journaled (write-behind), unknown or empty is left out, so a
        caller planning a large retrieval never pulls whole files into memory here.
        """
        out: dict[str, list[AttachmentPart]] = {}
        for uuid, stored in self.catalog.attachment_parts_many(uuids).items():
            offset = 0
            parts = out[uuid] = []
            for record, length in stored:
                parts.append(AttachmentPart(offset, offset + length, record.kind, blob=record))
                offset += length
        return out

    def header_ids(self, uuids: list[str]) -> dict[str, bytes]:
        """The blob id of each digested DICOM attachment's header part (what
        :meth:`get_header` reads), without reading any blob."""
        return self.catalog.first_blob_ids(uuids)

    def read_part(self, part: AttachmentPart) -> bytes:
        """The verified bytes of one part (IntegrityError on any mismatch)."""
        if part.data is not None:
            return part.data
        if part.blob is None:
            raise NotFound("this part has no stored blob")
        return self.read_blob(part.blob)

    def verify_attachment(self, uuid: str) -> None:
        """Read every part of an attachment and check the digest binding them in order."""
        size, digest, parts = self.catalog.attachment_parts(uuid)
        for record, _length in parts:
            self.read_blob(record)
        listed = [(record.id, length) for record, length in parts]
        if sum(length for _, length in listed) != size or not hmac.compare_digest(
            attachment_digest(self.keys.namer, listed), digest
        ):
            raise IntegrityError(f"attachment {uuid} does not match its digest")

    # -- remove, collect, check, rotate ------------------------------------------------

    def remove(self, uuid: str) -> None:
        for _attempt in range(3):
            if self.catalog.remove_attachment(uuid):
                return
            if self.catalog.remove_pending(uuid):
                if self.journal is not None:
                    self.journal.delete(uuid)
                return
        logger.warning("asked to remove unknown attachment %s; nothing to do", uuid)

    # -- write-behind --------------------------------------------------------------------

    @staticmethod
    def _journal_aad(uuid: str) -> bytes:
        return b"journal:" + uuid.encode()

    def _journal_put(
        self, uuid: str, content_type: int, data: bytes, sender: Sender | None
    ) -> None:
        assert self.journal is not None and self._digest_queue is not None
        kek_id, kek = self.keys.current()
        sealed = seal(data, 0, self._journal_aad(uuid), kek_id, kek)
        try:
            self.journal.write(uuid, sealed.payload)
        except FileExistsError as exc:
            raise Conflict(f"attachment {uuid} already exists") from exc
        try:
            self.catalog.add_pending(
                PendingAttachment(
                    uuid, content_type, len(data), len(sealed.payload), kek_id, sealed.wrapped_key
                ),
                index_header=data[: pixel_data_offset(data) or len(data)],
                sender=sender,
            )
        except BaseException:
            self.journal.delete(uuid)
            raise
        self._digest_queue.put(uuid)

    def _read_journal(self, pending: PendingAttachment) -> bytes:
        assert self.journal is not None
        _flags, data = open_sealed(
            self.journal.read(pending.uuid),
            self._journal_aad(pending.uuid),
            pending.wrapped_key,
            self.keys.kek(pending.kek_id),
        )
        if len(data) != pending.size:
            raise IntegrityError(f"journal entry {pending.uuid} has the wrong size")
        return data

    def digest(self, uuid: str) -> bool:
        """Split, deduplicate and compress one journaled attachment; False if it is gone."""
        pending = self.catalog.pending(uuid)
        if pending is None or self.journal is None:
            return False
        data = self._read_journal(pending)
        try:
            self._put_parts(uuid, pending.content_type, data, from_pending=True)
        except NotFound:
            return False  # removed meanwhile; the remover deleted the journal entry
        self.journal.delete(uuid)
        return True

    def start_digester(self) -> None:
        """Turn write-behind on: journal large DICOM files, digest them on a thread."""
        if self.journal is None or self._digester is not None:
            return
        self._digest_queue = queue.Queue()
        for pending in self.catalog.all_pending():  # left by the previous run
            self._digest_queue.put(pending.uuid)
        self._digester = threading.Thread(
            target=self._digest_loop, name="vna-digester", daemon=True
        )
        self._digester.start()

    def stop_digester(self, timeout: float = 60.0) -> None:
        """Finish the attachment in hand and stop; the rest waits for the next start."""
        if self._digest_queue is not None and self._digester is not None:
            self._digest_queue.put(None)
            self._digester.join(timeout)
            self._digester = None

    def flush_digester(self, timeout: float = 60.0) -> bool:
        """Wait until every queued attachment is digested (tests, benchmarks)."""
        if self._digest_queue is None:
            return True
        deadline = time.monotonic() + timeout
        with self._digest_queue.all_tasks_done:
            while self._digest_queue.unfinished_tasks:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._digest_queue.all_tasks_done.wait(remaining)
        return True

    def _digest_loop(self) -> None:
        assert self._digest_queue is not None
        while True:
            uuid = self._digest_queue.get()
            try:
                if uuid is None:
                    return
                self.digest(uuid)
            except Exception:
                logger.exception(
                    "digesting attachment %s failed; it stays journaled and is "
                    "retried at the next start",
                    uuid,
                )
            finally:
                self._digest_queue.task_done()

    def collect(
        self, grace_seconds: float | None = None, progress: Callable[[int], None] | None = None
    ) -> int:
        """Delete blobs unreferenced for longer than the grace period; returns the count."""
        grace = self.settings.gc_grace_seconds if grace_seconds is None else grace_seconds
        cutoff = time.time() - grace
        removed = 0
        while True:
            batch = self.catalog.collectable_blobs(cutoff)
            if not batch:
                break
            for blob_id in batch:
                if self.catalog.collect_blob(
                    blob_id, cutoff, functools.partial(self._delete_payload, blob_id.hex())
                ):
                    removed += 1
                    if progress:
                        progress(1)
        self.hot.sweep_staged(max(grace, 60.0))
        return removed

    def _delete_payload(self, key: str, tier: str) -> None:
        if tier != INLINE:
            self.hot.delete(key)

    def finish_interrupted_publishes(self) -> tuple[int, int]:
        """After a crash: move staged payloads whose catalog row committed into place
        (a lost rename), and delete the others. Returns (published, discarded)."""
        published = discarded = 0
        for staged in list(self.hot.staged_payloads()):
            try:
                blob_id = bytes.fromhex(staged.key)
            except ValueError:
                blob_id = b""
            record = self.catalog.blob(blob_id) if blob_id else None
            if (
                record is not None
                and record.tier == self.hot.name
                and not self.hot.exists(staged.key)
            ):
                try:
                    open_sealed(
                        self.hot.read_staged(staged),
                        record.id,
                        record.wrapped_key,
                        self.keys.kek(record.kek_id),
                    )
                except IntegrityError:
                    pass  # a racing writer's copy under another data key: not ours to keep
                else:
                    self.hot.publish(staged)
                    published += 1
                    continue
            self.hot.discard(staged)
            discarded += 1
        return published, discarded

    def remove_orphan_payloads(
        self, *, newer_than: float | None = None, older_than: float | None = None
    ) -> int:
        """Delete payload files no catalog row names (left by a crash between publish and
        commit), restricted to those modified in the given window; returns the count."""
        known = {record.id.hex() for record in self.catalog.iter_blobs()}
        removed = 0
        for key in self.hot.iter_keys():
            if key in known:
                continue
            try:
                mtime = self.hot.path(key).stat().st_mtime
            except FileNotFoundError:
                continue
            if (newer_than is not None and mtime < newer_than) or (
                older_than is not None and mtime >= older_than
            ):
                continue
            self.hot.delete(key)
            removed += 1
        return removed

    def check(
        self, progress: Callable[[int], None] | None = None, attachments: bool = False
    ) -> FsckReport:
        """Verify every blob, every reference and every payload file."""
        report = FsckReport()
        known: set[str] = set()
        for record in self.catalog.iter_blobs():
            known.add(record.id.hex())
            try:
                self.read_blob(record)
            except (IntegrityError, NotFound) as exc:
                report.damaged_blobs.append((record.id.hex(), str(exc)))
            report.blobs_checked += 1
            report.bytes_checked += record.size
            if progress:
                progress(1)
        report.refcount_errors = [(b.hex(), s, a) for b, s, a in self.catalog.refcount_mismatches()]
        report.dangling_parts = [(u, b.hex()) for u, b in self.catalog.dangling_parts()]
        report.orphan_payloads = [key for key in self.hot.iter_keys() if key not in known]
        for pending in self.catalog.all_pending():
            try:
                self._read_journal(pending)
            except (IntegrityError, NotFound) as exc:
                report.damaged_attachments.append((pending.uuid, str(exc)))
        if attachments:
            for uuid in sorted(self.catalog.attachment_uuids()):
                try:
                    self.verify_attachment(uuid)
                except (IntegrityError, NotFound) as exc:
                    report.damaged_attachments.append((uuid, str(exc)))
        return report

    def rewrap_all(self, progress: Callable[[int], None] | None = None) -> int:
        """Re-wrap every data key not under the current KEK (resumable, idempotent)."""
        current_id, current = self.keys.current()
        old = [key_id for key_id in self.keys.key_ids() if key_id != current_id]
        if not old:
            return 0
        total = self.catalog.rewrap_pending(
            old, current_id, lambda wrapped, kek_id: rewrap(wrapped, self.keys.kek(kek_id), current)
        )
        while True:
            done = self.catalog.rewrap_batch(
                old,
                current_id,
                lambda wrapped, kek_id: rewrap(wrapped, self.keys.kek(kek_id), current),
            )
            if not done:
                return total
            total += done
            if progress:
                progress(done)
