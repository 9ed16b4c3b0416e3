"""STOW-RS through the gateway against a real archive: dicomweb-client stores a series that
QIDO finds and WADO-RS returns for the storing institution only, with the institution as
source and owner; broken, oversized and unauthorised requests store nothing."""

from __future__ import annotations

import io
import json
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.uid import generate_uid

from security.issuer import EmbeddedIssuer
from synthetic import StudySpec, write_study
from tests.integration.harness import Archive, gateway_process, wait_until

SPEC_A = StudySpec(series=1, slices=4, rows=64, columns=64, patient_id="STOWA1", seed=71)
SPEC_B = StudySpec(series=1, slices=2, rows=64, columns=64, patient_id="STOWB1", seed=72)
SPEC_X = StudySpec(series=1, slices=2, rows=64, columns=64, patient_id="STOWX1", seed=73)
WRITE = ("dicom.read", "dicom.write")
BOUNDARY = "stow-test-boundary"
RELATED = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'


@dataclass
class StowGateway:
    url: str
    issuer: EmbeddedIssuer
    log: Path

    @property
    def root(self) -> str:
        return f"{self.url}/dicom-web"

    def headers(self, institution: str, scopes: tuple[str, ...] = WRITE) -> dict[str, str]:
        token = self.issuer.mint(
            subject=f"stow-{institution}", institution=institution, scopes=scopes
        )
        return {"Authorization": f"Bearer {token}"}

    def client(self, institution: str, scopes: tuple[str, ...] = WRITE) -> DICOMwebClient:
        return DICOMwebClient(url=self.root, headers=self.headers(institution, scopes))

    def post(
        self,
        body: bytes,
        institution: str = "Hospital A",
        study: str | None = None,
        content_type: str = RELATED,
        scopes: tuple[str, ...] = WRITE,
    ) -> requests.Response:
        url = f"{self.root}/studies" + (f"/{study}" if study else "")
        headers = {**self.headers(institution, scopes), "Content-Type": content_type}
        return requests.post(url, data=body, headers=headers, timeout=120)

    def healthy(self) -> bool:
        return requests.get(f"{self.url}/healthz", timeout=10).ok


@pytest.fixture(scope="module")
def gateways(archive: Archive) -> Iterator[tuple[StowGateway, StowGateway]]:
    """The gateway with its default limit, and one limited to 1 MiB by the environment."""
    limits = {"stow": {}, "stow-small": {"VNA_GATEWAY__MAX_REQUEST_MB": "1"}}
    with ExitStack() as stack:
        started = []
        for name, env in limits.items():
            url, log = stack.enter_context(gateway_process(archive, name, env))
            issuer = EmbeddedIssuer.open_or_create(archive.home / "keys", url, f"{url}/dicom-web")
            started.append(StowGateway(url, issuer, log))
        normal, small = started
        yield normal, small


@pytest.fixture(scope="module")
def gw(gateways: tuple[StowGateway, StowGateway]) -> StowGateway:
    return gateways[0]


def multipart(parts: list[bytes], *, close: bool = True) -> bytes:
    body = b""
    for data in parts:
        body += f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        body += data + b"\r\n"
    return body + (f"--{BOUNDARY}--\r\n".encode() if close else b"")


def _count(gw: StowGateway, institution: str, study_uid: str) -> int:
    answer = requests.get(
        f"{gw.root}/studies/{study_uid}/instances", headers=gw.headers(institution), timeout=30
    )
    return len(answer.json()) if answer.ok else -1


def _catalog(archive: Archive, query: str, *params: Any) -> list[Any]:
    db = sqlite3.connect(archive.home / "catalog.db")
    try:
        return list(db.execute(query, params).fetchall())
    finally:
        db.close()


def _renamed(path: Path, **uids: str) -> bytes:
    """The file at ``path`` with some UIDs replaced (a new instance), as Part 10 bytes."""
    ds = pydicom.dcmread(path)
    for keyword, value in uids.items():
        setattr(ds, keyword, value)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def study_a(gw: StowGateway, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[Path]]:
    """A series stored by Hospital A with dicomweb-client, once indexed."""
    files = write_study(SPEC_A, tmp_path_factory.mktemp("stow-a"))
    datasets = [pydicom.dcmread(p) for p in files]
    study_uid = str(datasets[0].StudyInstanceUID)
    answer = gw.client("Hospital A").store_instances(datasets)
    assert "FailedSOPSequence" not in answer
    assert sorted(str(i.ReferencedSOPInstanceUID) for i in answer.ReferencedSOPSequence) == sorted(
        str(d.SOPInstanceUID) for d in datasets
    )
    assert answer.RetrieveURL == f"{gw.root}/studies/{study_uid}"
    wait_until(lambda: _count(gw, "Hospital A", study_uid) == len(files), "the STOW to be indexed")
    return study_uid, files


def test_stored_series_is_found_and_retrieved_by_its_institution_only(
    archive: Archive, gw: StowGateway, study_a: tuple[str, list[Path]]
) -> None:
    study_uid, files = study_a
    client = gw.client("Hospital A")
    found = client.search_for_studies(search_filters={"PatientID": SPEC_A.patient_id})
    assert [s["0020000D"]["Value"][0] for s in found] == [study_uid]
    for path in files[:2]:
        sent = pydicom.dcmread(path)
        got = client.retrieve_instance(
            study_uid, str(sent.SeriesInstanceUID), str(sent.SOPInstanceUID)
        )
        assert got.PixelData == sent.PixelData
        assert got.PatientName == sent.PatientName
        # byte for byte what Orthanc holds
        orthanc_id = archive.lookup(str(sent.SOPInstanceUID))
        assert orthanc_id is not None
        raw = requests.get(
            f"{gw.root}/studies/{study_uid}/series/{sent.SeriesInstanceUID}"
            f"/instances/{sent.SOPInstanceUID}",
            headers={
                **gw.headers("Hospital A"),
                "Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*',
            },
            timeout=60,
        )
        parts = list(client._decode_multipart_message(raw, stream=False))
        assert parts == [archive.get(f"/instances/{orthanc_id}/file").content]

    other = gw.client("Hospital B")
    assert other.search_for_studies(search_filters={"PatientID": SPEC_A.patient_id}) == []
    assert (
        requests.get(
            f"{gw.root}/studies/{study_uid}", headers=gw.headers("Hospital B"), timeout=30
        ).status_code
        == 404
    )


def test_the_storing_institution_is_source_and_owner(
    archive: Archive, study_a: tuple[str, list[Path]]
) -> None:
    study_uid, files = study_a
    owner = _catalog(
        archive,
        "SELECT i.name FROM studies s JOIN institutions i ON i.id = s.owner_institution_id "
        "WHERE s.study_uid = ?",
        study_uid,
    )
    assert owner == [("Hospital A",)]
    sources = _catalog(
        archive,
        "SELECT DISTINCT i.name, x.via, x.sender FROM instance_sources x "
        "JOIN institutions i ON i.id = x.institution_id JOIN instances n ON n.sop_uid = x.sop_uid "
        "WHERE n.study_uid = ?",
        study_uid,
    )
    assert sources == [("Hospital A", "stow", "stow-Hospital A")]
    issuers = _catalog(
        archive,
        "SELECT p.issuer FROM studies s JOIN patients p ON p.pk = s.patient_pk "
        "WHERE s.study_uid = ?",
        study_uid,
    )
    assert issuers == [("Hospital A",)]  # no IssuerOfPatientID: qualified by the sender
    # this study's announcements were taken by the indexer (other tests may have theirs
    # in flight)
    pending = _catalog(
        archive,
        "SELECT count(*) FROM pending_sources p JOIN instances n ON n.orthanc_id = p.orthanc_id "
        "WHERE n.study_uid = ?",
        study_uid,
    )
    assert pending == [(0,)]
    audited = [
        json.loads(body)
        for (body,) in _catalog(archive, "SELECT body FROM audit_events")
        if '"stow-rs"' in body
    ]
    stored = [a for a in audited if a["study_uid"] == study_uid and a["outcome"] == 0]
    assert stored and stored[0]["action"] == "C" and stored[0]["institution"] == "Hospital A"
    assert stored[0]["detail"]["stored"] == str(len(files))


def test_exact_bytes_in_and_out_and_a_non_dicom_part_fails_alone(
    archive: Archive, gw: StowGateway, tmp_path: Path
) -> None:
    files = write_study(SPEC_B, tmp_path)
    data = files[0].read_bytes()
    ds = pydicom.dcmread(files[0], stop_before_pixels=True)
    answer = gw.post(multipart([data, b"%PDF-1.4 this is not DICOM"]), institution="Hospital B")
    assert answer.status_code == 202, answer.text
    assert answer.headers["Content-Type"].startswith("application/dicom+json")
    body = pydicom.Dataset.from_json(answer.json())
    assert [str(i.ReferencedSOPInstanceUID) for i in body.ReferencedSOPSequence] == [
        str(ds.SOPInstanceUID)
    ]
    assert [i.FailureReason for i in body.FailedSOPSequence] == [0xC000]
    wait_until(
        lambda: _count(gw, "Hospital B", str(ds.StudyInstanceUID)) == 1, "the STOW to be indexed"
    )
    raw = requests.get(
        f"{gw.root}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}",
        headers={
            **gw.headers("Hospital B"),
            "Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*',
        },
        timeout=60,
    )
    parts = list(gw.client("Hospital B")._decode_multipart_message(raw, stream=False))
    assert parts == [data]
    assert _count(gw, "Hospital A", str(ds.StudyInstanceUID)) == 0

    only_junk = gw.post(multipart([b"\0" * 200]), institution="Hospital B")
    assert only_junk.status_code == 409
    failed = pydicom.Dataset.from_json(only_junk.json()).FailedSOPSequence
    assert [i.FailureReason for i in failed] == [0xC000]


def _instances(archive: Archive) -> int:
    return len(archive.get("/instances").json())


def test_broken_requests_store_nothing_and_the_gateway_stays_up(
    archive: Archive, gw: StowGateway, tmp_path: Path
) -> None:
    files = write_study(SPEC_X, tmp_path)
    data = files[0].read_bytes()
    sop_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).SOPInstanceUID)
    before = _instances(archive)
    cases = [
        (multipart([data], close=False), RELATED, 400),  # no closing boundary
        (multipart([data])[: len(data) // 2], RELATED, 400),  # cut in the middle
        (multipart([data]), 'multipart/related; type="application/dicom"', 400),  # no boundary
        (multipart([data]), "application/dicom", 415),
        (multipart([data]), 'multipart/related; type="application/dicom+xml"; boundary=x', 415),
        (b"", RELATED, 400),
    ]
    for body, content_type, status in cases:
        answer = gw.post(body, content_type=content_type)
        assert answer.status_code == status, (content_type, answer.text)
        message = answer.json()["message"]
        assert "multipart" in message or "boundary" in message
        assert gw.healthy()
    assert archive.lookup(sop_uid) is None
    assert _instances(archive) == before


def test_an_oversized_body_is_413_and_stores_nothing(
    archive: Archive, gateways: tuple[StowGateway, StowGateway], tmp_path: Path
) -> None:
    small = gateways[1]
    files = write_study(
        StudySpec(series=1, slices=3, rows=512, columns=512, patient_id="STOWBIG", seed=74),
        tmp_path,
    )
    parts = [p.read_bytes() for p in files]  # ~1.5 MiB: over the 1 MiB limit
    before = _instances(archive)
    for chunked in (False, True):
        body = multipart(parts)
        data: Any = (
            iter([body[i : i + 65536] for i in range(0, len(body), 65536)]) if chunked else body
        )
        headers = {**small.headers("Hospital A"), "Content-Type": RELATED}
        answer = requests.post(f"{small.root}/studies", data=data, headers=headers, timeout=120)
        assert answer.status_code == 413, answer.text
        assert "max_request_mb" in answer.json()["message"]
        assert small.healthy()
    for path in files:
        assert (
            archive.lookup(str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID))
            is None
        )
    assert _instances(archive) == before
    # one instance fits
    assert small.post(multipart(parts[:1])).status_code == 200


def test_another_institutions_study_is_refused(
    archive: Archive, gw: StowGateway, study_a: tuple[str, list[Path]]
) -> None:
    study_uid, files = study_a
    intruder = _renamed(files[0], SOPInstanceUID=generate_uid())
    intruder_uid = str(pydicom.dcmread(io.BytesIO(intruder)).SOPInstanceUID)
    before = _instances(archive)
    in_study = _count(gw, "Hospital A", study_uid)  # other tests of this module add to it
    for study in (None, study_uid):
        answer = gw.post(multipart([intruder]), institution="Hospital B", study=study)
        assert answer.status_code == 409, answer.text
        failed = pydicom.Dataset.from_json(answer.json()).FailedSOPSequence
        assert [(str(i.ReferencedSOPInstanceUID), i.FailureReason) for i in failed] == [
            (intruder_uid, 0x0124)
        ]
    # A's own instance filed under a new study of B's: refused the same way
    hijack = _renamed(files[1], StudyInstanceUID=generate_uid(), SeriesInstanceUID=generate_uid())
    answer = gw.post(multipart([hijack]), institution="Hospital B")
    assert answer.status_code == 409
    assert pydicom.Dataset.from_json(answer.json()).FailedSOPSequence[0].FailureReason == 0x0124
    assert archive.lookup(intruder_uid) is None
    assert _instances(archive) == before
    assert _count(gw, "Hospital A", study_uid) == in_study


def test_the_study_in_the_url_must_match(
    archive: Archive, gw: StowGateway, study_a: tuple[str, list[Path]]
) -> None:
    study_uid, files = study_a
    other_study = _renamed(
        files[0],
        SOPInstanceUID=generate_uid(),
        StudyInstanceUID=generate_uid(),
        SeriesInstanceUID=generate_uid(),
    )
    same_study = _renamed(files[0], SOPInstanceUID=generate_uid())
    in_study = _count(gw, "Hospital A", study_uid)  # other tests of this module add to it
    answer = gw.post(multipart([other_study]), study=study_uid)
    assert answer.status_code == 409
    assert pydicom.Dataset.from_json(answer.json()).FailedSOPSequence[0].FailureReason == 0xC409
    answer = gw.post(multipart([other_study, same_study]), study=study_uid)
    assert answer.status_code == 202
    body = pydicom.Dataset.from_json(answer.json())
    assert body.RetrieveURL == f"{gw.root}/studies/{study_uid}"
    assert len(body.ReferencedSOPSequence) == 1 and len(body.FailedSOPSequence) == 1
    wait_until(lambda: _count(gw, "Hospital A", study_uid) == in_study + 1, "the new instance")


def test_a_token_without_dicom_write_is_403(
    archive: Archive, gw: StowGateway, tmp_path: Path
) -> None:
    files = write_study(
        StudySpec(series=1, slices=1, rows=32, columns=32, patient_id="STOWRO", seed=75), tmp_path
    )
    answer = gw.post(multipart([files[0].read_bytes()]), scopes=("dicom.read",))
    assert answer.status_code == 403
    assert 'error="insufficient_scope"' in answer.headers["WWW-Authenticate"]
    assert requests.post(f"{gw.root}/studies", data=b"", timeout=30).status_code == 401
    unknown = gw.post(multipart([files[0].read_bytes()]), institution=f"Nowhere {uuid.uuid4()}")
    assert unknown.status_code == 403
    assert "not registered" in unknown.json()["message"]
    assert archive.lookup(str(pydicom.dcmread(files[0]).SOPInstanceUID)) is None


def test_a_re_sent_instance_is_stored_once_and_counted_as_a_source(
    archive: Archive, gw: StowGateway, study_a: tuple[str, list[Path]]
) -> None:
    study_uid, files = study_a
    sop_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).SOPInstanceUID)
    before = _instances(archive)
    answer = gw.post(multipart([files[0].read_bytes()]))
    assert answer.status_code == 200  # already archived: stored, as PS3.18 lets a re-send be
    assert _instances(archive) == before

    def consumed() -> bool:
        return _catalog(archive, "SELECT count(*) FROM pending_sources") == [(0,)]

    wait_until(consumed, "the indexer to take the announcement")
    times = _catalog(archive, "SELECT times FROM instance_sources WHERE sop_uid = ?", sop_uid)
    assert times == [(2,)]
