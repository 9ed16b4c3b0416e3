"""Grants and the access rule, against a real catalog on SQLite and on PostgreSQL (the
correlated EXISTS, the check constraints and the schema must hold on both)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from archive.catalog import Catalog, InstanceRecord, SourceRecord, studies
from query.api import may_store_reports, reachable
from security.errors import Conflict, Forbidden, InvalidInput, NotFound
from sharing.api import (
    Grants,
    Permission,
    parse_duration,
)

A, B, C = "Hospital A", "Hospital B", "Reading Centre"
# study -> (patient id, issuer, owner)
STUDIES = {
    "1.2.1.1": ("P1", A, A),
    "1.2.1.2": ("P1", A, A),  # the same patient's second study at A
    "1.2.1.3": ("P1", B, B),  # P1 from another issuer: another patient
    "1.2.1.4": ("P1", A, B),  # A's patient P1, but a study B owns (sent by B first)
    "1.2.1.5": ("P2", A, A),
}


def rec(n: int, study: str, patient: str, issuer: str) -> InstanceRecord:
    return InstanceRecord(
        sop_uid=f"1.2.3.{n}",
        series_uid=f"{study}.9",
        study_uid=study,
        patient_id=patient,
        issuer=issuer,
        modality="CT",
        attachment_uuid=f"att-{n}",
    )


@pytest.fixture
def cat(catalog_url: str) -> Iterator[Catalog]:
    catalog = Catalog(catalog_url, durable=False)
    ids = {name: catalog.add_institution(name).id for name in (A, B, C)}
    records, sources = [], []
    for n, (study, (patient, issuer, owner)) in enumerate(STUDIES.items()):
        records.append(rec(n, study, patient, issuer))
        sources.append(SourceRecord(f"1.2.3.{n}", ids[owner], "dimse", owner[:8]))
    catalog.index_batch(records, sources)
    yield catalog
    catalog.close()


@pytest.fixture
def grants(cat: Catalog) -> Grants:
    return Grants(cat.engine)


def seen(cat: Catalog, institution: str, now: float | None = None) -> set[str]:
    stmt = select(studies.c.study_uid).where(reachable(studies.c.study_uid, institution, now))
    with cat.engine.connect() as conn:
        return {str(r[0]) for r in conn.execute(stmt)}


def test_owner_sees_its_studies_others_do_not(cat: Catalog) -> None:
    assert seen(cat, A) == {"1.2.1.1", "1.2.1.2", "1.2.1.5"}
    assert seen(cat, B) == {"1.2.1.3", "1.2.1.4"}
    assert seen(cat, C) == set()
    assert seen(cat, "Nowhere") == set()


def test_study_grant_then_revoke(cat: Catalog, grants: Grants) -> None:
    grant = grants.add(grantor=A, grantee=C, study_uid="1.2.1.1", created_by="alice")
    assert grant.permission is Permission.READ and grant.level == "study"
    assert grant.active() and grant.created_by == "alice"
    assert seen(cat, C) == {"1.2.1.1"}
    assert seen(cat, B) == {"1.2.1.3", "1.2.1.4"}  # only the grantee gains
    assert not may_store_reports(cat.engine, "1.2.1.1", C)  # read only
    assert may_store_reports(cat.engine, "1.2.1.1", A)  # the owner may

    revoked = grants.revoke(grant.id, by="bob")
    assert revoked.revoked_by == "bob" and not revoked.active()
    assert seen(cat, C) == set()
    with pytest.raises(Conflict, match="already revoked"):
        grants.revoke(grant.id, by="bob")
    # revoked grants stay listed: the history of who could see what
    assert [g.id for g in grants.list(grantee=C)] == [grant.id]


def test_expired_grant_reaches_nothing(cat: Catalog, grants: Grants) -> None:
    now = time.time()
    grant = grants.add(
        grantor=A, grantee=C, study_uid="1.2.1.1", created_by="a", expires_at=now + 3600
    )
    assert seen(cat, C, now) == {"1.2.1.1"}
    assert seen(cat, C, now + 3601) == set()
    assert not grant.active(now + 3601)
    # an expired grant no longer blocks a new one for the same study
    again = grants.add(grantor=A, grantee=C, study_uid="1.2.1.1", created_by="a", now=now + 3601)
    assert again.id != grant.id


def test_patient_grant_covers_the_grantors_studies_of_that_patient_only(
    cat: Catalog, grants: Grants
) -> None:
    grant = grants.add(
        grantor=A,
        grantee=C,
        patient_id="P1",
        issuer=A,
        permission="read+report",
        created_by="a",
    )
    assert (grant.level, grant.patient_id, grant.issuer) == ("patient", "P1", A)
    # not 1.2.1.3 (P1 of issuer B), not 1.2.1.4 (A's P1 but owned by B), not P2
    assert seen(cat, C) == {"1.2.1.1", "1.2.1.2"}
    assert may_store_reports(cat.engine, "1.2.1.2", C)
    assert not may_store_reports(cat.engine, "1.2.1.4", C)
    assert not may_store_reports(cat.engine, "9.9.9", C)  # no such study
    grants.revoke(grant.id, by="a")
    assert seen(cat, C) == set()


def test_patient_grant_covers_studies_stored_later(cat: Catalog, grants: Grants) -> None:
    grants.add(grantor=A, grantee=C, patient_id="P2", issuer=A, created_by="a")
    assert seen(cat, C) == {"1.2.1.5"}
    a = cat.institution(A).id
    cat.index_batch([rec(50, "1.2.1.6", "P2", A)], [SourceRecord("1.2.3.50", a, "dimse", "A")])
    assert seen(cat, C) == {"1.2.1.5", "1.2.1.6"}


def test_grant_follows_current_ownership(cat: Catalog, grants: Grants) -> None:
    """A study deleted and sent again by another institution leaves the old grant inert."""
    grants.add(grantor=A, grantee=C, study_uid="1.2.1.1", created_by="a")
    with cat.engine.begin() as conn:
        conn.execute(
            studies.update()
            .where(studies.c.study_uid == "1.2.1.1")
            .values(owner_institution_id=cat.institution(B).id)
        )
    assert seen(cat, C) == set()


def test_only_the_owner_may_grant(cat: Catalog, grants: Grants) -> None:
    with pytest.raises(NotFound, match="no study"):  # B cannot see it: nothing to say
        grants.add(grantor=B, grantee=C, study_uid="1.2.1.1", created_by="b")
    with pytest.raises(NotFound, match="no study"):
        grants.add(grantor=A, grantee=C, study_uid="9.9.9", created_by="a")
    grants.add(grantor=A, grantee=C, study_uid="1.2.1.1", created_by="a")
    with pytest.raises(Forbidden, match="owns"):  # C sees it, but may not pass it on
        grants.add(grantor=C, grantee=B, study_uid="1.2.1.1", created_by="c")
    with pytest.raises(NotFound, match="owns no study"):  # P1 of issuer B is B's
        grants.add(grantor=A, grantee=C, patient_id="P1", issuer=B, created_by="a")


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"grantee": "Nowhere", "study_uid": "1.2.1.1"}, NotFound, "vna institution add"),
        ({"grantor": "Nowhere", "study_uid": "1.2.1.1"}, NotFound, "grantor"),
        ({"grantee": A, "study_uid": "1.2.1.1"}, InvalidInput, "itself"),
        ({"study_uid": "1.2.1.1", "permission": "write"}, InvalidInput, "not one of"),
        ({"study_uid": "1.2.1.1", "expires_at": 1.0}, InvalidInput, "past"),
        ({}, InvalidInput, "either"),
        ({"study_uid": "1.2.1.1", "patient_id": "P1", "issuer": A}, InvalidInput, "either"),
        ({"patient_id": "P1"}, InvalidInput, "issuer"),
    ],
)
def test_clear_errors(
    grants: Grants, kwargs: dict[str, object], error: type[Exception], words: str
) -> None:
    args: dict[str, object] = {"grantor": A, "grantee": C, "created_by": "a", **kwargs}
    with pytest.raises(error, match=words):
        grants.add(**args)  # type: ignore[arg-type]


def test_duplicate_active_grant_is_a_conflict(grants: Grants) -> None:
    first = grants.add(grantor=A, grantee=C, study_uid="1.2.1.1", created_by="a")
    with pytest.raises(Conflict, match=f"grant {first.id}"):
        grants.add(grantor=A, grantee=C, study_uid="1.2.1.1", created_by="a")
    grants.add(grantor=A, grantee=B, study_uid="1.2.1.1", created_by="a")  # another grantee


def test_revoke_checks_the_caller(grants: Grants) -> None:
    grant = grants.add(grantor=A, grantee=C, study_uid="1.2.1.1", created_by="a")
    with pytest.raises(Forbidden, match="grantor"):
        grants.revoke(grant.id, by="c", institution=C)
    with pytest.raises(NotFound):  # a third party learns nothing
        grants.revoke(grant.id, by="b", institution=B)
    with pytest.raises(NotFound):
        grants.revoke(grant.id + 100, by="a")
    assert grants.revoke(grant.id, by="a", institution=A).revoked_at is not None


def test_list_by_side(grants: Grants) -> None:
    g1 = grants.add(grantor=A, grantee=C, study_uid="1.2.1.1", created_by="a")
    g2 = grants.add(grantor=B, grantee=C, study_uid="1.2.1.3", created_by="b")
    g3 = grants.add(grantor=A, grantee=B, patient_id="P2", issuer=A, created_by="a")
    assert [g.id for g in grants.list()] == [g1.id, g2.id, g3.id]
    assert [g.id for g in grants.list(grantor=A)] == [g1.id, g3.id]
    assert [g.id for g in grants.list(grantee=C)] == [g1.id, g2.id]
    assert [g.id for g in grants.list(institution=B)] == [g2.id, g3.id]
    doc = g3.to_json()
    assert doc["level"] == "patient" and doc["patient_id"] == "P2" and doc["active"] is True
    assert doc["created_at"].endswith("Z") and doc["expires_at"] is None


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("90s", 90), ("30m", 1800), ("12h", 43200), ("7d", 604800)]
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0d", "-1d", "7 days", "1y", "d"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(InvalidInput):
        parse_duration(text)
