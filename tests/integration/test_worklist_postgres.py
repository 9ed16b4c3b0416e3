"""The reading worklist on a real PostgreSQL catalog (the scaled-out path): the status
conditions, the opening insert and the worklist search hold there as on SQLite
(tests/unit/test_worklist.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from archive.catalog import Catalog, InstanceRecord, SourceRecord
from dicomweb.qido.worklist import worklist_search
from query.api import record_opened, worklist_entries
from sharing.api import Grants, Status
from tests.catalogdb import migrated
from tests.integration import test_postgres
from tests.unit.test_worklist import STUDIES, A, B, C, listed, report

pg_url = test_postgres.pg_url  # the throwaway cluster fixture (a cluster for this module)


@pytest.fixture
def cat(pg_url: str) -> Iterator[Catalog]:
    catalog = Catalog(migrated(pg_url))
    ids = {name: catalog.add_institution(name).id for name in (A, B, C)}
    records, sources = [], []
    for n, (study, (patient, issuer, owner, date)) in enumerate(STUDIES.items()):
        records.append(
            InstanceRecord(
                sop_uid=f"1.2.3.{n}",
                series_uid=f"{study}.9",
                study_uid=study,
                patient_id=patient,
                issuer=issuer,
                modality="CT",
                study_date=date,
                attachment_uuid=f"att-{n}",
            )
        )
        sources.append(SourceRecord(f"1.2.3.{n}", ids[owner], "dimse", owner[:8]))
    catalog.index_batch(records, sources)
    yield catalog
    catalog.close()


def test_worklist_on_postgresql(cat: Catalog) -> None:
    grants = Grants(cat.engine)
    grants.add(grantor=A, grantee=C, patient_id="P1", issuer=A, created_by="t")
    grants.add(grantor=A, grantee=C, study_uid="1.2.1.3", created_by="t", permission="read+report")
    assert listed(cat, C) == {"1.2.1.1", "1.2.1.2", "1.2.1.3"}
    assert record_opened(cat.engine, C, "1.2.1.1", "reader") is True
    assert record_opened(cat.engine, C, "1.2.1.1", "reader") is False
    assert record_opened(cat.engine, C, "1.2.1.5", "reader") is False  # its own
    report(cat, C, "1.2.1.3", "1.2.9.1")
    assert listed(cat, C, Status.NEW) == {"1.2.1.2"}
    assert listed(cat, C, Status.OPENED) == {"1.2.1.1"}
    assert listed(cat, C, Status.REPORTED) == {"1.2.1.3"}
    entries = worklist_entries(cat.engine, C, ["1.2.1.1", "1.2.1.3", "1.2.1.4"])
    assert {u: e.status for u, e in entries.items()} == {
        "1.2.1.1": Status.OPENED,
        "1.2.1.3": Status.REPORTED,
    }
    results, _ = worklist_search(cat, [("status", "new,reported")], C, "http://gw", 10)
    assert [r["0020000D"]["Value"][0] for r in results] == ["1.2.1.2", "1.2.1.3"]
    assert [r["00091001"]["Value"][0] for r in results] == ["NEW", "REPORTED"]
