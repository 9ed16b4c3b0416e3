"""The single-copy store: exact bytes back, dedup, integrity, GC, rotation (archive.blobstore)."""

from __future__ import annotations

import io
import os
import queue
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pydicom
import pytest
import zstandard
from pydicom.data import get_testdata_file, get_testdata_files
from pydicom.uid import generate_uid
from sqlalchemy import text

from archive.blobstore import (
    CONTENT_DICOM,
    CONTENT_DICOM_UNTIL_PIXEL_DATA,
    FLAG_ZSTD,
    BlobStore,
)
from archive.catalog import Catalog
from archive.settings import StorageSettings
from archive.split import pixel_data_offset, split_dicom
from security.envelope import open_sealed
from security.errors import Conflict, IntegrityError, NotFound
from security.keys import KeyRing
from tiering.fs import FileStore

BUNDLED = sorted(Path(f) for f in get_testdata_files() if Path(f).is_file())


def _bundled(name: str) -> bytes:
    return Path(get_testdata_file(name)).read_bytes()


def _rows(catalog: Catalog, query: str, **params: Any) -> list[Any]:
    with catalog.engine.connect() as conn:
        return list(conn.execute(text(query), params).all())


def _blobs(catalog: Catalog) -> dict[bytes, tuple[str, int, str]]:
    """blob id -> (kind, refcount, kek id)."""
    rows = _rows(catalog, "SELECT id, kind, refcount, kek_id FROM blobs")
    return {bytes(r[0]): (str(r[1]), int(r[2]), str(r[3])) for r in rows}


def _parts(catalog: Catalog, uuid: str) -> list[bytes]:
    rows = _rows(
        catalog, "SELECT blob_id FROM attachment_parts WHERE uuid = :u ORDER BY seq", u=uuid
    )
    return [bytes(r[0]) for r in rows]


def _payload_files(hot: FileStore) -> set[str]:
    return set(hot.iter_keys())


def _staged_files(hot: FileStore) -> list[Path]:
    return list((hot.root / "staging").iterdir())


def _edited(data: bytes) -> bytes:
    """The same file with a new PatientName and SOPInstanceUID, in its transfer syntax."""
    ds = pydicom.dcmread(io.BytesIO(data))
    syntax = ds.file_meta.TransferSyntaxUID
    uid = generate_uid()
    ds.PatientName = "Corrected^Name"
    ds.SOPInstanceUID = uid
    ds.file_meta.MediaStorageSOPInstanceUID = uid
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    edited = buffer.getvalue()
    assert pydicom.dcmread(io.BytesIO(edited)).file_meta.TransferSyntaxUID == syntax
    assert edited != data
    return edited


def _flip_byte(path: Path, offset: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x40
    path.write_bytes(bytes(raw))


# --------------------------------------------------------------------- round trips


def test_every_bundled_file_comes_back_exactly(store: BlobStore) -> None:
    originals = {f"att-{i}": path.read_bytes() for i, path in enumerate(BUNDLED)}
    for uuid, data in originals.items():
        store.put(uuid, CONTENT_DICOM, data)
    for uuid, data in originals.items():
        assert store.get(uuid) == data, uuid
        store.verify_attachment(uuid)
    stats = store.catalog.stats()
    assert stats.attachments == len(originals)
    assert stats.logical_bytes == sum(len(d) for d in originals.values())
    assert stats.unique_bytes <= stats.logical_bytes
    report = store.check(attachments=True)
    assert report.ok, report
    assert report.blobs_checked == stats.blobs


def test_synthetic_ct_round_trip(store: BlobStore, small_ct: list[bytes], big_ct: bytes) -> None:
    for i, data in enumerate([*small_ct, big_ct]):
        store.put(f"ct-{i}", CONTENT_DICOM, data)
    for i, data in enumerate([*small_ct, big_ct]):
        assert store.get(f"ct-{i}") == data
    # header + pixels per instance, nothing shared between distinct slices
    assert store.catalog.stats().blobs == 2 * (len(small_ct) + 1)


def test_parts_follow_the_split(store: BlobStore) -> None:
    data = _bundled("examples_ybr_color.dcm")
    store.put("u", CONTENT_DICOM, data)
    spans = split_dicom(data)
    parts = _parts(store.catalog, "u")
    assert len(parts) == len(spans)
    kinds = _blobs(store.catalog)
    assert [kinds[p][0] for p in parts] == [s.kind for s in spans]
    size, _digest, records = store.catalog.attachment_parts("u")
    assert size == len(data)
    assert [length for _, length in records] == [s.end - s.start for s in spans]


@pytest.mark.parametrize("content_type", [2, 5, 9999])
def test_other_content_types_are_one_part(store: BlobStore, content_type: int) -> None:
    data = _bundled("CT_small.dcm")  # DICOM bytes, but not declared as a DICOM file
    store.put("json", content_type, data)
    assert store.get("json") == data
    assert [v[0] for v in _blobs(store.catalog).values()] == ["other"]


@pytest.mark.parametrize("content_type", [CONTENT_DICOM, 2])
def test_empty_attachment(store: BlobStore, content_type: int) -> None:
    store.put("empty", content_type, b"")
    assert store.get("empty") == b""
    store.verify_attachment("empty")
    assert store.check(attachments=True).ok


def test_compressible_parts_are_compressed_and_noise_is_stored_raw(store: BlobStore) -> None:
    store.put("zeros", 2, bytes(100_000))
    store.put("noise", 2, os.urandom(100_000))
    rows = {
        str(r[0]): (int(r[1]), int(r[2]), int(r[3]))
        for r in _rows(
            store.catalog,
            "SELECT a.uuid, b.flags, b.size, b.stored_size FROM attachments a "
            "JOIN attachment_parts p ON p.uuid = a.uuid JOIN blobs b ON b.id = p.blob_id",
        )
    }
    flags, size, stored = rows["zeros"]
    assert flags & FLAG_ZSTD
    assert size == 100_000
    assert stored < 1_000
    flags, size, stored = rows["noise"]
    assert not flags & FLAG_ZSTD
    assert stored > size  # encryption header, nonce and tag on top of the raw bytes
    assert store.get("zeros") == bytes(100_000)


def test_plaintext_never_reaches_the_disk(store: BlobStore, tmp_path: Path) -> None:
    marker = b"PLAINTEXT-MARKER-" * 64
    store.put("secret", 2, marker)
    for key in store.hot.iter_keys():
        assert b"PLAINTEXT-MARKER" not in store.hot.path(key).read_bytes()


def test_unknown_attachment_is_not_found(store: BlobStore) -> None:
    with pytest.raises(NotFound):
        store.get("no-such-uuid")


# --------------------------------------------------------------------- deduplication


def test_identical_content_is_stored_once(store: BlobStore, small_ct: list[bytes]) -> None:
    data = small_ct[0]
    store.put("first", CONTENT_DICOM, data)
    before = store.catalog.stats()
    files_before = _payload_files(store.hot)
    store.put("second", CONTENT_DICOM, data)
    after = store.catalog.stats()
    assert after.blobs == before.blobs
    assert after.stored_bytes == before.stored_bytes
    assert after.unique_bytes == before.unique_bytes
    assert after.attachments == 2
    assert after.logical_bytes == 2 * len(data)
    assert after.dedup_ratio == pytest.approx(2.0)
    assert _payload_files(store.hot) == files_before
    assert {refcount for _kind, refcount, _kek in _blobs(store.catalog).values()} == {2}
    assert _parts(store.catalog, "first") == _parts(store.catalog, "second")
    assert store.get("second") == data


@pytest.mark.parametrize(
    "name",
    [
        "CT_small.dcm",  # native, with a trailer
        "MR_small_implicit.dcm",
        "MR_small_bigendian.dcm",
        "MR_small_RLE.dcm",  # encapsulated, one fragment
        "examples_ybr_color.dcm",  # encapsulated, 30 fragments
        "SC_rgb_rle_2frame.dcm",
    ],
)
def test_same_pixels_under_a_new_header_add_only_a_header_blob(store: BlobStore, name: str) -> None:
    original = _bundled(name)
    edited = _edited(original)
    store.put("original", CONTENT_DICOM, original)
    before = _blobs(store.catalog)
    store.put("edited", CONTENT_DICOM, edited)
    after = _blobs(store.catalog)
    added = set(after) - set(before)
    assert len(added) == 1
    assert after[added.pop()][0] == "header"
    uses = Counter(_parts(store.catalog, "original"))  # a frame may repeat within a file
    for blob_id, (kind, refcount, _kek) in after.items():
        if kind != "header":
            assert refcount == 2 * uses[blob_id], kind
    assert store.get("edited") == edited
    assert store.get("original") == original


def test_edited_synthetic_ct_shares_its_pixels(store: BlobStore, small_ct: list[bytes]) -> None:
    original = small_ct[1]
    store.put("original", CONTENT_DICOM, original)
    stored = store.catalog.stats().stored_bytes
    store.put("edited", CONTENT_DICOM, _edited(original))
    kinds = [kind for kind, _r, _k in _blobs(store.catalog).values()]
    assert sorted(kinds) == ["header", "header", "pixels"]
    # the second copy costs far less than the pixels it shares
    assert store.catalog.stats().stored_bytes - stored < (stored // 2)


def test_header_only_attachment_dedups_against_the_full_file(store: BlobStore) -> None:
    data = _bundled("CT_small.dcm")
    offset = pixel_data_offset(data)
    assert offset is not None
    store.put("full", CONTENT_DICOM, data)
    before = _blobs(store.catalog)
    store.put("until-pixels", CONTENT_DICOM_UNTIL_PIXEL_DATA, data[:offset])
    after = _blobs(store.catalog)
    assert set(after) == set(before)
    header = _parts(store.catalog, "full")[0]
    assert _parts(store.catalog, "until-pixels") == [header]
    assert after[header][:2] == ("header", 2)
    assert store.get("until-pixels") == data[:offset]


def test_full_file_after_its_header_adds_only_pixels_and_trailer(store: BlobStore) -> None:
    data = _bundled("CT_small.dcm")
    offset = pixel_data_offset(data)
    assert offset is not None
    store.put("until-pixels", CONTENT_DICOM_UNTIL_PIXEL_DATA, data[:offset])
    store.put("full", CONTENT_DICOM, data)
    kinds = sorted(kind for kind, _r, _k in _blobs(store.catalog).values())
    assert kinds == ["header", "pixels", "trailer"]


def test_repeated_part_within_one_attachment_is_counted_per_use(
    store: BlobStore, small_ct: list[bytes]
) -> None:
    ds = pydicom.dcmread(io.BytesIO(small_ct[0]))
    ds.PixelData = bytes(64 * 64 * 2)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    data = buffer.getvalue()
    store = BlobStore(store.catalog, store.keys, store.hot, store.settings, native_chunk=1024)
    spans = split_dicom(data, native_chunk=1024)
    store.put("zeros", CONTENT_DICOM, data)
    assert store.get("zeros") == data
    parts = _parts(store.catalog, "zeros")
    assert len(parts) == len(spans)
    blobs = _blobs(store.catalog)
    repeated = max(set(parts), key=parts.count)
    assert parts.count(repeated) >= 5
    assert blobs[repeated][1] == parts.count(repeated)
    assert len(blobs) == len(set(parts))
    assert store.check().ok
    store.remove("zeros")
    assert {refcount for _k, refcount, _kek in _blobs(store.catalog).values()} == {0}
    assert store.collect(grace_seconds=0) == len(set(parts))


# --------------------------------------------------------------------- integrity


def _pixel_blob(store: BlobStore, uuid: str) -> bytes:
    blobs = _blobs(store.catalog)
    return next(b for b in _parts(store.catalog, uuid) if blobs[b][0] == "pixels")


@pytest.mark.parametrize("offset", [0, 4, 10, 40, -17, -1])
def test_a_flipped_byte_in_a_payload_is_detected(
    store: BlobStore, small_ct: list[bytes], offset: int
) -> None:
    store.put("u", CONTENT_DICOM, small_ct[0])
    blob_id = _pixel_blob(store, "u")
    _flip_byte(store.hot.path(blob_id.hex()), offset)
    with pytest.raises(IntegrityError):
        store.get("u")
    report = store.check()
    assert not report.ok
    assert [damaged for damaged, _why in report.damaged_blobs] == [blob_id.hex()]
    assert report.blobs_checked == 2


def test_a_truncated_payload_is_detected(store: BlobStore, small_ct: list[bytes]) -> None:
    store.put("u", CONTENT_DICOM, small_ct[0])
    blob_id = _pixel_blob(store, "u")
    path = store.hot.path(blob_id.hex())
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(IntegrityError):
        store.get("u")
    assert [b for b, _ in store.check().damaged_blobs] == [blob_id.hex()]
    path.write_bytes(b"")
    with pytest.raises(IntegrityError, match="truncated"):
        store.get("u")


def test_a_deleted_payload_is_detected(store: BlobStore, small_ct: list[bytes]) -> None:
    store.put("u", CONTENT_DICOM, small_ct[0])
    blob_id = _pixel_blob(store, "u")
    store.hot.path(blob_id.hex()).unlink()
    with pytest.raises(IntegrityError, match="missing"):
        store.get("u")
    report = store.check()
    assert [b for b, _ in report.damaged_blobs] == [blob_id.hex()]


def test_swapped_payloads_are_detected(store: BlobStore) -> None:
    store.put("a", 2, b"first attachment " * 100)
    store.put("b", 2, b"second attachment " * 100)
    (blob_a,) = _parts(store.catalog, "a")
    (blob_b,) = _parts(store.catalog, "b")
    path_a, path_b = store.hot.path(blob_a.hex()), store.hot.path(blob_b.hex())
    raw_a, raw_b = path_a.read_bytes(), path_b.read_bytes()
    path_a.write_bytes(raw_b)
    path_b.write_bytes(raw_a)
    for uuid in ("a", "b"):
        with pytest.raises(IntegrityError):
            store.get(uuid)
    assert len(store.check().damaged_blobs) == 2


def test_reordered_parts_are_caught_by_the_attachment_digest(store: BlobStore) -> None:
    data = _bundled("SC_rgb_rle_2frame.dcm")
    store.put("u", CONTENT_DICOM, data)
    # parts: header, BOT, frame 1, frame 2, trailer; swap the two frames (seq 2 and 3)
    parts = _parts(store.catalog, "u")
    assert len(parts) == 5
    assert parts[2] != parts[3]
    conn = sqlite3.connect(store.catalog.url.removeprefix("sqlite:///"))
    try:
        conn.execute("UPDATE attachment_parts SET seq = 99 WHERE uuid = 'u' AND seq = 2")
        conn.execute("UPDATE attachment_parts SET seq = 2 WHERE uuid = 'u' AND seq = 3")
        conn.execute("UPDATE attachment_parts SET seq = 3 WHERE uuid = 'u' AND seq = 99")
        conn.commit()
    finally:
        conn.close()
    with pytest.raises(IntegrityError, match="digest"):
        store.verify_attachment("u")
    report = store.check(attachments=True)
    assert [uuid for uuid, _ in report.damaged_attachments] == ["u"]
    assert not report.ok


def test_check_is_ok_on_a_healthy_store(store: BlobStore, small_ct: list[bytes]) -> None:
    for i, data in enumerate(small_ct):
        store.put(f"u{i}", CONTENT_DICOM, data)
        store.put(f"dup{i}", CONTENT_DICOM, data)
    ticks: list[int] = []
    report = store.check(progress=ticks.append, attachments=True)
    assert report.ok
    assert report.blobs_checked == store.catalog.stats().blobs == len(ticks)
    assert report.bytes_checked == store.catalog.stats().unique_bytes
    assert not report.damaged_blobs
    assert not report.refcount_errors
    assert not report.orphan_payloads
    assert not report.damaged_attachments


def test_refcount_corruption_is_reported(store: BlobStore, small_ct: list[bytes]) -> None:
    store.put("u", CONTENT_DICOM, small_ct[0])
    with store.catalog.write_transaction() as conn:
        conn.execute(text("UPDATE blobs SET refcount = refcount + 1"))
    report = store.check()
    assert not report.ok
    expected = {(b.hex(), 2, 1) for b in _parts(store.catalog, "u")}
    assert set(report.refcount_errors) == expected


def test_dangling_parts_are_reported(store: BlobStore, small_ct: list[bytes]) -> None:
    store.put("u", CONTENT_DICOM, small_ct[0])
    blob_id = _pixel_blob(store, "u")
    conn = sqlite3.connect(store.catalog.url.removeprefix("sqlite:///"))
    try:  # a plain connection does not enforce foreign keys: simulate a damaged catalog
        conn.execute("DELETE FROM blobs WHERE id = ?", (blob_id,))
        conn.commit()
    finally:
        conn.close()
    report = store.check()
    assert report.dangling_parts == [("u", blob_id.hex())]
    assert report.orphan_payloads == [blob_id.hex()]


# --------------------------------------------------------------------- remove and collect


def test_remove_then_collect_deletes_blobs_and_payloads(
    store: BlobStore, small_ct: list[bytes]
) -> None:
    store.put("u", CONTENT_DICOM, small_ct[0])
    keys = {b.hex() for b in _parts(store.catalog, "u")}
    assert keys <= _payload_files(store.hot)
    store.remove("u")
    with pytest.raises(NotFound):
        store.get("u")
    assert store.catalog.stats().unreferenced_blobs == 2
    ticks: list[int] = []
    assert store.collect(grace_seconds=0, progress=ticks.append) == 2
    assert ticks == [1, 1]
    assert _blobs(store.catalog) == {}
    assert _payload_files(store.hot) == set()
    assert store.check().ok


def test_collect_keeps_blobs_still_referenced(store: BlobStore) -> None:
    original = _bundled("MR_small_RLE.dcm")
    edited = _edited(original)
    store.put("original", CONTENT_DICOM, original)
    store.put("edited", CONTENT_DICOM, edited)
    original_header = _parts(store.catalog, "original")[0]
    shared = set(_parts(store.catalog, "original")[1:])
    store.remove("original")
    assert store.collect(grace_seconds=0) == 1
    blobs = _blobs(store.catalog)
    assert original_header not in blobs
    assert not store.hot.exists(original_header.hex())
    assert shared <= set(blobs)
    assert all(blobs[b][1] == 1 for b in shared)
    assert store.get("edited") == edited
    assert store.check(attachments=True).ok


def test_collect_respects_the_grace_period(store: BlobStore, small_ct: list[bytes]) -> None:
    store.put("u", CONTENT_DICOM, small_ct[0])
    keys = _payload_files(store.hot)
    store.remove("u")
    assert store.collect(grace_seconds=3600) == 0
    assert store.collect() == 0  # the settings' default grace is an hour
    assert _payload_files(store.hot) == keys
    assert store.catalog.stats().unreferenced_blobs == 2
    assert store.collect(grace_seconds=0) == 2


def test_a_re_put_revives_an_unreferenced_blob(store: BlobStore, small_ct: list[bytes]) -> None:
    data = small_ct[0]
    store.put("u", CONTENT_DICOM, data)
    store.remove("u")
    store.put("again", CONTENT_DICOM, data)
    assert store.collect(grace_seconds=0) == 0
    assert store.get("again") == data
    assert {r for _k, r, _kek in _blobs(store.catalog).values()} == {1}
    assert store.catalog.stats().unreferenced_blobs == 0


def test_removing_an_unknown_attachment_is_harmless(
    store: BlobStore, caplog: pytest.LogCaptureFixture
) -> None:
    store.put("u", 2, b"keep me")
    store.remove("nope")
    assert "nope" in caplog.text
    assert store.get("u") == b"keep me"


def test_put_retries_when_a_blob_is_collected_meanwhile(
    store: BlobStore, small_ct: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer saw the blob, the collector deleted it, the writer must store it again."""
    data = small_ct[0]
    store.put("u", CONTENT_DICOM, data)
    store.remove("u")
    real_existing = store.catalog.existing_blobs
    calls: list[int] = []

    def existing_then_collect(ids: Any) -> set[bytes]:
        present = real_existing(ids)
        if not calls:
            assert store.collect(grace_seconds=0) == 2
        calls.append(len(present))
        return present

    monkeypatch.setattr(store.catalog, "existing_blobs", existing_then_collect)
    store.put("again", CONTENT_DICOM, data)
    assert calls == [2, 0]
    assert store.get("again") == data
    assert {r for _k, r, _kek in _blobs(store.catalog).values()} == {1}
    assert store.check().ok
    assert _staged_files(store.hot) == []


# --------------------------------------------------------------------- key rotation


def test_rewrap_all_after_rotation(store: BlobStore, keys: KeyRing, small_ct: list[bytes]) -> None:
    for i, data in enumerate(small_ct):
        store.put(f"u{i}", CONTENT_DICOM, data)
    old_id = keys.current_id
    payloads = {k: store.hot.path(k).read_bytes() for k in store.hot.iter_keys()}
    new_id = keys.rotate()
    ticks: list[int] = []
    assert store.rewrap_all(progress=ticks.append) == len(payloads)
    assert sum(ticks) == len(payloads)
    assert {kek for _k, _r, kek in _blobs(store.catalog).values()} == {new_id}
    assert store.catalog.kek_usage() == {new_id: len(payloads)}
    # blobs are never re-encrypted, only their data keys are re-wrapped
    assert {k: store.hot.path(k).read_bytes() for k in store.hot.iter_keys()} == payloads
    for i, data in enumerate(small_ct):
        assert store.get(f"u{i}") == data
    assert store.rewrap_all() == 0
    assert old_id in keys.key_ids()


def test_new_blobs_use_the_current_kek(store: BlobStore, keys: KeyRing) -> None:
    store.put("before", 2, b"before rotation")
    new_id = keys.rotate()
    store.put("after", 2, b"after rotation")
    (after,) = _parts(store.catalog, "after")
    assert _blobs(store.catalog)[after][2] == new_id
    assert store.get("before") == b"before rotation"


def test_old_kek_no_longer_opens_rewrapped_blobs(
    store: BlobStore, keys: KeyRing, tmp_path: Path
) -> None:
    store.put("u", 2, b"rotate me" * 50)
    old_id = keys.current_id
    old_kek = keys.kek(old_id)
    keys.rotate()
    store.rewrap_all()
    _size, _digest, [(record, _length)] = store.catalog.attachment_parts("u")
    payload = store.hot.get(record.id.hex())
    with pytest.raises(IntegrityError):
        open_sealed(payload, record.id, record.wrapped_key, old_kek)
    # the old key file can even be destroyed: nothing depends on it any more
    (tmp_path / "keys" / f"kek-{old_id}.key").write_bytes(os.urandom(32))
    fresh = BlobStore(store.catalog, KeyRing(tmp_path / "keys"), store.hot, store.settings)
    assert fresh.get("u") == b"rotate me" * 50


def test_a_blob_whose_kek_is_gone_is_reported(
    store: BlobStore, keys: KeyRing, tmp_path: Path
) -> None:
    store.put("u", 2, b"orphaned by its key")
    old_id = keys.current_id
    keys.rotate()
    (tmp_path / "keys" / f"kek-{old_id}.key").unlink()
    fresh = BlobStore(store.catalog, KeyRing(tmp_path / "keys"), store.hot, store.settings)
    with pytest.raises(NotFound, match=old_id):
        fresh.get("u")
    assert len(fresh.check().damaged_blobs) == 1


# --------------------------------------------------------------------- concurrency


@pytest.mark.parametrize(
    ("content_type", "parts"), [(2, 1), (CONTENT_DICOM, 2)], ids=["one-part", "header+pixels"]
)
def test_concurrent_puts_of_new_content_store_one_blob(
    store: BlobStore, small_ct: list[bytes], content_type: int, parts: int
) -> None:
    data = small_ct[2]
    barrier = threading.Barrier(8)

    def put(i: int) -> None:
        barrier.wait()  # start together, so several writers find the content new
        store.put(f"thread-{i}", content_type, data)

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(put, range(8)))
    blobs = _blobs(store.catalog)
    assert len(blobs) == parts  # one blob per distinct part, however many writers
    assert {refcount for _k, refcount, _kek in blobs.values()} == {8}
    assert _payload_files(store.hot) == {b.hex() for b in blobs}
    assert _staged_files(store.hot) == []
    for i in range(8):
        assert store.get(f"thread-{i}") == data
    assert store.check(attachments=True).ok


def test_concurrent_puts_of_different_content(store: BlobStore, small_ct: list[bytes]) -> None:
    jobs = [(f"u{i}-{j}", data) for i, data in enumerate(small_ct) for j in range(3)]
    with ThreadPoolExecutor(max_workers=6) as pool:
        list(pool.map(lambda job: store.put(job[0], CONTENT_DICOM, job[1]), jobs))
    for uuid, data in jobs:
        assert store.get(uuid) == data
    report = store.check(attachments=True)
    assert report.ok
    assert report.blobs_checked == 2 * len(small_ct)


# --------------------------------------------------------------------- orphans and failures


def test_remove_orphan_payloads_removes_strays_only(
    store: BlobStore, small_ct: list[bytes]
) -> None:
    store.put("u", CONTENT_DICOM, small_ct[0])
    real = _payload_files(store.hot)
    stray = "ab" * 32
    path = store.hot.path(stray)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"left by a crash between publish and commit")
    assert store.check().orphan_payloads == [stray]
    assert store.remove_orphan_payloads() == 1
    assert not path.exists()
    assert _payload_files(store.hot) == real
    assert store.get("u") == small_ct[0]
    assert store.check().ok


def test_remove_orphan_payloads_time_window(store: BlobStore) -> None:
    old, new = "cd" * 32, "ef" * 32
    for key in (old, new):
        path = store.hot.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"stray")
    now = time.time()
    os.utime(store.hot.path(old), (now - 7200, now - 7200))
    assert store.remove_orphan_payloads(newer_than=now - 60) == 1
    assert store.hot.exists(old)
    assert not store.hot.exists(new)
    assert store.remove_orphan_payloads(older_than=now - 3600) == 1
    assert not store.hot.exists(old)


def test_put_of_an_existing_uuid_is_a_conflict(store: BlobStore) -> None:
    first = _bundled("CT_small.dcm")
    store.put("u", CONTENT_DICOM, first)
    before = _blobs(store.catalog)
    with pytest.raises(Conflict):
        store.put("u", CONTENT_DICOM, _bundled("MR_small.dcm"))
    assert store.get("u") == first
    assert _blobs(store.catalog) == before  # the transaction rolled back
    assert _staged_files(store.hot) == []


def test_a_failed_put_leaves_no_orphan_payloads(store: BlobStore) -> None:
    store.put("u", CONTENT_DICOM, _bundled("CT_small.dcm"))
    with pytest.raises(Conflict):
        store.put("u", CONTENT_DICOM, _bundled("MR_small.dcm"))
    assert store.check().orphan_payloads == []


def test_fsync_store_round_trip(catalog: Catalog, keys: KeyRing, tmp_path: Path) -> None:
    durable = BlobStore(
        catalog, keys, FileStore(tmp_path / "durable", fsync=True), StorageSettings()
    )
    data = _bundled("MR_small_RLE.dcm")
    durable.put("u", CONTENT_DICOM, data)
    assert durable.get("u") == data
    assert durable.check().ok


# --------------------------------------------------------------------- the local tier


def test_file_store_stage_publish_get_delete(hot: FileStore) -> None:
    key = "0123" + "ab" * 30
    staged = hot.stage(b"payload", key)
    assert staged.size == 7
    assert not hot.exists(key)
    assert list(hot.iter_keys()) == []  # staged payloads are invisible
    hot.publish(staged)
    assert hot.path(key) == hot.root / "01" / "23" / key
    assert hot.get(key) == b"payload"
    assert hot.size_of(key) == 7
    assert stat_mode(hot.path(key)) == 0o600
    assert list(hot.iter_keys()) == [key]
    assert _staged_files(hot) == []
    hot.delete(key)
    hot.delete(key)  # deleting twice is fine
    assert not hot.exists(key)
    with pytest.raises(IntegrityError, match="missing"):
        hot.get(key)
    with pytest.raises(NotFound):
        hot.size_of(key)


def test_file_store_discard_and_sweep(hot: FileStore) -> None:
    kept = hot.stage(b"in flight", "aa" * 32)
    dropped = hot.stage(b"abandoned", "bb" * 32)
    hot.discard(dropped)
    hot.discard(dropped)
    assert [p.name for p in _staged_files(hot)] == [kept.token]
    old = hot.stage(b"left by a crash", "cc" * 32)
    when = time.time() - 600
    os.utime(hot.root / "staging" / old.token, (when, when))
    assert hot.sweep_staged(300) == 1
    assert [p.name for p in _staged_files(hot)] == [kept.token]


def test_file_store_publish_replaces_atomically(tmp_path: Path) -> None:
    hot = FileStore(tmp_path / "tier", fsync=True)
    key = "ff" * 32
    hot.publish(hot.stage(b"first", key))
    hot.publish(hot.stage(b"second", key))
    assert hot.get(key) == b"second"
    assert list(hot.iter_keys()) == [key]


def stat_mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


# --------------------------------------------------------------------- inline blobs


@pytest.fixture
def inline_store(catalog: Catalog, keys: KeyRing, tmp_path: Path) -> BlobStore:
    return BlobStore(
        catalog,
        keys,
        FileStore(tmp_path / "inline-tier", fsync=False),
        StorageSettings(fsync=False),
    )


def test_small_parts_live_in_the_catalog_row(
    inline_store: BlobStore, small_ct: list[bytes]
) -> None:
    data = small_ct[0]
    inline_store.put("att-inline", 1, data)
    assert inline_store.get("att-inline") == data
    _size, _digest, parts = inline_store.catalog.attachment_parts("att-inline")
    tiers = {record.kind: record.tier for record, _ in parts}
    assert tiers["header"] == "inline"
    files = list(inline_store.hot.iter_keys())
    assert all(record.tier == "inline" or record.id.hex() in files for record, _ in parts)
    assert inline_store.check().ok


def test_a_tampered_inline_payload_is_detected(
    inline_store: BlobStore, small_ct: list[bytes]
) -> None:
    data = small_ct[0]
    inline_store.put("att-inline", 1, data)
    with inline_store.catalog.engine.begin() as conn:
        (blob_id, payload) = conn.exec_driver_sql(
            "SELECT id, payload FROM blobs WHERE tier = 'inline' LIMIT 1"
        ).one()
        flipped = bytearray(payload)
        flipped[-3] ^= 0x10
        conn.exec_driver_sql("UPDATE blobs SET payload = ? WHERE id = ?", (bytes(flipped), blob_id))
    with pytest.raises(IntegrityError):
        inline_store.get("att-inline")
    report = inline_store.check()
    assert [b for b, _ in report.damaged_blobs] == [bytes(blob_id).hex()]


def test_an_interrupted_publish_is_finished_by_recovery(
    store: BlobStore, small_ct: list[bytes]
) -> None:
    data = small_ct[0]
    store.put("att-1", 1, data)
    # simulate a crash that lost the rename: the payload is back in staging
    _size, _digest, parts = store.catalog.attachment_parts("att-1")
    record = next(r for r, _ in parts if r.kind == "pixels")
    final = store.hot.path(record.id.hex())
    staging = store.hot.root / "staging" / f"{record.id.hex()}.deadbeef"
    final.rename(staging)
    (store.hot.root / "staging" / f"{'ab' * 32}.0000").write_bytes(b"a stray staged payload")
    with pytest.raises(IntegrityError):
        store.get("att-1")
    assert store.finish_interrupted_publishes() == (1, 1)
    assert store.get("att-1") == data
    assert list((store.hot.root / "staging").iterdir()) == []


# --------------------------------------------------------------------- write-behind


@pytest.fixture
def behind(catalog: Catalog, keys: KeyRing, tmp_path: Path) -> Iterator[BlobStore]:
    from tiering.fs import Journal

    store = BlobStore(
        catalog,
        keys,
        FileStore(tmp_path / "wb-tier", fsync=False),
        StorageSettings(fsync=False, write_behind_min_bytes=1024),
        Journal(tmp_path / "journal", fsync=False),
    )
    yield store
    store.stop_digester()


def test_write_behind_reads_before_and_after_digest(
    behind: BlobStore, small_ct: list[bytes], big_ct: bytes
) -> None:
    behind.put("plain", 1, small_ct[0])  # no digester yet: stored at once
    assert behind.catalog.pending("plain") is None
    behind._digest_queue = queue.Queue()  # journal without a running digester
    behind.put("later", 1, big_ct)
    pending = behind.catalog.pending("later")
    assert pending is not None and pending.size == len(big_ct)
    assert behind.get("later") == big_ct
    assert list(behind.journal.names()) == ["later"]  # type: ignore[union-attr]
    assert behind.catalog.stats().pending == 1
    journal_bytes = (behind.journal.root / "later").read_bytes()  # type: ignore[union-attr]
    assert big_ct[1000:1100] not in journal_bytes, "the journal is encrypted"
    behind._digest_queue = None
    behind.start_digester()  # picks up what the previous run left
    assert behind.flush_digester(30)
    assert behind.catalog.pending("later") is None
    assert list(behind.journal.names()) == []  # type: ignore[union-attr]
    assert behind.get("later") == big_ct
    assert behind.check(attachments=True).ok


def test_write_behind_deduplicates_after_digest(behind: BlobStore, big_ct: bytes) -> None:
    behind.start_digester()
    behind.put("first", 1, big_ct)
    behind.put("second", 1, big_ct)
    assert behind.flush_digester(30)
    stats = behind.catalog.stats()
    assert stats.attachments == 2 and stats.pending == 0
    assert stats.unique_bytes == len(big_ct)


def test_removing_a_journaled_attachment(behind: BlobStore, big_ct: bytes) -> None:
    behind._digest_queue = queue.Queue()  # journal, never digest
    behind.put("gone", 1, big_ct)
    behind.remove("gone")
    assert behind.catalog.pending("gone") is None
    assert list(behind.journal.names()) == []  # type: ignore[union-attr]
    with pytest.raises(NotFound):
        behind.get("gone")
    assert behind.digest("gone") is False


def test_a_removed_attachment_is_not_digested(behind: BlobStore, big_ct: bytes) -> None:
    behind._digest_queue = queue.Queue()
    behind.put("racy", 1, big_ct)
    pending = behind.catalog.pending("racy")
    assert pending is not None
    data = behind._read_journal(pending)
    behind.remove("racy")  # Orthanc removes it while the digester holds its bytes
    with pytest.raises(NotFound):
        behind._put_parts("racy", 1, data, from_pending=True)
    assert behind.catalog.stats().attachments == 0


def test_a_tampered_journal_entry_fails_loudly(behind: BlobStore, big_ct: bytes) -> None:
    behind._digest_queue = queue.Queue()
    behind.put("t", 1, big_ct)
    path = behind.journal.root / "t"  # type: ignore[union-attr]
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 1
    path.write_bytes(bytes(raw))
    with pytest.raises(IntegrityError):
        behind.get("t")
    assert [u for u, _ in behind.check().damaged_attachments] == ["t"]


def test_same_uuid_twice_is_a_conflict_and_keeps_the_first(
    behind: BlobStore, big_ct: bytes
) -> None:
    behind._digest_queue = queue.Queue()
    behind.put("dup", 1, big_ct)
    with pytest.raises(Conflict):
        behind.put("dup", 1, big_ct[::-1])
    assert behind.get("dup") == big_ct


def test_read_zstd_gives_the_stored_frame_of_a_compressed_blob(
    store: BlobStore, big_ct: bytes
) -> None:
    store.put("a", CONTENT_DICOM, big_ct)
    record = max((r for r, _ in store.catalog.attachment_parts("a")[2]), key=lambda r: r.size)
    assert record.kind == "pixels" and record.flags & FLAG_ZSTD
    frame = store.read_zstd(record)
    assert frame is not None
    assert len(frame) < record.size
    decoder = zstandard.ZstdDecompressor().decompressobj(read_across_frames=True)
    assert decoder.decompress(frame) == store.read_blob(record)  # one frame, or two
    store.put("noise", 2, os.urandom(100_000))
    (noise, _length), *_ = store.catalog.attachment_parts("noise")[2]
    assert store.read_zstd(noise) is None  # stored uncompressed: the caller compresses
    path = store.hot.path(record.id.hex())
    damaged = bytearray(path.read_bytes())
    damaged[-20] ^= 0x01
    path.write_bytes(bytes(damaged))
    with pytest.raises(IntegrityError):
        store.read_zstd(record)  # the GCM tag still guards what is sent as stored
