"""The reading worklist and reports back, against a real archive and gateway.

Hospital A stores three studies over DICOM; the Reading Centre (AE READCTR) one of its own.
Each test has a reading centre of its own (``centre``), to which A grants one study with
read+report and one read-only, so that no test depends on what another opened, reported
or revoked (the tests run in random order). A centre's worklist
(``/worklist/dicom-web/studies``, a QIDO-RS study search) lists exactly those two, NEW
until it retrieves one (OPENED) and REPORTED once it stores a DICOM SR (TID 1500, built
with highdicom) into it through STOW-RS with dicomweb-client. The same store into the
read-only study or an ungranted one is refused (0x0124) and stores nothing.

The archive is this module's own (other modules' tests tamper with the shared one).
"""

from __future__ import annotations

import itertools
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
from tests.integration.harness import Archive, gateway_process, wait_until
from tests.report_sr import measurement_report, part10

A, B, C = "Hospital A", "Hospital B", "Reading Centre"
INSTITUTIONS = {A: ["HOSPA"], B: ["HOSPB"], C: ["READCTR"]}
SMALL = dict(series=1, slices=2, rows=32, columns=32)
# key -> (spec, sending AE)
STUDIES = {
    "report": (StudySpec(**SMALL, patient_id="WL0001", seed=61), "HOSPA"),  # type: ignore[arg-type]
    "read": (StudySpec(**SMALL, patient_id="WL0002", seed=62), "HOSPA"),  # type: ignore[arg-type]
    "none": (StudySpec(**SMALL, patient_id="WL0003", seed=63), "HOSPA"),  # type: ignore[arg-type]
    "own": (StudySpec(**SMALL, patient_id="RC0001", seed=64), "READCTR"),  # type: ignore[arg-type]
}
PRIVATE_CREATOR = "VNA WORKLIST 1"


@dataclass
class Setup:
    archive: Archive
    url: str
    issuer: EmbeddedIssuer
    studies: dict[str, str]  # STUDIES key -> study UID
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

    def client(self, institution: str, *scopes: str) -> DICOMwebClient:
        return DICOMwebClient(url=self.root, headers=self.headers(institution, *scopes))

    def worklist_client(self, institution: str) -> DICOMwebClient:
        """A client whose QIDO-RS goes to the worklist root, as a viewer's qidoRoot would."""
        return DICOMwebClient(
            url=self.url,
            qido_url_prefix="worklist/dicom-web",
            wado_url_prefix="dicom-web",
            stow_url_prefix="dicom-web",
            headers=self.headers(institution),
        )


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    archive = Archive(tmp_path_factory.mktemp("vna-worklist"))
    archive.write_config(INSTITUTIONS)
    archive.up()
    try:
        with gateway_process(archive, "worklist") as (url, _log):
            issuer = EmbeddedIssuer.open_or_create(archive.home / "keys", url, f"{url}/dicom-web")
            studies, files = {}, {}
            for key, (spec, aet) in STUDIES.items():
                files[key] = write_study(spec, tmp_path_factory.mktemp(f"worklist-{key}"))
                sent = archive.storescu(aet, *files[key])
                assert sent.returncode == 0, sent.stderr
                studies[key] = str(pydicom.dcmread(files[key][0]).StudyInstanceUID)
            archive.stats()  # indexed
            yield Setup(archive, url, issuer, studies, files)
    finally:
        archive.down()


@dataclass
class Centre:
    name: str
    grants: dict[str, int]  # STUDIES key -> grant id


_centres = itertools.count(1)


@pytest.fixture
def centre(setup: Setup) -> Centre:
    """A reading centre of this test's own, granted "report" (read+report) and "read"."""
    name = f"Reading Centre {next(_centres)}"
    setup.archive.vna("institution", "add", name)  # no AE: it reads over the web only
    grants = {}
    for key, permission in (("report", "read+report"), ("read", "read")):
        body = {"study_uid": setup.studies[key], "grantee": name, "permission": permission}
        answer = requests.post(
            f"{setup.url}/api/grants", json=body, headers=setup.headers(A, "share"), timeout=30
        )
        assert answer.status_code == 201, answer.text
        grants[key] = int(answer.json()["id"])
    return Centre(name, grants)


def _worklist(s: Setup, institution: str, **params: str) -> dict[str, str]:
    """The worklist as {study UID: status} (dicomweb-client against the worklist root)."""
    status = params.pop("status", None)
    if status is None:
        found = s.worklist_client(institution).search_for_studies(
            search_filters=params, get_remaining=True
        )
    else:  # not a DICOM attribute: dicomweb-client would refuse it as a search filter
        answer = requests.get(
            f"{s.url}/worklist/dicom-web/studies",
            params={**params, "status": status},
            headers=s.headers(institution),
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        assert answer.headers["Content-Type"].startswith("application/dicom+json")
        found = answer.json()
    out = {}
    for item in found:
        ds = pydicom.Dataset.from_json(json.dumps(item))
        out[str(ds.StudyInstanceUID)] = ds.private_block(0x0009, PRIVATE_CREATOR)[0x01].value
    return out


def _audit(s: Setup) -> list[dict[str, Any]]:
    db = sqlite3.connect(s.archive.home / "catalog.db")
    try:
        rows = db.execute("SELECT body FROM audit_events ORDER BY seq").fetchall()
    finally:
        db.close()
    return [json.loads(r[0]) for r in rows]


def test_the_worklist_lists_granted_studies_as_new(setup: Setup, centre: Centre) -> None:
    s, c = setup, centre.name
    granted = {s.studies["report"]: "NEW", s.studies["read"]: "NEW"}
    assert _worklist(s, c) == granted
    # the normal root still answers everything an institution reaches, its own included
    normal = s.client(c).search_for_studies()
    assert {str(pydicom.Dataset.from_json(json.dumps(d)).StudyInstanceUID) for d in normal} == {
        s.studies["report"],
        s.studies["read"],
    }
    own = s.client(C).search_for_studies()
    assert [str(pydicom.Dataset.from_json(json.dumps(d)).StudyInstanceUID) for d in own] == [
        s.studies["own"]
    ]
    # nothing granted to them
    assert _worklist(s, A) == {} and _worklist(s, B) == {} and _worklist(s, C) == {}
    assert _worklist(s, c, status="new") == granted
    assert _worklist(s, c, status="opened,reported") == {}
    assert _worklist(s, c, PatientID="WL0002") == {s.studies["read"]: "NEW"}

    # the full answer: QIDO study attributes, Retrieve URL at the normal root, the block
    answer = requests.get(
        f"{s.url}/worklist/dicom-web/studies",
        params={"StudyInstanceUID": s.studies["report"], "includefield": "all"},
        headers=s.headers(c),
        timeout=30,
    ).json()
    ds = pydicom.Dataset.from_json(json.dumps(answer[0]))
    # two images, and a report if another test stored it already
    stored = s.client(A).search_for_instances(study_instance_uid=s.studies["report"])
    assert ds.PatientID == "WL0001" and ds.NumberOfStudyRelatedInstances == len(stored)
    assert ds.RetrieveURL == f"{s.root}/studies/{s.studies['report']}"
    block = ds.private_block(0x0009, PRIVATE_CREATOR)
    assert (block[0x02].value, block[0x03].value) == (A, "READ_REPORT")

    bad = requests.get(
        f"{s.url}/worklist/dicom-web/studies",
        params={"status": "finished"},
        headers=s.headers(c),
        timeout=30,
    )
    assert bad.status_code == 400 and "new, opened, reported" in bad.json()["message"]
    assert (
        requests.get(f"{s.url}/worklist/dicom-web/studies", timeout=30).status_code == 401
    )  # a token is needed, as everywhere
    query = [e for e in _audit(s) if e["event"] == "query" and e["detail"].get("worklist")]
    assert query and query[-1]["institution"] == c


def test_searching_does_not_open_retrieving_does(setup: Setup, centre: Centre) -> None:
    s, c = setup, centre.name
    uid = s.studies["read"]
    client = s.worklist_client(c)
    # the series and instance searches under the worklist root are the normal ones
    series = client.search_for_series(study_instance_uid=uid)
    assert len(series) == 1
    series_uid = str(pydicom.Dataset.from_json(json.dumps(series[0])).SeriesInstanceUID)
    assert len(client.search_for_instances(study_instance_uid=uid, series_instance_uid=series_uid))
    thumb = requests.get(f"{s.root}/studies/{uid}/thumbnail", headers=s.headers(c), timeout=60)
    assert thumb.status_code == 200
    assert _worklist(s, c)[uid] == "NEW"

    # the owner's own retrieval is not an opening by the grantee
    assert len(s.client(A).retrieve_study_metadata(uid)) == 2
    assert _worklist(s, c)[uid] == "NEW"

    metadata = client.retrieve_study_metadata(uid)  # through wado_url_prefix: /dicom-web
    assert len(metadata) == 2
    assert _worklist(s, c) == {uid: "OPENED", s.studies["report"]: "NEW"}
    assert _worklist(s, c, status="opened") == {uid: "OPENED"}
    # frames afterwards: still one opening
    first = pydicom.dcmread(s.files["read"][0], stop_before_pixels=True)
    frames = client.retrieve_instance_frames(
        uid, str(first.SeriesInstanceUID), str(first.SOPInstanceUID), frame_numbers=[1]
    )
    assert len(frames) == 1 and len(frames[0]) == 32 * 32 * 2
    db = sqlite3.connect(s.archive.home / "catalog.db")
    try:
        rows = db.execute(
            "select w.study_uid, w.opened_by from worklist_opened w"
            " join institutions i on i.id = w.institution_id where i.name = ?",
            (c,),
        ).fetchall()
    finally:
        db.close()
    assert rows == [(uid, f"client-{c}")]


def test_a_reading_centre_stores_its_report_into_a_read_report_study(
    setup: Setup, centre: Centre
) -> None:
    s, c = setup, centre.name
    uid = s.studies["report"]
    images = [pydicom.dcmread(p) for p in s.files["report"]]
    sr = measurement_report(images)
    assert sr.StudyInstanceUID == uid and "IssuerOfPatientID" not in sr

    answer = s.client(c, "dicom.read", "dicom.write").store_instances([sr], study_instance_uid=uid)
    assert "FailedSOPSequence" not in answer
    assert [str(i.ReferencedSOPInstanceUID) for i in answer.ReferencedSOPSequence] == [
        str(sr.SOPInstanceUID)
    ]

    def sr_series() -> list[pydicom.Dataset]:
        found = s.client(A).search_for_series(study_instance_uid=uid)
        return [
            ds
            for ds in (pydicom.Dataset.from_json(json.dumps(d)) for d in found)
            if ds.Modality == "SR"
        ]

    wait_until(lambda: len(sr_series()) == 1, "the report to be indexed")
    assert str(sr_series()[0].SeriesInstanceUID) == str(sr.SeriesInstanceUID)
    assert _worklist(s, c)[uid] == "REPORTED"
    assert _worklist(s, c, status="reported") == {uid: "REPORTED"}

    # the study stays A's, filed under A's patient (no second patient for the report)
    study = s.client(A).search_for_studies(
        search_filters={"StudyInstanceUID": uid}, fields=["IssuerOfPatientID"]
    )
    ds = pydicom.Dataset.from_json(json.dumps(study[0]))
    assert (ds.PatientID, ds.IssuerOfPatientID, ds.NumberOfStudyRelatedSeries) == (
        "WL0001",
        A,
        2,
    )
    db = sqlite3.connect(s.archive.home / "catalog.db")
    try:
        patients = db.execute("select issuer from patients where patient_id = 'WL0001'").fetchall()
        owner = db.execute(
            "select i.name from studies s join institutions i on i.id = s.owner_institution_id"
            " where s.study_uid = ?",
            (uid,),
        ).fetchall()
    finally:
        db.close()
    assert patients == [(A,)] and owner == [(A,)]
    # A retrieves the report byte for byte
    got = s.client(A).retrieve_instance(uid, str(sr.SeriesInstanceUID), str(sr.SOPInstanceUID))
    assert got.ContentSequence == sr.ContentSequence


@pytest.mark.parametrize("key", ["read", "none"])
def test_a_report_into_a_read_only_or_ungranted_study_is_refused(
    setup: Setup, centre: Centre, key: str
) -> None:
    s, c = setup, centre.name
    uid = s.studies[key]
    images = [pydicom.dcmread(p) for p in s.files[key]]
    sr = measurement_report(images)
    with pytest.raises(requests.HTTPError) as refused:
        s.client(c, "dicom.read", "dicom.write").store_instances([sr], study_instance_uid=uid)
    response = refused.value.response
    assert response is not None and response.status_code == 409, response
    failed = pydicom.Dataset.from_json(response.json()).FailedSOPSequence
    assert [(str(f.ReferencedSOPInstanceUID), f.FailureReason) for f in failed] == [
        (str(sr.SOPInstanceUID), 0x0124)
    ]
    # posted to the root instead of the study URL: the same refusal
    body = part10(sr)
    boundary = "worklist-test"
    posted = requests.post(
        f"{s.root}/studies",
        data=(
            f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
            + body
            + f"\r\n--{boundary}--\r\n".encode()
        ),
        headers={
            **s.headers(c, "dicom.read", "dicom.write"),
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
        },
        timeout=60,
    )
    assert posted.status_code == 409
    assert s.archive.lookup(str(sr.SOPInstanceUID)) is None  # nothing stored
    s.archive.stats()
    series = s.client(A).search_for_series(study_instance_uid=uid)
    assert len(series) == 1  # only the images
    if key == "read":
        assert _worklist(s, c)[uid] != "REPORTED"


def test_a_revoked_grant_leaves_the_worklist(setup: Setup, centre: Centre) -> None:
    s, c = setup, centre.name
    gid = centre.grants["read"]
    answer = requests.delete(f"{s.url}/api/grants/{gid}", headers=s.headers(A, "share"), timeout=30)
    assert answer.status_code == 200
    assert s.studies["read"] not in _worklist(s, c)
    assert s.studies["report"] in _worklist(s, c)
