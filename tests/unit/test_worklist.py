"""The reading worklist (query.worklist, sharing.worklist, dicomweb.qido.worklist) against a
real SQLite catalog, and a report stored back by a reading centre joining the study's
existing patient."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pydicom
import pytest
from sqlalchemy import func, select

from archive.catalog import Catalog, InstanceRecord, SourceRecord, patients, studies
from archive.indexer import Indexer
from archive.plugin import ArchivePlugin
from dicomweb.qido.worklist import (
    OPENING,
    PRIVATE_CREATOR,
    STATUS_TAG,
    OpenedStudies,
    private_block,
    worklist_search,
)
from dicomweb.stow.store import Outcome, inspect_part
from query.api import WorklistEntry, on_worklist, reachable, record_opened, worklist_entries
from security.errors import InvalidInput
from sharing.api import (
    Grants,
    Permission,
    Status,
    parse_statuses,
)
from synthetic import StudySpec, generate_study
from tests.report_sr import measurement_report, part10
from tests.unit.support import orthanc_c_store, rest_store, stow_part

A, B, C = "Hospital A", "Hospital B", "Reading Centre"
# study -> (patient id, issuer, owner, date)
STUDIES = {
    "1.2.1.1": ("P1", A, A, "20240101"),
    "1.2.1.2": ("P1", A, A, "20240102"),  # the same patient's second study at A
    "1.2.1.3": ("P2", A, A, "20240103"),
    "1.2.1.4": ("P9", B, B, "20240104"),  # B's
    "1.2.1.5": ("P7", C, C, "20240105"),  # the reading centre's own study
}


@pytest.fixture
def cat(catalog_url: str) -> Iterator[Catalog]:
    catalog = Catalog(catalog_url, durable=False)
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
                patient_name=f"Doe^{patient}",
                attachment_uuid=f"att-{n}",
            )
        )
        sources.append(SourceRecord(f"1.2.3.{n}", ids[owner], "dimse", owner[:8]))
    catalog.index_batch(records, sources)
    yield catalog
    catalog.close()


@pytest.fixture
def grants(cat: Catalog) -> Grants:
    return Grants(cat.engine)


def listed(cat: Catalog, institution: str, *statuses: Status, now: float | None = None) -> set[str]:
    stmt = select(studies.c.study_uid).where(
        on_worklist(studies.c.study_uid, institution, now, statuses)
    )
    with cat.engine.connect() as conn:
        return {str(r[0]) for r in conn.execute(stmt)}


def report(cat: Catalog, institution: str, study: str, sop: str) -> None:
    """``institution`` stores an instance (its report) into ``study``."""
    cat.index_batch(
        [
            InstanceRecord(
                sop_uid=sop,
                series_uid=f"{study}.99",
                study_uid=study,
                patient_id="P1",
                issuer=institution,
                modality="SR",
            )
        ],
        [SourceRecord(sop, cat.institution(institution).id, "stow", "reader")],
    )


def test_only_studies_granted_to_the_institution_are_listed(cat: Catalog, grants: Grants) -> None:
    assert listed(cat, C) == set()
    grants.add(grantor=A, grantee=C, study_uid="1.2.1.3", created_by="t")
    grants.add(grantor=A, grantee=C, patient_id="P1", issuer=A, created_by="t")
    grants.add(grantor=B, grantee=A, study_uid="1.2.1.4", created_by="t")
    # both studies of A's patient P1 and the single study; never C's own study
    assert listed(cat, C) == {"1.2.1.1", "1.2.1.2", "1.2.1.3"}
    assert listed(cat, A) == {"1.2.1.4"}
    assert listed(cat, B) == set()


def test_revoked_and_expired_grants_leave_the_list(cat: Catalog, grants: Grants) -> None:
    now = time.time()
    kept = grants.add(grantor=A, grantee=C, study_uid="1.2.1.1", created_by="t")
    grants.add(grantor=A, grantee=C, study_uid="1.2.1.2", created_by="t", expires_at=now + 60)
    assert listed(cat, C, now=now) == {"1.2.1.1", "1.2.1.2"}
    assert listed(cat, C, now=now + 120) == {"1.2.1.1"}
    grants.revoke(kept.id, by="t")
    assert listed(cat, C, now=now) == {"1.2.1.2"}


def test_status_goes_new_opened_reported(cat: Catalog, grants: Grants) -> None:
    grants.add(grantor=A, grantee=C, patient_id="P1", issuer=A, created_by="t")
    grants.add(grantor=A, grantee=C, study_uid="1.2.1.3", created_by="t")
    assert listed(cat, C, Status.NEW) == {"1.2.1.1", "1.2.1.2", "1.2.1.3"}
    assert listed(cat, C, Status.OPENED, Status.REPORTED) == set()

    assert record_opened(cat.engine, C, "1.2.1.1", "reader") is True
    assert record_opened(cat.engine, C, "1.2.1.1", "reader") is False  # once
    report(cat, C, "1.2.1.2", "1.2.9.1")  # reported without being opened here first

    assert listed(cat, C, Status.NEW) == {"1.2.1.3"}
    assert listed(cat, C, Status.OPENED) == {"1.2.1.1"}
    assert listed(cat, C, Status.REPORTED) == {"1.2.1.2"}
    assert listed(cat, C, Status.NEW, Status.REPORTED) == {"1.2.1.2", "1.2.1.3"}
    record_opened(cat.engine, C, "1.2.1.2", "reader")
    assert listed(cat, C, Status.REPORTED) == {"1.2.1.2"}  # reported wins over opened

    entries = worklist_entries(cat.engine, C, ["1.2.1.1", "1.2.1.2", "1.2.1.3", "1.2.1.4"])
    assert {uid: e.status for uid, e in entries.items()} == {
        "1.2.1.1": Status.OPENED,
        "1.2.1.2": Status.REPORTED,
        "1.2.1.3": Status.NEW,
    }
    assert entries["1.2.1.1"].opened_at is not None and entries["1.2.1.3"].opened_at is None


def test_another_institutions_report_does_not_count(cat: Catalog, grants: Grants) -> None:
    grants.add(grantor=A, grantee=C, study_uid="1.2.1.1", created_by="t")
    grants.add(grantor=A, grantee=B, study_uid="1.2.1.1", created_by="t")
    report(cat, B, "1.2.1.1", "1.2.9.2")
    assert listed(cat, B, Status.REPORTED) == {"1.2.1.1"}
    assert listed(cat, C, Status.NEW) == {"1.2.1.1"}


def test_opening_is_recorded_for_granted_studies_only(cat: Catalog, grants: Grants) -> None:
    grants.add(grantor=A, grantee=C, study_uid="1.2.1.1", created_by="t")
    assert record_opened(cat.engine, A, "1.2.1.1", "owner") is False  # its own study
    assert record_opened(cat.engine, C, "1.2.1.5", "reader") is False  # its own study
    assert record_opened(cat.engine, C, "1.2.1.3", "reader") is False  # not granted
    assert record_opened(cat.engine, C, "9.9.9", "reader") is False  # no such study
    assert record_opened(cat.engine, "Nowhere", "1.2.1.1", "x") is False
    with cat.engine.connect() as conn:
        assert conn.exec_driver_sql("select count(*) from worklist_opened").scalar() == 0
    assert record_opened(cat.engine, C, "1.2.1.1", "reader") is True
    with cat.engine.connect() as conn:
        rows = conn.exec_driver_sql("select study_uid, opened_by from worklist_opened").all()
    assert [tuple(r) for r in rows] == [("1.2.1.1", "reader")]


def test_an_entry_merges_the_grants_covering_a_study(cat: Catalog, grants: Grants) -> None:
    now = time.time()
    first = grants.add(
        grantor=A, grantee=C, study_uid="1.2.1.1", created_by="t", expires_at=now + 60, now=now
    )
    grants.add(
        grantor=A,
        grantee=C,
        patient_id="P1",
        issuer=A,
        created_by="t",
        permission="read+report",
        now=now + 1,
    )
    entry = worklist_entries(cat.engine, C, ["1.2.1.1"], now=now + 2)["1.2.1.1"]
    assert entry.permission == Permission.READ_REPORT
    assert entry.granted_at == first.created_at
    assert entry.expires_at is None  # the patient grant does not expire
    assert entry.grantor == A
    only_study = worklist_entries(cat.engine, C, ["1.2.1.2"], now=now + 2)["1.2.1.2"]
    assert only_study.permission == Permission.READ_REPORT


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([], set()),
        (["new"], {Status.NEW}),
        (["NEW,Opened"], {Status.NEW, Status.OPENED}),
        (["reported\\new", ""], {Status.REPORTED, Status.NEW}),
        (["opened", "reported"], {Status.OPENED, Status.REPORTED}),
    ],
)
def test_status_parameters(values: list[str], expected: set[Status]) -> None:
    assert parse_statuses(values) == expected


def test_an_unknown_status_is_invalid_input() -> None:
    with pytest.raises(InvalidInput, match="new, opened, reported"):
        parse_statuses(["done"])


# --------------------------------------------------------------------- the QIDO face


def test_the_worklist_search_is_a_qido_study_search(cat: Catalog, grants: Grants) -> None:
    grants.add(grantor=A, grantee=C, patient_id="P1", issuer=A, created_by="t")
    grants.add(grantor=A, grantee=C, study_uid="1.2.1.3", created_by="t", permission="read+report")
    record_opened(cat.engine, C, "1.2.1.2", "reader")
    root = "http://gw/dicom-web"

    def uids(params: list[tuple[str, str]]) -> list[str]:
        results, _ignored = worklist_search(cat, params, C, root, 100)
        return [r["0020000D"]["Value"][0] for r in results]

    assert uids([]) == ["1.2.1.1", "1.2.1.2", "1.2.1.3"]  # QIDO's study order (date, uid)
    assert uids([("status", "new")]) == ["1.2.1.1", "1.2.1.3"]
    assert uids([("Status", "opened")]) == ["1.2.1.2"]
    assert uids([("status", "reported")]) == []
    # the normal QIDO parameters: matching, ranges, paging
    assert uids([("PatientID", "P1")]) == ["1.2.1.1", "1.2.1.2"]
    assert uids([("PatientName", "doe^p*")]) == ["1.2.1.1", "1.2.1.2", "1.2.1.3"]
    assert uids([("StudyDate", "20240102-")]) == ["1.2.1.2", "1.2.1.3"]
    assert uids([("limit", "1"), ("offset", "1")]) == ["1.2.1.2"]
    # attributes a QIDO-RS search reads from the headers are named as ignored here
    _results, ignored = worklist_search(cat, [("includefield", "InstitutionName")], C, root, 100)
    assert ignored == ("00080080",)
    assert uids([("status", "new"), ("limit", "1"), ("offset", "1")]) == ["1.2.1.3"]
    assert uids([("StudyInstanceUID", "1.2.1.5")]) == []  # C's own study is not on it
    with pytest.raises(InvalidInput):
        uids([("status", "read")])
    with pytest.raises(InvalidInput):
        uids([("NoSuchAttribute", "1")])

    results, _ = worklist_search(cat, [("includefield", "all")], C, root, 100)
    last = pydicom.Dataset.from_json(json.dumps(results[-1]))
    assert last.StudyInstanceUID == "1.2.1.3" and last.PatientID == "P2"
    assert last.RetrieveURL == f"{root}/studies/1.2.1.3"
    assert last[0x00090010].value == PRIVATE_CREATOR
    block = last.private_block(0x0009, PRIVATE_CREATOR)
    assert block[0x01].value == "NEW"
    assert block[0x02].value == A
    assert block[0x03].value == "READ_REPORT"
    assert len(block[0x04].value) == 19 and not block[0x06].value  # granted; never opened
    opened = pydicom.Dataset.from_json(json.dumps(results[1]))
    assert opened.private_block(0x0009, PRIVATE_CREATOR)[0x01].value == "OPENED"


def test_private_block_elements() -> None:
    entry = WorklistEntry("1.2", Status.REPORTED, A, Permission.READ, 0.0, None, 86400.0)
    block = private_block(entry)
    assert block[STATUS_TAG] == {"vr": "CS", "Value": ["REPORTED"]}
    assert block["00091003"] == {"vr": "CS", "Value": ["READ"]}
    assert block["00091004"] == {"vr": "DT", "Value": ["19700101000000+0000"]}
    assert block["00091005"] == {"vr": "DT"}
    assert block["00091006"] == {"vr": "DT", "Value": ["19700102000000+0000"]}


def test_opening_retrievals_and_the_memo() -> None:
    assert {"instances", "metadata", "frames", "bulkdata"} <= OPENING
    assert "rendered" not in OPENING  # thumbnails in a study list do not open a study
    memo = OpenedStudies(capacity=2)
    memo.add((C, "1"))
    memo.add((C, "2"))
    assert (C, "1") in memo and (C, "2") in memo
    memo.add((C, "3"))  # full: starts afresh
    assert (C, "3") in memo and (C, "1") not in memo


# --------------------------------------------------------------------- reports back


def test_a_stored_report_joins_the_studys_existing_patient(
    plugin: ArchivePlugin,  # noqa: F811
) -> None:
    """The reading centre's SR has no IssuerOfPatientID: the indexer qualifies a STOW store
    by the storing institution, which must not file the study under a second patient."""
    catalog = plugin.catalog
    catalog.add_institution(A, "HOSPA")
    centre = catalog.add_institution(C)
    images = list(
        generate_study(StudySpec(series=1, slices=2, rows=32, columns=32, patient_id="RPT1"))
    )
    for i, ds in enumerate(images):
        orthanc_c_store(plugin.sdk, f"att-img-{i}", part10(ds), "HOSPA")
    Indexer(catalog).drain()
    study_uid = str(images[0].StudyInstanceUID)

    def study_row() -> tuple[int, int]:
        with catalog.engine.connect() as conn:
            row = conn.execute(
                select(studies.c.patient_pk, studies.c.owner_institution_id).where(
                    studies.c.study_uid == study_uid
                )
            ).one()
        return int(row[0]), int(row[1])

    before = study_row()
    Grants(catalog.engine).add(
        grantor=A, grantee=C, study_uid=study_uid, created_by="t", permission="read+report"
    )

    sr = measurement_report(images)
    assert "IssuerOfPatientID" not in sr
    checked = inspect_part(stow_part(part10(sr)))
    assert not isinstance(checked, Outcome)
    catalog.announce_source(checked.orthanc_id, centre.id, "stow", "reader", "10.0.0.9")
    rest_store(plugin, "att-sr", part10(sr))
    Indexer(catalog).drain()

    assert study_row() == before  # same patient row, same owner
    with catalog.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(patients)).scalar() == 1
        issuers = [r[0] for r in conn.execute(select(patients.c.issuer))]
    assert issuers == [A]
    stored = catalog.instance(str(sr.SOPInstanceUID))
    assert stored is not None and (stored.study_uid, stored.issuer) == (study_uid, A)
    assert stored.modality == "SR"
    assert catalog.sources_of(str(sr.SOPInstanceUID)) == [(C, "stow", "reader")]
    entry = worklist_entries(catalog.engine, C, [study_uid])[study_uid]
    assert entry.status == Status.REPORTED
    # a patient-level grant still names the patient by the owner's id and issuer, and
    # covers the study with its report
    catalog.add_institution(B)
    Grants(catalog.engine).add(grantor=A, grantee=B, patient_id="RPT1", issuer=A, created_by="t")
    with catalog.engine.connect() as conn:
        seen = conn.execute(select(func.count()).where(reachable(studies.c.study_uid, B))).scalar()
    assert seen == 1
