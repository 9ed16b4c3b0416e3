"""DIMSE access control against a real archive: C-FIND and C-MOVE see only what the
calling AE's institution may see, C-MOVE goes only to registered destinations, and C-GET
is refused unless enabled (it cannot be limited per institution on Orthanc 1.10).

Hospital A (AE HOSPA) stores a study; Hospital B (AE HOSPB) stores nothing. Each has a
registered move destination (a pynetdicom storage SCP on a free port) added with
`vna institution add` while the archive runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
)

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


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    spec = StudySpec(series=2, slices=3, rows=64, columns=64, seed=7)
    with dimse_setup(tmp_path_factory, "vna-dimse", spec) as s:
        yield s


# --------------------------------------------------------------------------- C-FIND


def test_a_finds_its_study_at_every_level(setup: Setup, tmp_path: Path) -> None:
    arch, uid = setup.archive, setup.study_uid
    studies = findscu(arch, "HOSPA", "STUDY", ["StudyInstanceUID", "PatientID"], tmp_path / "s")
    assert [str(d.StudyInstanceUID) for d in studies] == [uid]
    assert str(studies[0].PatientID) == str(setup.study[0].PatientID)
    series = findscu(
        arch, "HOSPA", "SERIES", [f"StudyInstanceUID={uid}", "SeriesInstanceUID", "Modality"],
        tmp_path / "se",
    )  # fmt: skip
    assert sorted(str(d.SeriesInstanceUID) for d in series) == sorted(
        {str(d.SeriesInstanceUID) for d in setup.study}
    )
    assert {str(d.Modality) for d in series} == {"CT"}
    images = findscu(
        arch, "HOSPA", "IMAGE", [f"StudyInstanceUID={uid}", "SOPInstanceUID"], tmp_path / "i"
    )
    assert sorted(str(d.SOPInstanceUID) for d in images) == sorted(setup.files)


def test_a_matches_with_wildcards_and_patient_root(setup: Setup, tmp_path: Path) -> None:
    arch = setup.archive
    pid = str(setup.study[0].PatientID)
    hits = findscu(arch, "HOSPA", "STUDY", [f"PatientID={pid[:3]}*", "StudyInstanceUID"],
                   tmp_path / "w")  # fmt: skip
    assert [str(d.StudyInstanceUID) for d in hits] == [setup.study_uid]
    none = findscu(arch, "HOSPA", "STUDY", ["PatientID=NO-SUCH*", "StudyInstanceUID"],
                   tmp_path / "n")  # fmt: skip
    assert none == []
    patients = findscu(arch, "HOSPA", "PATIENT", ["PatientID", "PatientName"], tmp_path / "p",
                       model="-P")  # fmt: skip
    assert [str(d.PatientID) for d in patients] == [pid]


def test_b_finds_nothing_of_a(setup: Setup, tmp_path: Path) -> None:
    arch, uid = setup.archive, setup.study_uid
    assert findscu(arch, "HOSPB", "STUDY", ["StudyInstanceUID"], tmp_path / "s") == []
    assert findscu(arch, "HOSPB", "STUDY", [f"StudyInstanceUID={uid}"], tmp_path / "u") == []
    assert findscu(arch, "HOSPB", "IMAGE", [f"StudyInstanceUID={uid}", "SOPInstanceUID"],
                   tmp_path / "i") == []  # fmt: skip
    assert findscu(arch, "HOSPB", "PATIENT", ["PatientID"], tmp_path / "p", model="-P") == []


def test_an_unknown_ae_cannot_find(setup: Setup) -> None:
    ae = AE(ae_title="STRANGER")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", setup.archive.dicom_port, ae_title=setup.archive.aet)
    answers = []
    if assoc.is_established:
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = ""
        for status, ds in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind):
            answers.append((int(status.Status) if status else None, ds))
        if assoc.is_established:
            assoc.release()
    # Orthanc refuses the request of an AE it does not know: no match, no success
    assert all(ds is None and status != 0x0000 for status, ds in answers), answers


def test_c_find_is_audited(setup: Setup, tmp_path: Path) -> None:
    arch, uid = setup.archive, setup.study_uid
    findscu(arch, "HOSPA", "STUDY", [f"StudyInstanceUID={uid}"], tmp_path / "a")
    findscu(arch, "HOSPB", "STUDY", [f"StudyInstanceUID={uid}"], tmp_path / "b")
    queries = [r for r in audit_records(arch) if r["event"] == "query"]
    last = queries[-1]
    assert (last["user"], last["institution"], last["study_uid"]) == ("HOSPB", "Hospital B", uid)
    assert last["detail"] == {"via": "dimse", "level": "STUDY", "called_ae": "VNA",
                              "matches": "0"}  # fmt: skip
    first = queries[-2]  # this test's own, whatever ran before
    assert (first["user"], first["detail"].get("matches")) == ("HOSPA", "1")
    assert arch.vna("audit", "verify").returncode == 0


# --------------------------------------------------------------------------- C-MOVE


def test_a_moves_its_study_to_its_workstation(setup: Setup) -> None:
    arch = setup.archive
    proc = movescu(arch, "HOSPA", "HOSPA_WS",
                   ["QueryRetrieveLevel=STUDY", f"StudyInstanceUID={setup.study_uid}"])  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    got = setup.dest_a.take()
    assert sorted(got) == sorted(setup.files)  # exactly the study's instances
    for sop_uid, raw in got.items():
        assert raw == dataset_bytes(setup.files[sop_uid]), f"{sop_uid} differs"
    assert setup.dest_b.take() == {}
    moved = [r for r in audit_records(arch) if r["event"] == "instances-transferred"][-1]
    assert (moved["user"], moved["institution"], moved["study_uid"], moved["outcome"]) == (
        "HOSPA", "Hospital A", setup.study_uid, 0,
    )  # fmt: skip
    assert moved["detail"]["instances"] == str(len(setup.files))


def test_a_moves_one_series(setup: Setup) -> None:
    series_uid = str(setup.study[0].SeriesInstanceUID)
    proc = movescu(setup.archive, "HOSPA", "HOSPA_WS",
                   ["QueryRetrieveLevel=SERIES", f"StudyInstanceUID={setup.study_uid}",
                    f"SeriesInstanceUID={series_uid}"])  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    expected = {str(d.SOPInstanceUID) for d in setup.study if d.SeriesInstanceUID == series_uid}
    assert set(setup.dest_a.take()) == expected


def test_b_moves_nothing_of_a(setup: Setup) -> None:
    proc = movescu(setup.archive, "HOSPB", "HOSPB_WS",
                   ["QueryRetrieveLevel=STUDY", f"StudyInstanceUID={setup.study_uid}"])  # fmt: skip
    missing = movescu(setup.archive, "HOSPB", "HOSPB_WS",
                      ["QueryRetrieveLevel=STUDY", "StudyInstanceUID=1.2.3.4.5.6.7"])  # fmt: skip
    # the same answer as for a study that does not exist: nothing sent, and not a success
    # (python plugin 4.0 counts a C-MOVE as one sub-operation: it fails, 0xB000)
    assert proc.returncode == missing.returncode != 0, proc.stderr
    assert _status_lines(proc.stderr) == _status_lines(missing.stderr) != []
    assert "Success" not in _status_lines(proc.stderr)[-1]
    assert setup.dest_b.take() == {}
    assert setup.dest_a.take() == {}


def _status_lines(log: str) -> list[str]:
    return [line.split(":", 1)[1].strip() for line in log.splitlines() if "Move Response" in line]


# PS3.4 asks for 0xA801 (Move Destination Unknown). Orthanc 1.10 gives a plugin no way to
# choose a C-MOVE status: python plugin 4.0 reports one sub-operation, and a refusing
# callback makes it fail, so Orthanc answers 0xB000 (Sub-operations Complete - One or more
# Failures) with one failed and nothing sent. (A plugin whose driver cannot be created
# gets 0xC000; neither path can produce 0xA801.)


def test_move_to_an_unregistered_destination_is_refused(setup: Setup) -> None:
    arch = setup.archive
    for dest in ("NOWHERE", "HOSPB_WS"):  # unknown, and another institution's workstation
        status = move_status(arch, "HOSPA", dest, setup.study_uid)
        assert status == REFUSED_MOVE, f"{dest}: {status:#06x}" if status else dest
    assert setup.dest_a.take() == {} and setup.dest_b.take() == {}
    refusals = [
        r for r in audit_records(arch)
        if r["event"] == "instances-transferred" and r["outcome"] == 4
    ]  # fmt: skip
    assert {r["detail"]["destination"] for r in refusals} >= {"NOWHERE", "HOSPB_WS"}
    assert all(r["detail"]["reason"] == "move destination unknown" for r in refusals)


# --------------------------------------------------------------------------- C-GET


def test_c_get_is_refused_by_default(setup: Setup) -> None:
    received: list[Dataset] = []

    def on_store(event: evt.Event) -> int:
        received.append(event.dataset)
        return 0x0000

    ae = AE(ae_title="HOSPA")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate(
        "127.0.0.1", setup.archive.dicom_port, ae_title=setup.archive.aet,
        ext_neg=[build_role(CTImageStorage, scp_role=True)],
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
    )  # fmt: skip
    statuses = []
    if assoc.is_established:
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = setup.study_uid
        statuses = [
            int(s.Status)
            for s, _ in assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet)
            if s
        ]
        if assoc.is_established:
            assoc.release()
    assert received == []
    assert 0x0000 not in statuses
