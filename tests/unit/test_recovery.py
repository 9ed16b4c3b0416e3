"""Crash recovery and reconciliation with Orthanc's index (archive.recovery)."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import pytest

from archive.blobstore import CONTENT_DICOM, BlobStore
from archive.recovery import RecoveryReport, orthanc_attachment_uuids, recover
from security.errors import NotFound


def _orthanc_index(path: Path, uuids: list[str]) -> Path:
    """A stand-in for Orthanc's SQLite index: just the AttachedFiles table."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    try:
        conn.execute("CREATE TABLE AttachedFiles (id INTEGER, fileType INTEGER, uuid TEXT)")
        conn.executemany(
            "INSERT INTO AttachedFiles (id, fileType, uuid) VALUES (?, 1, ?)",
            list(enumerate(uuids)),
        )
        conn.commit()
    finally:
        conn.close()
    return path


def _stray_payload(store: BlobStore, key: str, age_seconds: float = 0.0) -> Path:
    path = store.hot.path(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"published, then killed before commit")
    if age_seconds:
        when = time.time() - age_seconds
        os.utime(path, (when, when))
    return path


def _staged(store: BlobStore) -> Path:
    staged = store.hot.stage(b"staged, then killed before publish", "dd" * 32)
    path = store.hot.root / "staging" / staged.token
    when = time.time() - 5
    os.utime(path, (when, when))
    return path


def test_orthanc_attachment_uuids(tmp_path: Path) -> None:
    index = _orthanc_index(tmp_path / "orthanc" / "index", ["a", "b", "b"])
    assert orthanc_attachment_uuids(index) == {"a", "b"}


def test_missing_index_is_none_not_empty(tmp_path: Path) -> None:
    missing = tmp_path / "orthanc" / "index"
    assert orthanc_attachment_uuids(missing) is None
    assert not missing.exists(), "looking must not create the index"


def test_unreadable_index_is_none(tmp_path: Path) -> None:
    not_orthanc = tmp_path / "index"
    sqlite3.connect(not_orthanc).close()  # a database without the table
    assert orthanc_attachment_uuids(not_orthanc) is None
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"this is not a database" * 100)
    assert orthanc_attachment_uuids(garbage) is None


def test_empty_orthanc_index_means_nothing_is_referenced(tmp_path: Path) -> None:
    assert orthanc_attachment_uuids(_orthanc_index(tmp_path / "index", [])) == set()


def test_index_path_with_uri_characters(tmp_path: Path) -> None:
    index = _orthanc_index(tmp_path / "orthanc#1" / "index", ["a"])
    assert orthanc_attachment_uuids(index) == {"a"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["orthanc#1"]


def test_recover_after_an_unclean_stop(store: BlobStore, small_ct: list[bytes]) -> None:
    for i, data in enumerate(small_ct):
        store.put(f"att-{i}", CONTENT_DICOM, data)
    index = _orthanc_index(store.hot.root.parent / "orthanc" / "index", ["att-0", "att-1"])
    staged = _staged(store)
    fresh_orphan = _stray_payload(store, "ab" * 32)
    old_orphan = _stray_payload(store, "cd" * 32, age_seconds=7200)
    since = time.time()

    report = recover(store, index, since)

    assert report == RecoveryReport(
        staged_published=0,
        staged_removed=1,
        orphan_payloads_removed=1,
        orphan_attachments_removed=2,
    )
    assert not staged.exists()
    assert not fresh_orphan.exists()
    # older than the interrupted run: left for `vna fsck` to report, never deleted blindly
    assert old_orphan.exists()
    for uuid in ("att-0", "att-1"):
        assert store.get(uuid) == small_ct[int(uuid[-1])]
    for uuid in ("att-2", "att-3"):
        with pytest.raises(NotFound):
            store.get(uuid)
    assert store.catalog.attachment_uuids() == {"att-0", "att-1"}
    # the dropped attachments' blobs are now unreferenced and go at the next collection
    assert store.collect(grace_seconds=0) == 4
    report = store.check(attachments=True)
    assert report.orphan_payloads == ["cd" * 32]
    assert not report.damaged_blobs
    assert not report.refcount_errors


def test_recover_keeps_everything_orthanc_references(
    store: BlobStore, small_ct: list[bytes]
) -> None:
    uuids = [f"att-{i}" for i in range(len(small_ct))]
    for uuid, data in zip(uuids, small_ct, strict=True):
        store.put(uuid, CONTENT_DICOM, data)
    index = _orthanc_index(store.hot.root.parent / "index", [*uuids, "unknown-to-us"])
    report = recover(store, index, time.time())
    assert report == RecoveryReport(0, 0, 0, 0)
    assert store.catalog.attachment_uuids() == set(uuids)
    assert store.check(attachments=True).ok


def test_recover_without_an_index_touches_no_attachment(
    store: BlobStore, small_ct: list[bytes]
) -> None:
    store.put("att-0", CONTENT_DICOM, small_ct[0])
    staged = _staged(store)
    orphan = _stray_payload(store, "ef" * 32)
    report = recover(store, store.hot.root.parent / "no-index-here", time.time())
    assert report == RecoveryReport(0, 1, 1, 0)
    assert not staged.exists()
    assert not orphan.exists()
    assert store.get("att-0") == small_ct[0]


def test_recover_with_an_unreadable_index_touches_no_attachment(
    store: BlobStore, small_ct: list[bytes], tmp_path: Path
) -> None:
    store.put("att-0", CONTENT_DICOM, small_ct[0])
    broken = tmp_path / "broken-index"
    broken.write_bytes(b"\x00" * 4096)
    assert recover(store, broken, time.time()).orphan_attachments_removed == 0
    assert store.get("att-0") == small_ct[0]


def test_recover_is_idempotent(store: BlobStore, small_ct: list[bytes]) -> None:
    store.put("att-0", CONTENT_DICOM, small_ct[0])
    store.put("att-1", CONTENT_DICOM, small_ct[1])
    index = _orthanc_index(store.hot.root.parent / "index", ["att-0"])
    assert recover(store, index, time.time()).orphan_attachments_removed == 1
    assert recover(store, index, time.time()) == RecoveryReport(0, 0, 0, 0)
    assert store.get("att-0") == small_ct[0]
