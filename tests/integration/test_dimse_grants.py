"""DIMSE and grants against a real archive (issue 3): Hospital B's AE cannot C-FIND or
C-MOVE Hospital A's study; after A grants it to B (`vna grant add`), B's C-FIND finds it
and B's C-MOVE delivers it, byte for byte, to B's registered workstation (never to A's);
after the revocation B sees and moves nothing again. A patient-level grant made over the
Grants API opens the same way for C-FIND.

The archive is this module's own: grants change what B sees, which other modules'
tests assert on.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from synthetic import StudySpec
from tests.integration.dimse import (
    REFUSED_MOVE,
    Setup,
    audit_records,
    dataset_bytes,
    dimse_setup,
    findscu,
    move_status,
    movescu,
)

A, B = "Hospital A", "Hospital B"


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    spec = StudySpec(series=2, slices=2, rows=32, columns=32, patient_id="DG0001", seed=91)
    with dimse_setup(tmp_path_factory, "vna-dimse-grants", spec) as s:
        yield s


def _b_finds(s: Setup, out: Path) -> tuple[list[str], list[str]]:
    """B's C-FIND for A's study at STUDY and IMAGE level: study UIDs, SOP Instance UIDs."""
    uid = s.study_uid
    studies = findscu(s.archive, "HOSPB", "STUDY", [f"StudyInstanceUID={uid}"], out / "s")
    images = findscu(
        s.archive, "HOSPB", "IMAGE", [f"StudyInstanceUID={uid}", "SOPInstanceUID"], out / "i"
    )
    return [str(d.StudyInstanceUID) for d in studies], sorted(str(d.SOPInstanceUID) for d in images)


def _b_moves(s: Setup, dest: str = "HOSPB_WS") -> dict[str, bytes]:
    proc = movescu(s.archive, "HOSPB", dest,
                   ["QueryRetrieveLevel=STUDY", f"StudyInstanceUID={s.study_uid}"])  # fmt: skip
    got = s.dest_b.take()
    # a move that sends nothing ends 0xB000 (movescu exits non-zero), never as a success
    assert (proc.returncode == 0) == bool(got), proc.stderr
    return got


def test_b_reaches_a_study_over_dimse_only_while_granted(setup: Setup, tmp_path: Path) -> None:
    s = setup
    uid = s.study_uid
    assert _b_finds(s, tmp_path / "before") == ([], [])
    assert _b_moves(s) == {}

    made = json.loads(s.archive.vna("grant", "add", uid, "--from", A, "--to", B, "--json").stdout)
    assert made["active"] and made["grantee"] == B

    assert _b_finds(s, tmp_path / "granted") == ([uid], sorted(s.files))
    got = _b_moves(s)
    assert sorted(got) == sorted(s.files)  # exactly the study's instances
    for sop_uid, raw in got.items():
        assert raw == dataset_bytes(s.files[sop_uid]), f"{sop_uid} differs"
    assert s.dest_a.take() == {}
    moved = [r for r in audit_records(s.archive) if r["event"] == "instances-transferred"][-1]
    assert (moved["user"], moved["institution"], moved["study_uid"], moved["outcome"]) == (
        "HOSPB", B, uid, 0,
    )  # fmt: skip

    # a grant opens the study, not A's destinations: B cannot send it to A's workstation
    assert move_status(s.archive, "HOSPB", "HOSPA_WS", uid) == REFUSED_MOVE
    assert s.dest_a.take() == {} and s.dest_b.take() == {}

    s.archive.vna("grant", "revoke", str(made["id"]))
    assert _b_finds(s, tmp_path / "revoked") == ([], [])
    assert _b_moves(s) == {}
    assert s.dest_a.take() == {}
    # A itself is unaffected throughout
    mine = findscu(s.archive, "HOSPA", "STUDY", [f"StudyInstanceUID={uid}"], tmp_path / "a")
    assert [str(d.StudyInstanceUID) for d in mine] == [uid]


def test_a_patient_grant_opens_c_find_for_the_patients_studies(
    setup: Setup, tmp_path: Path
) -> None:
    s = setup
    made = json.loads(
        s.archive.vna(
            "grant", "add", "--patient", "DG0001", "--issuer", A, "--from", A, "--to", B,
            "--expires", "1d", "--json",
        ).stdout
    )  # fmt: skip
    try:
        assert made["level"] == "patient"
        patients = findscu(
            s.archive, "HOSPB", "PATIENT", ["PatientID", "PatientName"], tmp_path / "p",
            model="-P",
        )  # fmt: skip
        assert [str(d.PatientID) for d in patients] == ["DG0001"]
        assert _b_finds(s, tmp_path / "granted")[0] == [s.study_uid]
    finally:
        s.archive.vna("grant", "revoke", str(made["id"]))
    assert _b_finds(s, tmp_path / "revoked") == ([], [])
