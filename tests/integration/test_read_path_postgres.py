"""The WADO-RS read path's catalog queries on a real PostgreSQL catalog: the look-up built
once per institution (grants judged at execution) and the batched part queries."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from archive.blobstore import BlobStore
from archive.catalog import Catalog, SourceRecord
from archive.settings import StorageSettings
from query.api import instances_to_retrieve
from security.keys import KeyRing
from sharing.api import Grants
from synthetic import StudySpec, generate_study
from tests.catalogdb import migrated
from tests.integration import test_postgres
from tests.unit.conftest import dicom_bytes
from tests.unit.test_grants import STUDIES, A, C, rec
from tiering.fs import FileStore

pg_url = test_postgres.pg_url  # the throwaway cluster fixture (a cluster for this module)


@pytest.fixture
def cat(pg_url: str) -> Iterator[Catalog]:
    catalog = Catalog(migrated(pg_url))
    ids = {name: catalog.add_institution(name).id for name in (A, C)}
    records, sources = [], []
    for n, (study, (patient, issuer, owner)) in enumerate(STUDIES.items()):
        if owner in ids:
            records.append(rec(n, study, patient, issuer))
            sources.append(SourceRecord(f"1.2.3.{n}", ids[owner], "dimse", owner[:8]))
    catalog.index_batch(records, sources)
    yield catalog
    catalog.close()


def test_lookup_judges_grants_at_execution_on_postgresql(cat: Catalog) -> None:
    now = time.time()
    assert instances_to_retrieve(cat, C, "1.2.1.5", now=now) == []
    grant = Grants(cat.engine).add(
        grantor=A, grantee=C, study_uid="1.2.1.5", created_by="a", expires_at=now + 60
    )
    assert [i.attachment_uuid for i in instances_to_retrieve(cat, C, "1.2.1.5", now=now)] == [
        "att-4"
    ]
    assert instances_to_retrieve(cat, C, "1.2.1.5", now=now + 61) == []
    assert instances_to_retrieve(cat, A, "1.2.1.5", "1.2.1.5.9", "1.2.3.4", now=now)
    Grants(cat.engine).revoke(grant.id, by="a")
    assert instances_to_retrieve(cat, C, "1.2.1.5", now=now) == []


def test_batched_part_queries_on_postgresql(cat: Catalog, tmp_path: Path) -> None:
    small_ct = [
        dicom_bytes(ds) for ds in generate_study(StudySpec(series=1, slices=3, rows=64, columns=64))
    ]
    store = BlobStore(
        cat,
        KeyRing.open_or_create(tmp_path / "keys"),
        FileStore(tmp_path / "blobs", fsync=False),
        StorageSettings(fsync=False, inline_max_bytes=0),
    )
    for n, data in enumerate(small_ct):
        store.put(f"pg-{n}", 1, data)
    uuids = [f"pg-{n}" for n in range(len(small_ct))] + ["missing"]
    stored = store.stored_parts(uuids)
    assert set(stored) == set(uuids) - {"missing"}
    for uuid, parts in stored.items():
        assert [(p.start, p.end, p.blob) for p in parts] == [
            (p.start, p.end, p.blob) for p in store.parts(uuid)
        ]
        assert b"".join(store.read_part(p) for p in parts) == store.get(uuid)
    first = {u: parts[0].blob for u, parts in stored.items()}
    assert store.header_ids(uuids) == {u: b.id for u, b in first.items() if b is not None}
    assert len(first) == len(small_ct)
