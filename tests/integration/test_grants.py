"""Grants against a real archive and gateway: B cannot reach A's study until A grants it
(over the REST API or with `vna grant add`), and cannot again once A revokes it; every
change and refusal is in the audit log, whose chain stays intact.

The archive is this module's own: other modules' tests tamper with the shared one's audit
log on purpose.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient

from security.issuer import EmbeddedIssuer
from synthetic import StudySpec, write_study
from tests.integration.harness import INSTITUTIONS, Archive, gateway_process, wait_until

A, B = "Hospital A", "Hospital B"
MAIN = StudySpec(series=2, slices=2, rows=32, columns=32, patient_id="GR0001", seed=41)
# one patient of A's (ids issued by HOSPA-MRN) with two studies, and the same patient id
# sent by A without an issuer, which makes it another patient (issuer "Hospital A")
PATIENT = dict(series=1, slices=2, rows=32, columns=32, patient_id="GR0002")
SPECS = {
    "main": MAIN,
    "p1": StudySpec(**PATIENT, issuer="HOSPA-MRN", seed=42),  # type: ignore[arg-type]
    "p2": StudySpec(**PATIENT, issuer="HOSPA-MRN", seed=43),  # type: ignore[arg-type]
    "other": StudySpec(**PATIENT, seed=44),  # type: ignore[arg-type]
}


@dataclass
class Setup:
    archive: Archive
    url: str
    issuer: EmbeddedIssuer
    studies: dict[str, str]  # SPECS key -> study UID
    files: dict[str, list[Path]]

    @property
    def root(self) -> str:
        return f"{self.url}/dicom-web"

    def headers(self, institution: str, *scopes: str) -> dict[str, str]:
        token = self.issuer.mint(
            subject=f"client-{institution}",
            institution=institution,
            scopes=scopes or ("dicom.read",),
        )
        return {"Authorization": f"Bearer {token}"}

    def client(self, institution: str) -> DICOMwebClient:
        return DICOMwebClient(url=self.root, headers=self.headers(institution))


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    archive = Archive(tmp_path_factory.mktemp("vna-grants"))
    archive.write_config(INSTITUTIONS)
    archive.up()
    try:
        with gateway_process(archive, "grants") as (url, _log):
            issuer = EmbeddedIssuer.open_or_create(archive.home / "keys", url, f"{url}/dicom-web")
            studies, files = {}, {}
            for key, spec in SPECS.items():
                files[key] = write_study(spec, tmp_path_factory.mktemp(f"grants-{key}"))
                sent = archive.storescu("HOSPA", *files[key])
                assert sent.returncode == 0, sent.stderr
                studies[key] = str(pydicom.dcmread(files[key][0]).StudyInstanceUID)
            s = Setup(archive, url, issuer, studies, files)
            total = sum(spec.series * spec.slices for spec in SPECS.values())

            def indexed() -> bool:
                answer = requests.get(f"{s.root}/instances", headers=s.headers(A), timeout=10)
                return answer.ok and len(answer.json()) == total

            wait_until(indexed, "the catalog to index the studies")
            yield s
    finally:
        archive.down()


def _urls(s: Setup, key: str) -> list[str]:
    """WADO-RS retrieve and metadata URLs of a study, one of its series and instances."""
    ds = pydicom.dcmread(s.files[key][0], stop_before_pixels=True)
    study = f"{s.root}/studies/{s.studies[key]}"
    series = f"{study}/series/{ds.SeriesInstanceUID}"
    instance = f"{series}/instances/{ds.SOPInstanceUID}"
    return [study, series, instance] + [f"{u}/metadata" for u in (study, series, instance)]


def _reaches(s: Setup, institution: str, key: str) -> bool:
    """Whether ``institution`` reaches the study through every endpoint (all or none)."""
    uid = s.studies[key]
    headers = s.headers(institution)
    client = s.client(institution)
    answers = [
        bool(client.search_for_studies(search_filters={"StudyInstanceUID": uid})),
        bool(client.search_for_series(study_instance_uid=uid)),
        bool(client.search_for_instances(study_instance_uid=uid)),
    ]
    for url in _urls(s, key):
        status = requests.get(url, headers=headers, timeout=60).status_code
        assert status in (200, 404), url
        answers.append(status == 200)
    assert len(set(answers)) == 1, f"endpoints disagree for {institution}: {answers}"
    return answers[0]


def _audit(s: Setup) -> list[dict[str, Any]]:
    db = sqlite3.connect(s.archive.home / "catalog.db")
    try:
        rows = db.execute("SELECT body FROM audit_events ORDER BY seq").fetchall()
    finally:
        db.close()
    return [json.loads(r[0]) for r in rows]


def _grant_events(s: Setup, since: int) -> list[tuple[str, int, str | None]]:
    return [
        (e["event"], e["outcome"], e["institution"])
        for e in _audit(s)[since:]
        if e["event"].startswith("grant-")
    ]


def test_grant_over_the_api_then_revoke(setup: Setup) -> None:
    s = setup
    api = f"{s.url}/api/grants"
    before = len(_audit(s))
    assert _reaches(s, A, "main")
    assert not _reaches(s, B, "main")

    # the share scope is needed, and B cannot grant what it does not own (404, as unknown)
    body = {"study_uid": s.studies["main"], "grantee": B, "expires_in": "1d"}
    refused = requests.post(api, json=body, headers=s.headers(A), timeout=30)
    assert refused.status_code == 403 and refused.json()["error"] == "insufficient_scope"
    refused = requests.post(
        api, json={**body, "grantee": A}, headers=s.headers(B, "share"), timeout=30
    )
    assert refused.status_code == 404 and refused.json()["error"] == "not_found"
    assert not _reaches(s, B, "main")

    answer = requests.post(api, json=body, headers=s.headers(A, "share"), timeout=30)
    assert answer.status_code == 201, answer.text
    grant = answer.json()
    assert answer.headers["Location"] == f"/api/grants/{grant['id']}"
    assert (grant["grantor"], grant["grantee"], grant["permission"]) == (A, B, "read")
    assert grant["active"] and grant["expires_at"] is not None

    assert _reaches(s, B, "main")
    assert not _reaches(s, B, "p1")  # only that study
    got = s.client(B).retrieve_study(s.studies["main"])
    assert sorted(str(d.SOPInstanceUID) for d in got) == sorted(
        str(pydicom.dcmread(p).SOPInstanceUID) for p in s.files["main"]
    )
    again = requests.post(api, json=body, headers=s.headers(A, "share"), timeout=30)
    assert again.status_code == 409 and f"grant {grant['id']}" in again.json()["message"]

    # the active ones: other tests of this module may have made (and revoked) grants before
    given = requests.get(api, headers=s.headers(A, "admin"), timeout=30).json()
    assert [g["id"] for g in given["given"] if g["active"]] == [grant["id"]]
    assert given["received"] == []
    received = requests.get(api, headers=s.headers(B, "share"), timeout=30).json()
    assert [g["id"] for g in received["received"] if g["active"]] == [grant["id"]]
    assert requests.get(api, headers=s.headers(B), timeout=30).status_code == 403

    # only the grantor revokes; a third party is told there is no such grant
    one = f"{api}/{grant['id']}"
    assert requests.delete(one, headers=s.headers(B, "share"), timeout=30).status_code == 403
    other = s.headers("Hospital C", "share")
    assert requests.delete(one, headers=other, timeout=30).status_code == 404
    assert (
        requests.delete(f"{api}/x9", headers=s.headers(A, "share"), timeout=30).status_code == 404
    )
    revoked = requests.delete(one, headers=s.headers(A, "share"), timeout=30)
    assert revoked.status_code == 200 and revoked.json()["active"] is False
    assert revoked.json()["revoked_by"] == f"client-{A}"
    twice = requests.delete(one, headers=s.headers(A, "share"), timeout=30)
    assert twice.status_code == 409 and twice.json()["error"] == "conflict"

    assert not _reaches(s, B, "main")
    assert _reaches(s, A, "main")
    events = _grant_events(s, before)
    assert ("grant-added", 0, A) in events and ("grant-revoked", 0, A) in events
    assert ("grant-added", 4, B) in events  # B's refused grant
    assert ("grant-added", 4, A) in events  # the duplicate
    assert [e for e in events if e[0] == "grant-revoked" and e[1] == 4] != []


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ("not json", 400, "JSON"),
        ({"grantee": B}, 400, "either study_uid or patient_id"),
        ({"grantee": B, "study_uid": "1.2.x"}, 400, "study_uid"),
        ({"grantee": B, "study_uid": "1.2.3", "permission": "write"}, 400, "permission"),
        ({"grantee": B, "study_uid": "1.2.3", "sneaky": 1}, 400, "sneaky"),
        ({"grantee": B, "patient_id": "GR0002"}, 400, "issuer"),
        ({"grantee": B, "study_uid": "MAIN", "expires_at": "2001-01-01T00:00:00Z"}, 400, "past"),
        ({"grantee": B, "study_uid": "MAIN", "expires_in": "soon"}, 400, "duration"),
        ({"grantee": "Nowhere", "study_uid": "MAIN"}, 404, "vna institution add"),
    ],
)
def test_bad_grant_requests_are_clear_4xx(
    setup: Setup, body: dict[str, Any] | str, status: int, words: str
) -> None:
    headers = setup.headers(A, "share")
    if isinstance(body, dict):
        body = {k: setup.studies["main"] if v == "MAIN" else v for k, v in body.items()}
        answer = requests.post(f"{setup.url}/api/grants", json=body, headers=headers, timeout=30)
    else:
        answer = requests.post(f"{setup.url}/api/grants", data=body, headers=headers, timeout=30)
    assert answer.status_code == status, answer.text
    assert words in answer.json()["message"]
    assert not _reaches(setup, B, "main")


def test_grant_with_the_cli_study_and_patient(setup: Setup) -> None:
    s = setup
    before = len(_audit(s))
    made = json.loads(
        s.archive.vna("grant", "add", s.studies["main"], "--from", A, "--to", B, "--json").stdout
    )
    assert made["active"] and made["created_by"].startswith("vna-cli:")
    assert _reaches(s, B, "main")
    listed = json.loads(s.archive.vna("grant", "list", "--institution", B, "--json").stdout)
    assert made["id"] in [g["id"] for g in listed if g["active"]]
    s.archive.vna("grant", "revoke", str(made["id"]))
    assert not _reaches(s, B, "main")

    # a patient-level grant: both of A's studies of GR0002 (issuer HOSPA-MRN), not the
    # study of the same id without an issuer, which is another patient
    patient = json.loads(
        s.archive.vna(
            "grant",
            "add",
            "--patient",
            "GR0002",
            "--issuer",
            "HOSPA-MRN",
            "--from",
            A,
            "--to",
            B,
            "--permission",
            "read+report",
            "--expires",
            "7d",
            "--json",
        ).stdout
    )
    assert (patient["level"], patient["permission"]) == ("patient", "read+report")
    assert _reaches(s, B, "p1") and _reaches(s, B, "p2")
    assert not _reaches(s, B, "other") and not _reaches(s, B, "main")
    s.archive.vna("grant", "revoke", str(patient["id"]))
    assert not _reaches(s, B, "p1")

    # refusals: B does not own the study; the grant is already revoked; exit 2, audited
    refused = s.archive.vna("grant", "add", s.studies["p1"], "--from", B, "--to", A, check=False)
    assert refused.returncode == 2 and "no study" in refused.stderr
    twice = s.archive.vna("grant", "revoke", str(patient["id"]), check=False)
    assert twice.returncode == 2 and "already revoked" in twice.stderr

    events = _grant_events(s, before)
    assert events.count(("grant-added", 0, A)) == 2
    assert events.count(("grant-revoked", 0, A)) == 2
    assert ("grant-added", 4, B) in events
    assert ("grant-revoked", 4, None) in events
    records = _audit(s)[before:]
    assert any(r.get("patient") == "GR0002^^^HOSPA-MRN" for r in records)
    assert "intact" in s.archive.vna("audit", "verify").stdout
