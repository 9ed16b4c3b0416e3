"""The catalog and blob store on a real PostgreSQL (the scaled-out path), each test on a
database of its own in the session's throwaway cluster (tests/conftest.py)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pydicom
import pytest

from archive.blobstore import BlobStore
from archive.catalog import Catalog, Sender
from archive.indexer import Indexer
from archive.settings import StorageSettings
from security.keys import KeyRing
from synthetic import StudySpec, write_study
from tests.clock import Clock
from tiering.fs import FileStore


@pytest.fixture
def store(pg_catalog: str, tmp_path: Path, clock: Clock) -> Iterator[BlobStore]:
    catalog = Catalog(pg_catalog)
    yield BlobStore(
        catalog,
        KeyRing.open_or_create(tmp_path / "keys"),
        FileStore(tmp_path / "blobs", fsync=False),
        StorageSettings(fsync=False),
        clock=clock,
    )
    catalog.close()


def test_store_read_dedup_and_collect_on_postgresql(
    store: BlobStore, tmp_path: Path, clock: Clock
) -> None:
    files = write_study(StudySpec(series=1, slices=4, rows=128, columns=128), tmp_path / "ct")
    datas = [p.read_bytes() for p in files]
    for i, data in enumerate(datas):
        store.put(f"a{i}", 1, data)
        store.put(f"b{i}", 1, data)  # a second copy: no new blob
    for i, data in enumerate(datas):
        assert store.get(f"a{i}") == data and store.get(f"b{i}") == data
    stats = store.catalog.stats()
    assert stats.attachments == 2 * len(datas)
    assert stats.unique_bytes == sum(len(d) for d in datas)
    assert store.check(attachments=True).ok
    for i in range(len(datas)):
        store.remove(f"a{i}")
        store.remove(f"b{i}")
    clock.advance(1)  # past the moment the blobs lost their last reference
    assert store.collect(grace_seconds=0) == stats.blobs
    assert store.catalog.stats().blobs == 0


def test_concurrent_writers_of_the_same_blob_on_postgresql(
    store: BlobStore, tmp_path: Path
) -> None:
    (path,) = write_study(StudySpec(series=1, slices=1, rows=128, columns=128), tmp_path / "c")
    data = path.read_bytes()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: store.put(f"u{i}", 1, data), range(8)))
    assert all(store.get(f"u{i}") == data for i in range(8))
    refcounts = {r.kind: r for r, _ in store.catalog.attachment_parts("u0")[2]}
    assert len(refcounts) >= 2
    assert store.catalog.refcount_mismatches() == []
    assert store.check().ok


def test_index_queue_and_ownership_on_postgresql(store: BlobStore, tmp_path: Path) -> None:
    files = write_study(StudySpec(series=1, slices=2, rows=64, columns=64), tmp_path / "i")
    a = store.catalog.add_institution("Hospital A", "HOSPA")
    for i, path in enumerate(files):
        store.put(f"x{i}", 1, path.read_bytes(), Sender(a.id, a.name, "HOSPA"))
    assert store.catalog.index_backlog() == len(files)
    assert Indexer(store.catalog).drain() == len(files)
    ds = pydicom.dcmread(files[0], stop_before_pixels=True)
    record = store.catalog.instance(str(ds.SOPInstanceUID))
    assert record is not None and record.issuer == "Hospital A"
    assert store.catalog.sources_of(str(ds.SOPInstanceUID)) == [("Hospital A", "dimse", "HOSPA")]


def test_parallel_first_stores_of_a_study_have_one_owner_on_postgresql(
    store: BlobStore, pg_catalog: str
) -> None:
    """Two catalogs (the plugin's and the gateway's) claim the first instance of each of 20
    new studies at the same moment: ON CONFLICT DO NOTHING lets exactly one win."""
    other = Catalog(pg_catalog)
    catalogs = [store.catalog, other]
    try:
        ids = [store.catalog.add_institution(name).id for name in ("Hospital A", "Hospital B")]
        for n in range(20):
            study = f"1.2.840.99.{n}"
            start = threading.Barrier(2)
            outcome: dict[int, str | None] = {}

            def claim(
                i: int,
                study: str = study,
                start: threading.Barrier = start,
                outcome: dict[int, str | None] = outcome,
            ) -> None:
                start.wait()
                outcome[i] = catalogs[i].claim(study, f"{study}.{i}", ids[i], lambda c, u: False)

            threads = [threading.Thread(target=claim, args=(i,)) for i in (0, 1)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
            assert sorted(outcome.values(), key=str) == [None, "study"]
    finally:
        other.close()
