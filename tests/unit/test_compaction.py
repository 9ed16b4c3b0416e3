"""Background compression (BlobStore.compact): large parts are stored uncompressed when
Orthanc hands them over, then compressed in place without a reader ever seeing a gap."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import zstandard

from archive.blobstore import CONTENT_DICOM, FLAG_ZSTD, BlobStore
from archive.catalog import BlobRecord, Catalog
from archive.indexer import compact_until
from archive.settings import StorageSettings
from archive.synthetic import StudySpec, generate_study
from security.envelope import open_sealed
from security.errors import IntegrityError
from security.keys import KeyRing
from tests.unit.conftest import dicom_bytes
from tiering.fs import FileStore


@pytest.fixture
def ct_files() -> list[bytes]:
    spec = StudySpec(modality="CT", series=1, slices=3, rows=256, columns=256)
    return [dicom_bytes(ds) for ds in generate_study(spec)]


def _pixel_blob(store: BlobStore, uuid: str) -> BlobRecord:
    _size, _digest, parts = store.catalog.attachment_parts(uuid)
    record = max((r for r, _ in parts), key=lambda r: r.size)
    assert record.kind == "pixels"
    return record


def _payload_flags(store: BlobStore, record: BlobRecord) -> int:
    payload = store.hot.get(record.id.hex())
    flags, _ = open_sealed(payload, record.id, record.wrapped_key, store.keys.kek(record.kek_id))
    return flags


def test_pixel_data_is_stored_raw_then_compressed(store: BlobStore, ct_files: list[bytes]) -> None:
    for i, data in enumerate(ct_files):
        store.put(f"i{i}", CONTENT_DICOM, data)
    before = store.catalog.stats()
    assert before.uncompacted == len(ct_files)  # one pixel part each; headers compressed
    raw = _pixel_blob(store, "i0")
    assert not raw.flags & FLAG_ZSTD
    assert raw.stored_size > raw.size  # sealed as is: header, nonce, tag on top

    assert store.compact() == len(ct_files)
    after = store.catalog.stats()
    assert after.uncompacted == 0
    assert after.stored_bytes < before.stored_bytes / 2
    packed = _pixel_blob(store, "i0")
    assert packed.flags & FLAG_ZSTD
    assert packed.stored_size == store.hot.path(packed.id.hex()).stat().st_size
    assert packed.wrapped_key == raw.wrapped_key  # same data key: no re-wrap, no race
    for i, data in enumerate(ct_files):
        assert store.get(f"i{i}") == data
    assert store.check(attachments=True).ok
    assert list((store.hot.root / "staging").iterdir()) == []


def test_a_reader_holding_the_old_row_reads_the_new_payload(
    store: BlobStore, ct_files: list[bytes]
) -> None:
    store.put("a", CONTENT_DICOM, ct_files[0])
    parts = store.parts("a")  # rows as they were before compression
    store.compact()
    assert b"".join(store.read_part(p) for p in parts) == ct_files[0]


def test_reads_during_compaction_never_fail(
    catalog: Catalog, keys: KeyRing, hot: FileStore, ct_files: list[bytes]
) -> None:
    store = BlobStore(catalog, keys, hot, StorageSettings(fsync=False, inline_max_bytes=0))
    for i, data in enumerate(ct_files):
        store.put(f"i{i}", CONTENT_DICOM, data)
    failures: list[BaseException] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            try:
                for i, data in enumerate(ct_files):
                    assert store.get(f"i{i}") == data
            except BaseException as exc:  # noqa: BLE001 - reported below
                failures.append(exc)
                return

    readers = [threading.Thread(target=read) for _ in range(2)]
    for t in readers:
        t.start()
    while store.compact(limit=1):
        pass
    stop.set()
    for t in readers:
        t.join()
    assert failures == []
    assert store.catalog.stats().uncompacted == 0


def test_a_crash_between_swap_and_commit_is_finished_by_the_next_pass(
    store: BlobStore, ct_files: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    store.put("a", CONTENT_DICOM, ct_files[0])
    original = Catalog.finish_compaction

    def crash_after_swap(self: Catalog, done, tier, replace):  # type: ignore[no-untyped-def]
        for blob_id, stored_size, _flags in done:
            if stored_size is not None:
                replace(blob_id)  # the rename happened, the commit did not
        raise OSError("killed")

    monkeypatch.setattr(Catalog, "finish_compaction", crash_after_swap)
    with pytest.raises(OSError, match="killed"):
        store.compact()
    monkeypatch.setattr(Catalog, "finish_compaction", original)
    record = _pixel_blob(store, "a")
    assert not record.flags & FLAG_ZSTD  # the row is behind the file
    assert _payload_flags(store, record) & FLAG_ZSTD
    assert store.get("a") == ct_files[0]  # readable in between
    assert store.catalog.stats().uncompacted == 1
    assert store.compact() == 1  # only records what is on disk
    record = _pixel_blob(store, "a")
    assert record.flags & FLAG_ZSTD
    assert record.stored_size == store.hot.path(record.id.hex()).stat().st_size
    assert store.check(attachments=True).ok


def test_a_blob_collected_meanwhile_leaves_no_file(
    store: BlobStore, ct_files: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    store.put("a", CONTENT_DICOM, ct_files[0])
    store.remove("a")
    original = BlobStore._compact_one

    def collect_first(self: BlobStore, blob_id: bytes):  # type: ignore[no-untyped-def]
        outcome = original(self, blob_id)
        assert self.collect(grace_seconds=0) >= 1  # the garbage collector wins the race
        return outcome

    monkeypatch.setattr(BlobStore, "_compact_one", collect_first)
    store.compact()
    assert store.catalog.stats().uncompacted == 0
    assert list(store.hot.iter_keys()) == []
    assert list((store.hot.root / "staging").iterdir()) == []
    assert store.check().ok


def test_a_damaged_payload_is_left_alone_and_named_by_fsck(
    store: BlobStore, ct_files: list[bytes]
) -> None:
    store.put("a", CONTENT_DICOM, ct_files[0])
    record = _pixel_blob(store, "a")
    path = store.hot.path(record.id.hex())
    damaged = bytearray(path.read_bytes())
    damaged[1000] ^= 0x01
    path.write_bytes(bytes(damaged))
    assert store.compact() == 1  # dequeued, not compressed
    assert path.read_bytes() == bytes(damaged)
    assert store.catalog.stats().uncompacted == 0
    with pytest.raises(IntegrityError):
        store.get("a")
    report = store.check()
    assert [blob for blob, _why in report.damaged_blobs] == [record.id.hex()]


def test_key_rotation_before_compaction(store: BlobStore, ct_files: list[bytes]) -> None:
    store.put("a", CONTENT_DICOM, ct_files[0])
    store.keys.rotate()
    assert store.rewrap_all() >= 1
    store.compact()
    assert _pixel_blob(store, "a").flags & FLAG_ZSTD
    assert store.get("a") == ct_files[0]
    assert store.check(attachments=True).ok


def test_off_compresses_before_answering(
    catalog: Catalog, keys: KeyRing, hot: FileStore, ct_files: list[bytes]
) -> None:
    settings = StorageSettings(fsync=False, inline_max_bytes=0, compress_in_background=False)
    store = BlobStore(catalog, keys, hot, settings)
    store.put("a", CONTENT_DICOM, ct_files[0])
    assert store.catalog.stats().uncompacted == 0
    assert _pixel_blob(store, "a").flags & FLAG_ZSTD


def test_a_resent_file_queues_nothing(store: BlobStore, ct_files: list[bytes]) -> None:
    store.put("a", CONTENT_DICOM, ct_files[0])
    store.compact()
    store.put("b", CONTENT_DICOM, ct_files[0])
    assert store.catalog.stats().uncompacted == 0
    assert store.get("b") == ct_files[0]


def test_the_compactor_thread_drains_the_queue_and_stops(
    store: BlobStore, ct_files: list[bytes]
) -> None:
    for i, data in enumerate(ct_files):
        store.put(f"i{i}", CONTENT_DICOM, data)
    stop = threading.Event()
    worker = threading.Thread(target=compact_until, args=(store, stop, 0.01))
    worker.start()
    try:
        for _ in range(500):
            if store.catalog.stats().uncompacted == 0:
                break
            stop.wait(0.01)
    finally:
        stop.set()
        worker.join(10)
    assert not worker.is_alive()
    assert store.catalog.stats().uncompacted == 0
    assert all(store.get(f"i{i}") == data for i, data in enumerate(ct_files))


def test_plaintext_of_a_raw_part_never_reaches_the_disk(store: BlobStore, tmp_path: Path) -> None:
    marker = b"PLAINTEXT-MARKER-" * 8192  # large: stored uncompressed until compacted
    store.put("secret", 2, marker)
    assert store.catalog.stats().uncompacted == 1
    for key in store.hot.iter_keys():
        assert b"PLAINTEXT-MARKER" not in store.hot.path(key).read_bytes()


def test_read_zstd_gives_the_stored_frame_of_a_compressed_blob(
    store: BlobStore, ct_files: list[bytes]
) -> None:
    store.put("a", CONTENT_DICOM, ct_files[0])
    record = _pixel_blob(store, "a")
    assert store.read_zstd(record) is None  # stored uncompressed (not compacted yet)
    store.compact()
    record = _pixel_blob(store, "a")
    frame = store.read_zstd(record)
    assert frame is not None
    assert len(frame) < record.size
    assert zstandard.ZstdDecompressor().decompress(frame) == store.read_blob(record)
    path = store.hot.path(record.id.hex())
    damaged = bytearray(path.read_bytes())
    damaged[-20] ^= 0x01
    path.write_bytes(bytes(damaged))
    with pytest.raises(IntegrityError):
        store.read_zstd(record)  # the GCM tag still guards what is sent as stored
