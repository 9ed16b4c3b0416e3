"""Grants and the access rule on a real PostgreSQL catalog (the scaled-out path).

The same rule as tests/unit/test_grants.py checks on SQLite: the correlated EXISTS, the
check constraints and the schema creation must hold on PostgreSQL too.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from archive.catalog import Catalog, SourceRecord
from query.api import may_store_reports
from security.errors import Conflict, Forbidden
from sharing.api import Grants
from tests.catalogdb import migrated
from tests.integration import test_postgres
from tests.unit.test_grants import STUDIES, A, B, C, rec, seen

pg_url = test_postgres.pg_url  # the throwaway cluster fixture (a cluster for this module)


@pytest.fixture
def cat(pg_url: str) -> Iterator[Catalog]:
    catalog = Catalog(migrated(pg_url))
    ids = {name: catalog.add_institution(name).id for name in (A, B, C)}
    records, sources = [], []
    for n, (study, (patient, issuer, owner)) in enumerate(STUDIES.items()):
        records.append(rec(n, study, patient, issuer))
        sources.append(SourceRecord(f"1.2.3.{n}", ids[owner], "dimse", owner[:8]))
    catalog.index_batch(records, sources)
    yield catalog
    catalog.close()


def test_grants_and_access_rule_on_postgresql(cat: Catalog) -> None:
    grants = Grants(cat.engine)
    assert seen(cat, A) == {"1.2.1.1", "1.2.1.2", "1.2.1.5"}
    assert seen(cat, C) == set()
    now = time.time()
    study = grants.add(
        grantor=A, grantee=C, study_uid="1.2.1.5", created_by="a", expires_at=now + 60
    )
    patient = grants.add(
        grantor=A,
        grantee=C,
        patient_id="P1",
        issuer=A,
        permission="read+report",
        created_by="a",
    )
    assert seen(cat, C, now) == {"1.2.1.1", "1.2.1.2", "1.2.1.5"}
    assert seen(cat, C, now + 61) == {"1.2.1.1", "1.2.1.2"}  # the study grant expired
    assert may_store_reports(cat.engine, "1.2.1.1", C)
    assert not may_store_reports(cat.engine, "1.2.1.5", C)  # read only
    with pytest.raises(Forbidden):
        grants.add(grantor=C, grantee=B, study_uid="1.2.1.1", created_by="c")
    with pytest.raises(Conflict):
        grants.add(grantor=A, grantee=C, study_uid="1.2.1.5", created_by="a")
    grants.revoke(patient.id, by="a")
    grants.revoke(study.id, by="a")
    assert seen(cat, C) == set()
    assert [g.id for g in grants.list(grantee=C)] == [study.id, patient.id]
