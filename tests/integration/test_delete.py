"""Deleting through the gateway: the owner only, with ``dicom.delete``; a grantee gets 403,
anybody else 404; what is deleted leaves Orthanc and the index, and is audited."""

from __future__ import annotations

import json
from pathlib import Path

import pydicom
import requests

from synthetic import StudySpec, write_study
from tests.integration.harness import Archive, wait_until
from tests.integration.sites import Gateway

SPEC = StudySpec(series=2, slices=2, rows=32, columns=32, patient_id="DEL0001", seed=91)


def _headers(gateway: Gateway, institution: str, *scopes: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {gateway.token(institution, scopes)}"}


def _instances(gateway: Gateway, study_uid: str) -> list[dict[str, object]]:
    answer = requests.get(
        f"{gateway.root}/studies/{study_uid}/instances",
        headers=_headers(gateway, "Hospital A", "dicom.read"),
        timeout=30,
    )
    return list(answer.json())


def test_only_the_owner_deletes(archive: Archive, gateway: Gateway, tmp_path: Path) -> None:
    files = write_study(SPEC, tmp_path)
    assert archive.storescu("HOSPA", *files).returncode == 0
    first = pydicom.dcmread(files[0], stop_before_pixels=True)
    study_uid, series_uid = str(first.StudyInstanceUID), str(first.SeriesInstanceUID)
    wait_until(lambda: len(_instances(gateway, study_uid)) == 4, "the study to be indexed")
    study_url = f"{gateway.root}/studies/{study_uid}"
    series_url = f"{study_url}/series/{series_uid}"

    stranger = requests.delete(
        study_url, headers=_headers(gateway, "Hospital B", "dicom.delete"), timeout=30
    )
    assert stranger.status_code == 404
    archive.vna("grant", "add", study_uid, "--from", "Hospital A", "--to", "Hospital B")
    grantee = requests.delete(
        study_url, headers=_headers(gateway, "Hospital B", "dicom.delete"), timeout=30
    )
    assert grantee.status_code == 403 and "owns" in grantee.json()["message"]
    no_scope = requests.delete(
        study_url, headers=_headers(gateway, "Hospital A", "dicom.read"), timeout=30
    )
    assert no_scope.status_code == 403
    assert len(_instances(gateway, study_uid)) == 4  # nothing changed so far

    owner = _headers(gateway, "Hospital A", "dicom.delete")
    deleted = requests.delete(series_url, headers=owner, timeout=60)
    assert deleted.status_code == 200 and deleted.json()["deleted_instances"] == 2
    wait_until(lambda: len(_instances(gateway, study_uid)) == 2, "the series to leave the index")
    assert archive.lookup(str(first.SOPInstanceUID)) is None  # and Orthanc
    deleted = requests.delete(study_url, headers=owner, timeout=60)
    assert deleted.status_code == 200 and deleted.json()["deleted_instances"] == 2
    wait_until(lambda: _instances(gateway, study_uid) == [], "the study to leave the index")
    assert requests.delete(study_url, headers=owner, timeout=30).status_code == 404

    bundle = json.loads(archive.vna("audit", "export", "--format", "fhir").stdout)
    outcomes = sorted(
        e["resource"]["outcome"]
        for e in bundle["entry"]
        if e["resource"]["type"]["code"] == "110105"
        and any(
            x["what"]["identifier"]["value"] == study_uid for x in e["resource"].get("entity", [])
        )
    )
    assert outcomes.count("0") == 2 and outcomes.count("4") >= 3
