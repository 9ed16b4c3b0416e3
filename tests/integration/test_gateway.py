"""The DICOMweb gateway against a real archive: dicomweb-client with embedded-issuer tokens,
per-institution visibility, byte-identical retrieval, token refusals."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pydicom
import requests
from dicomweb_client.api import DICOMwebClient

from security.issuer import EmbeddedIssuer
from tests.integration.harness import Archive
from tests.integration.sites import GATEWAY_INSTANCES, GATEWAY_SPEC, Gateway


def test_search_studies_series_instances(gateway: Gateway) -> None:
    client = gateway.client("Hospital A")
    studies = client.search_for_studies(search_filters={"PatientID": GATEWAY_SPEC.patient_id})
    assert [s["0020000D"]["Value"][0] for s in studies] == [gateway.study_uid]
    study = studies[0]
    assert study["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": GATEWAY_SPEC.patient_name}]}
    assert study["00201208"]["Value"] == [GATEWAY_INSTANCES]
    assert study["00080061"]["Value"] == ["CT"]
    wildcard = client.search_for_studies(search_filters={"PatientName": "synthetic*"})
    assert gateway.study_uid in [s["0020000D"]["Value"][0] for s in wildcard]
    dated = client.search_for_studies(search_filters={"StudyDate": f"{GATEWAY_SPEC.study_date}-"})
    assert gateway.study_uid in [s["0020000D"]["Value"][0] for s in dated]
    series = client.search_for_series(study_instance_uid=gateway.study_uid)
    assert len(series) == GATEWAY_SPEC.series
    series_uid = series[0]["0020000E"]["Value"][0]
    instances = client.search_for_instances(
        study_instance_uid=gateway.study_uid, series_instance_uid=series_uid
    )
    assert len(instances) == GATEWAY_SPEC.slices


def test_retrieve_instance_is_byte_identical_to_orthanc(gateway: Gateway, archive: Archive) -> None:
    client = gateway.client("Hospital A")
    ds = pydicom.dcmread(gateway.files[0], stop_before_pixels=True)
    sop_uid = str(ds.SOPInstanceUID)
    headers = {
        "Authorization": f"Bearer {gateway.token('Hospital A')}",
        "Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*',
    }
    url = f"{gateway.root}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
    answer = requests.get(f"{url}/instances/{sop_uid}", headers=headers, timeout=60)
    assert answer.status_code == 200
    orthanc_id = archive.lookup(sop_uid)
    assert orthanc_id is not None
    expected = archive.get(f"/instances/{orthanc_id}/file").content
    parts = list(client._decode_multipart_message(answer, stream=False))
    assert parts == [expected]
    # and through dicomweb-client's own call
    got = client.retrieve_instance(str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), sop_uid)
    assert str(got.SOPInstanceUID) == sop_uid


def test_retrieve_series_and_study(gateway: Gateway) -> None:
    client = gateway.client("Hospital A")
    study = client.retrieve_study(gateway.study_uid)
    assert len(study) == GATEWAY_INSTANCES
    ds = study[0]
    series = client.retrieve_series(gateway.study_uid, str(ds.SeriesInstanceUID))
    assert len(series) == GATEWAY_SPEC.slices


def test_other_institution_sees_nothing(gateway: Gateway) -> None:
    client = gateway.client("Hospital B")
    found = client.search_for_studies(search_filters={"PatientID": GATEWAY_SPEC.patient_id})
    assert found == []
    assert client.search_for_series(study_instance_uid=gateway.study_uid) == []
    headers = {"Authorization": f"Bearer {gateway.token('Hospital B')}"}
    ds = pydicom.dcmread(gateway.files[0], stop_before_pixels=True)
    urls = [
        f"{gateway.root}/studies/{gateway.study_uid}",
        f"{gateway.root}/studies/{gateway.study_uid}/series/{ds.SeriesInstanceUID}",
        f"{gateway.root}/studies/{gateway.study_uid}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}",
    ]
    urls += [f"{url}/metadata" for url in urls]
    missing = f"{gateway.root}/studies/1.2.3.4.5.6.7.8.9"
    for url in [*urls, missing, f"{missing}/metadata"]:
        answer = requests.get(url, headers=headers, timeout=30)
        assert answer.status_code == 404, url
        assert answer.json()["error"] == "not_found"
    # an admin scope does not widen what an institution reaches
    admin = {"Authorization": f"Bearer {gateway.token('Hospital B', ('dicom.read', 'admin'))}"}
    assert requests.get(urls[0], headers=admin, timeout=30).status_code == 404


def test_metadata_from_the_header_blobs(gateway: Gateway) -> None:
    client = gateway.client("Hospital A")
    documents = client.retrieve_study_metadata(gateway.study_uid)
    assert len(documents) == GATEWAY_INSTANCES
    sent = {str(pydicom.dcmread(p).SOPInstanceUID): pydicom.dcmread(p) for p in gateway.files}
    for document in documents:
        back = pydicom.Dataset.from_json(document)
        original = sent[str(back.SOPInstanceUID)]
        for keyword in (
            "PatientName",
            "PatientID",
            "StudyInstanceUID",
            "SeriesInstanceUID",
            "Rows",
            "Columns",
            "ImagePositionPatient",
            "PixelSpacing",
            "RescaleIntercept",
            "WindowCenter",
        ):
            assert back.get(keyword) == original.get(keyword), keyword
        assert document["7FE00010"]["BulkDataURI"].endswith("/bulkdata/7FE00010")
    ds = pydicom.dcmread(gateway.files[0], stop_before_pixels=True)
    one = client.retrieve_instance_metadata(  # the client unwraps the one-element array
        gateway.study_uid, str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)
    )
    assert one["00080018"]["Value"] == [str(ds.SOPInstanceUID)]


def test_token_refusals(gateway: Gateway, tmp_path: Path) -> None:
    studies = f"{gateway.root}/studies"
    answer = requests.get(studies, timeout=30)
    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"] == 'Bearer realm="vna"'

    expired = gateway.issuer.mint(
        subject="x", institution="Hospital A", scopes=["dicom.read"], now=time.time() - 3600
    )
    forger = EmbeddedIssuer.open_or_create(
        tmp_path / "forged-keys", gateway.issuer.issuer, gateway.issuer.audience
    )
    forged = forger.mint(subject="x", institution="Hospital A", scopes=["dicom.read"])
    for bad in (expired, forged, "not-a-token"):
        answer = requests.get(studies, headers={"Authorization": f"Bearer {bad}"}, timeout=30)
        assert answer.status_code == 401
        assert 'error="invalid_token"' in answer.headers["WWW-Authenticate"]

    good = gateway.token("Hospital A")
    answer = requests.get(studies, params={"access_token": good}, timeout=30)
    assert answer.status_code == 401
    both = requests.get(
        studies,
        params={"access_token": good},
        headers={"Authorization": f"Bearer {good}"},
        timeout=30,
    )
    assert both.status_code == 401

    no_scope = gateway.token("Hospital A", ("share",))
    answer = requests.get(studies, headers={"Authorization": f"Bearer {no_scope}"}, timeout=30)
    assert answer.status_code == 403
    assert 'error="insufficient_scope"' in answer.headers["WWW-Authenticate"]

    # the access log names the path, never the query string or the token
    logged = gateway.log.read_text()
    assert '"GET /dicom-web/studies 401' in logged
    for secret in (good, expired, forged, no_scope, "access_token"):
        assert secret not in logged


def test_bad_query_is_400_and_cors_and_metrics(gateway: Gateway) -> None:
    headers = {"Authorization": f"Bearer {gateway.token('Hospital A')}", "Origin": "https://ohif"}
    answer = requests.get(
        f"{gateway.root}/studies", params={"StudyDate": "last week"}, headers=headers, timeout=30
    )
    assert answer.status_code == 400
    assert "StudyDate" in answer.json()["message"]
    assert answer.headers["Access-Control-Allow-Origin"] == "*"
    preflight = requests.options(
        f"{gateway.root}/studies",
        headers={
            "Origin": "https://ohif",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
        timeout=30,
    )
    assert preflight.status_code == 204
    assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]
    metrics = requests.get(f"{gateway.url}/metrics", timeout=30).text
    assert "vna_gateway_requests_total" in metrics
    assert "vna_gateway_token_refusals_total" in metrics


def test_client_credentials_flow(archive: Archive, gateway: Gateway) -> None:
    """`vna client add` -> token endpoint -> dicomweb-client, and the endpoint's refusals."""
    made = json.loads(
        archive.vna(
            "client",
            "add",
            "pacs-a",
            "--institution",
            "Hospital A",
            "--scopes",
            "dicom.read dicom.write",
            "--json",
        ).stdout
    )
    client_id, secret = made["client_id"], made["client_secret"]
    assert (
        secret
        not in archive.vna(
            "client", "add", "pacs-a2", "--institution", "Hospital A", "--scopes", "dicom.read"
        ).stdout
    )
    discovery = requests.get(f"{gateway.url}/.well-known/openid-configuration", timeout=10).json()
    assert discovery["issuer"] == gateway.url
    endpoint = discovery["token_endpoint"]

    answer = requests.post(
        endpoint,
        data={"grant_type": "client_credentials", "scope": "dicom.read"},
        auth=(client_id, secret),
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["Cache-Control"] == "no-store"
    body = answer.json()
    assert body["token_type"] == "Bearer" and body["scope"] == "dicom.read"
    web = DICOMwebClient(
        url=gateway.root, headers={"Authorization": f"Bearer {body['access_token']}"}
    )
    found = web.search_for_studies(search_filters={"StudyInstanceUID": gateway.study_uid})
    assert [s["0020000D"]["Value"][0] for s in found] == [gateway.study_uid]

    refused = [
        requests.post(
            endpoint,
            data={"grant_type": "client_credentials"},
            auth=(client_id, "wrong"),
            timeout=10,
        ),
        requests.post(endpoint, data={"grant_type": "client_credentials"}, timeout=10),
        requests.post(
            endpoint, data={"grant_type": "password"}, auth=(client_id, secret), timeout=10
        ),
        requests.post(
            endpoint,
            data={"grant_type": "client_credentials", "scope": "admin"},
            auth=(client_id, secret),
            timeout=10,
        ),
    ]
    assert [(r.status_code, r.json()["error"]) for r in refused] == [
        (401, "invalid_client"),
        (401, "invalid_client"),
        (400, "unsupported_grant_type"),
        (400, "invalid_scope"),
    ]
    assert secret not in gateway.log.read_text()
    unknown = archive.vna(
        "client", "add", "x", "--institution", "Nowhere", "--scopes", "dicom.read", check=False
    )
    assert unknown.returncode == 2 and "vna institution add" in unknown.stderr


def test_audit_api_dimse_stores_and_admin_changes(archive: Archive, gateway: Gateway) -> None:
    """GET /api/audit needs audit.read and is itself audited; DIMSE stores and CLI
    administration leave records."""
    url = f"{gateway.url}/api/audit"

    def reader() -> dict[str, str]:  # fresh each time: a loaded machine can outlive a token
        return {"Authorization": f"Bearer {gateway.token('Hospital A', ('audit.read',))}"}

    plain = {"Authorization": f"Bearer {gateway.token('Hospital A')}"}
    assert requests.get(url, headers=plain, timeout=10).status_code == 403
    bad = requests.get(url, params={"limit": "0"}, headers=reader(), timeout=10)
    assert bad.status_code == 400

    archive.vna("institution", "add", "Audit Clinic", "--ae", "AUDITCL")
    records: list[dict[str, object]] = []
    after = 0
    while True:  # page through with `after`, as a SIEM collector would
        page = requests.get(url, params={"after": str(after)}, headers=reader(), timeout=10)
        assert page.status_code == 200, page.text
        body = page.json()
        records += body["records"]
        if len(body["records"]) < 100:  # a short page is the last (each read adds one)
            break
        after = body["next"]
    stored = [
        r
        for r in records
        if r["event"] == "instances-transferred"
        and r["action"] == "C"
        and r["study_uid"] == gateway.study_uid
    ]
    assert stored and stored[0]["user"] == "HOSPA" and stored[0]["institution"] == "Hospital A"
    assert sum(int(r["detail"]["instances"]) for r in stored) >= GATEWAY_INSTANCES  # type: ignore[index]
    changes = [r for r in records if r["event"] == "security-config"]
    assert any(
        r["detail"]
        == {"change": "institution-added", "institution": "Audit Clinic", "ae_titles": "AUDITCL"}
        for r in changes
    )
    # the reads above are records too, after the last one read
    last = requests.get(url, params={"after": str(after)}, headers=reader(), timeout=10).json()
    assert any(
        r["event"] == "audit-log-used" and r["user"] == "client-Hospital A" for r in last["records"]
    )
    fhir = requests.get(url, params={"format": "fhir"}, headers=reader(), timeout=10)
    assert fhir.json()["resourceType"] == "Bundle"


def test_audit_log_records_and_detects_tampering(archive: Archive, gateway: Gateway) -> None:
    """Queries, retrievals, token refusals are audited; an edited record breaks the chain."""
    client = gateway.client("Hospital A")
    client.search_for_studies(search_filters={"StudyInstanceUID": gateway.study_uid})
    refused = requests.get(
        f"{gateway.root}/studies", headers={"Authorization": "Bearer not-a-token"}, timeout=10
    )
    assert refused.status_code == 401
    assert "intact" in archive.vna("audit", "verify").stdout

    bundle = json.loads(archive.vna("audit", "export", "--format", "fhir").stdout)
    events = [entry["resource"] for entry in bundle["entry"]]
    codes = {(e["type"]["code"], e["outcome"]) for e in events}
    assert ("110112", "0") in codes  # a query
    assert ("110114", "4") in codes  # a refused token
    assert ("110104", "0") in codes  # instances transferred
    assert "not-a-token" not in json.dumps(bundle)
    xml = archive.vna("audit", "export", "--format", "dicom").stdout
    assert xml.count("<AuditMessage>") == len(events) + 1  # the first export is audited too

    db = sqlite3.connect(archive.home / "catalog.db")
    with db:
        seq, body = db.execute(
            "SELECT seq, body FROM audit_events ORDER BY seq LIMIT 1 OFFSET 2"
        ).fetchone()
        db.execute(
            "UPDATE audit_events SET body = ? WHERE seq = ?",
            (body.replace('"user":"', '"user":"forged-'), seq),
        )
    db.close()
    verdict = archive.vna("audit", "verify", check=False)
    assert verdict.returncode == 1 and f"record {seq}" in verdict.stdout
    # put the record back: the chain verifies again (other tests share this archive)
    db = sqlite3.connect(archive.home / "catalog.db")
    with db:
        db.execute("UPDATE audit_events SET body = ? WHERE seq = ?", (body, seq))
    db.close()
    assert archive.vna("audit", "verify").returncode == 0
