"""The C-STORE write path's shortcuts keep the store's guarantees (archive.blobstore, tiering.fs).

A lone store hashes its pixel data on a helper thread while it compresses them; these tests
check that this names, compresses and stores exactly what the one-thread path does, that a
recognised re-send compresses nothing, and that a failure leaves nothing behind.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
import zstandard
from sqlalchemy import text

from archive.blobstore import CONTENT_DICOM, CONTENT_DICOM_UNTIL_PIXEL_DATA, FLAG_ZSTD, BlobStore
from archive.catalog import Catalog
from archive.settings import StorageSettings
from archive.split import pixel_data_offset, split_dicom
from security.keys import KeyRing
from tests.catalogdb import migrated
from tiering.fs import FileStore


class _CountingCompressor:
    """A zstd compressor that counts its calls and can be told to fail."""

    def __init__(self, inner: zstandard.ZstdCompressor, fail: bool = False) -> None:
        self.inner = inner
        self.fail = fail
        self.calls: list[tuple[int, str]] = []

    def compress(self, data: Any) -> bytes:
        self.calls.append((len(data), threading.current_thread().name))
        if self.fail:
            raise zstandard.ZstdError("compression failed (test)")
        return self.inner.compress(data)


def _store(tmp_path: Path, name: str, keys: KeyRing, overlap: bool) -> BlobStore:
    catalog = Catalog(migrated(f"sqlite:///{tmp_path / name}.db"))
    hot = FileStore(tmp_path / f"{name}-blobs", fsync=False)
    settings = StorageSettings(fsync=False, overlap_hash_and_compress=overlap)
    return BlobStore(catalog, keys, hot, settings)


def _counting(store: BlobStore, fail: bool = False) -> _CountingCompressor:
    counter = _CountingCompressor(zstandard.ZstdCompressor(level=store.settings.zstd_level), fail)
    store._compressor = lambda: counter  # type: ignore[method-assign]
    return counter


def _helper_threads() -> int:
    return sum(t.name.startswith("vna-hash") for t in threading.enumerate())


def _blob_rows(store: BlobStore) -> dict[bytes, tuple[int, int, str]]:
    with store.catalog.engine.connect() as conn:
        rows = conn.execute(text("SELECT id, size, flags, kind FROM blobs")).all()
    return {bytes(r[0]): (int(r[1]), int(r[2]), str(r[3])) for r in rows}


@pytest.fixture()
def keys(tmp_path: Path) -> KeyRing:
    # the overlap only applies where naming costs what compressing does: BLAKE2b homes
    return KeyRing.open_or_create(tmp_path / "keys", "blake2b")


def test_a_blake3_home_compresses_a_lone_store_on_two_cores(tmp_path: Path, big_ct: bytes) -> None:
    keys = KeyRing.open_or_create(tmp_path / "k3")
    serial = _store(tmp_path, "serial3", keys, overlap=False)
    store = _store(tmp_path, "blake3", keys, overlap=True)
    serial.put("a", CONTENT_DICOM, big_ct)
    helpers = _helper_threads()
    store.put("a", CONTENT_DICOM, big_ct)
    assert _helper_threads() == helpers + 1  # half of the pixel data compressed there
    # the same names, the same digest; the pixel payload is two zstd frames
    assert store.catalog.attachment_parts("a")[1] == serial.catalog.attachment_parts("a")[1]
    assert _blob_rows(store).keys() == _blob_rows(serial).keys()
    (pixels,) = [r for r, _ in store.catalog.attachment_parts("a")[2] if r.kind == "pixels"]
    assert pixels.flags & FLAG_ZSTD
    frame = store.read_zstd(pixels)
    assert frame is not None
    assert zstandard.frame_content_size(frame) < pixels.size  # the first of two frames
    assert store.get("a") == big_ct
    assert store.check(attachments=True).ok


def test_overlapped_store_names_and_stores_what_the_serial_path_does(
    tmp_path: Path, keys: KeyRing, big_ct: bytes
) -> None:
    serial = _store(tmp_path, "serial", keys, overlap=False)
    overlapped = _store(tmp_path, "overlapped", keys, overlap=True)
    serial.put("a", CONTENT_DICOM, big_ct)
    counter = _counting(overlapped)
    helpers = _helper_threads()
    overlapped.put("a", CONTENT_DICOM, big_ct)
    assert _helper_threads() == helpers + 1  # the pixel data were hashed on the helper

    assert overlapped.get("a") == big_ct
    overlapped.verify_attachment("a")
    assert overlapped.catalog.attachment_parts("a")[1] == serial.catalog.attachment_parts("a")[1]
    rows = _blob_rows(overlapped)
    assert rows == _blob_rows(serial)
    spans = split_dicom(big_ct)
    assert [s.kind for s in spans] == ["header", "pixels"]
    assert all(flags & FLAG_ZSTD for _size, flags, _kind in rows.values())
    # each part compressed once: the pixel data ahead of the lookup, the header after it
    assert sorted(size for size, _thread in counter.calls) == sorted(s.end - s.start for s in spans)
    assert overlapped.check(attachments=True).ok


def test_a_resent_file_compresses_nothing_once_the_guess_has_turned(
    tmp_path: Path, keys: KeyRing, big_ct: bytes
) -> None:
    store = _store(tmp_path, "resend", keys, overlap=True)
    store.put("first", CONTENT_DICOM, big_ct)
    counter = _counting(store)
    # the store guesses from the last file (new pixel data): one speculative compression
    store.put("again", CONTENT_DICOM, big_ct)
    assert [size for size, _thread in counter.calls] == [
        s.end - s.start for s in split_dicom(big_ct) if s.kind == "pixels"
    ]
    counter.calls.clear()
    store.put("and-again", CONTENT_DICOM, big_ct)
    offset = pixel_data_offset(big_ct)
    assert offset is not None
    store.put("until-pixels", CONTENT_DICOM_UNTIL_PIXEL_DATA, big_ct[:offset])
    assert counter.calls == []
    assert store.get("again") == big_ct
    assert store.get("and-again") == big_ct
    assert store.catalog.stats().blobs == 2
    assert list((store.hot.root / "staging").iterdir()) == []


def test_a_failed_overlapped_store_leaves_nothing(
    tmp_path: Path, keys: KeyRing, big_ct: bytes
) -> None:
    store = _store(tmp_path, "failing", keys, overlap=True)
    counter = _counting(store, fail=True)
    with pytest.raises(zstandard.ZstdError):
        store.put("doomed", CONTENT_DICOM, big_ct)
    assert counter.calls  # the overlapped path was taken
    assert store.catalog.stats().attachments == 0
    assert store.catalog.stats().blobs == 0
    assert list(store.hot.iter_keys()) == []
    assert list((store.hot.root / "staging").iterdir()) == []
    # the helper is free again: the next store goes through
    counter.fail = False
    store.put("fine", CONTENT_DICOM, big_ct)
    assert store.get("fine") == big_ct


def test_concurrent_stores_all_come_back(tmp_path: Path, keys: KeyRing, big_ct: bytes) -> None:
    store = _store(tmp_path, "concurrent", keys, overlap=True)
    errors: list[BaseException] = []

    def put(i: int) -> None:
        try:
            # the same pixels under 8 uuids, half of them racing for the first copy
            store.put(f"u{i}", CONTENT_DICOM, big_ct)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=put, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    for i in range(8):
        assert store.get(f"u{i}") == big_ct
    assert store.catalog.stats().blobs == 2
    assert store.check(attachments=True).ok


def test_staging_makes_the_payload_directory(tmp_path: Path) -> None:
    """The directory is made when a payload is staged, so publishing is one rename."""
    hot = FileStore(tmp_path / "blobs", fsync=False)
    key = "ab" * 32
    staged = hot.stage(b"payload", key)
    assert hot.path(key).parent.is_dir()
    assert not hot.exists(key)
    hot.publish(staged)
    assert hot.get(key) == b"payload"


def test_orthancs_header_copy_takes_a_reference_or_stores_its_blob(
    tmp_path: Path, keys: KeyRing, big_ct: bytes
) -> None:
    offset = pixel_data_offset(big_ct)
    assert offset is not None
    header = big_ct[:offset]
    store = _store(tmp_path, "header", keys, overlap=True)
    # alone (no DICOM file stored before): its blob is made
    store.put("h0", CONTENT_DICOM_UNTIL_PIXEL_DATA, header)
    assert store.get("h0") == header
    store.put("file", CONTENT_DICOM, big_ct)
    store.put("h1", CONTENT_DICOM_UNTIL_PIXEL_DATA, header)
    assert store.get("h1") == header
    rows = _blob_rows(store)
    assert sorted(kind for _size, _flags, kind in rows.values()) == ["header", "pixels"]
    with store.catalog.engine.connect() as conn:
        refcounts = dict(conn.execute(text("SELECT kind, refcount FROM blobs")).all())
    assert refcounts == {"header": 3, "pixels": 1}
    store.remove("h0")
    store.remove("file")
    assert store.get("h1") == header
    assert store.check(attachments=True).ok
