"""C-MOVE at every level and under both information models, and C-GET while it is off,
against a real archive with real clients (issue 11, items 2 and 13).

What counts is what arrives at the destination: a pynetdicom storage SCP registered as
Hospital A's workstation, and a stock Orthanc registered as one of Hospital A's AEs (the
PACS most hospitals would pull into). Orthanc hands the IMAGE level to the archive's move
callback as ``INSTANCE``; a move must send what it names at every level, and a move that
sends nothing must not be reported as a success with a completed sub-operation.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelMove,
)

from synthetic import StudySpec
from tests.integration.dimse import Setup, audit_records, dataset_bytes, dimse_setup
from tests.integration.harness import Archive, wait_until
from tests.integration.stock_orthanc import StockOrthanc

PATIENT_ID = "MOVELVL01"


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    # dicom_allow_get at its default (off), as test_dimse's archive
    spec = StudySpec(series=2, slices=2, rows=32, columns=32, patient_id=PATIENT_ID, seed=113)
    with dimse_setup(tmp_path_factory, "vna-retrieve-levels", spec) as s:
        yield s


def _movescu(
    arch: Archive, model: str, dest: str, keys: list[str]
) -> subprocess.CompletedProcess[str]:
    args = [a for k in keys for a in ("-k", k)]
    return subprocess.run(
        ["movescu", "-v", model, "-aet", "HOSPA", "-aec", arch.aet, "-aem", dest, *args,
         "127.0.0.1", str(arch.dicom_port)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def _keys(s: Setup, level: str, model: str) -> tuple[list[str], set[str]]:
    """movescu keys for ``level`` (the first series / instance of the study) and the SOP
    Instance UIDs that must arrive."""
    first = s.study[0]
    keys = [f"QueryRetrieveLevel={level}"]
    if model == "-P":
        keys.append(f"PatientID={PATIENT_ID}")
    if level == "PATIENT":
        return keys, set(s.files)
    keys.append(f"StudyInstanceUID={s.study_uid}")
    if level == "STUDY":
        return keys, set(s.files)
    keys.append(f"SeriesInstanceUID={first.SeriesInstanceUID}")
    if level == "SERIES":
        return keys, {
            str(d.SOPInstanceUID) for d in s.study if d.SeriesInstanceUID == first.SeriesInstanceUID
        }
    keys.append(f"SOPInstanceUID={first.SOPInstanceUID}")
    return keys, {str(first.SOPInstanceUID)}


@pytest.mark.parametrize(
    ("model", "level"),
    [
        ("-P", "PATIENT"),
        ("-P", "STUDY"),
        ("-P", "SERIES"),
        ("-P", "IMAGE"),
        ("-S", "STUDY"),
        ("-S", "SERIES"),
        ("-S", "IMAGE"),
    ],
)
def test_movescu_delivers_what_each_level_names(setup: Setup, model: str, level: str) -> None:
    keys, expected = _keys(setup, level, model)
    setup.dest_a.take()
    proc = _movescu(setup.archive, model, "HOSPA_WS", keys)
    assert proc.returncode == 0, proc.stderr
    got = setup.dest_a.take()
    assert set(got) == expected, proc.stderr
    for sop_uid, raw in got.items():
        assert raw == dataset_bytes(setup.files[sop_uid]), f"{sop_uid} differs"
    assert "Success" in _final_status(proc.stderr), proc.stderr


def _final_status(log: str) -> str:
    lines = [line for line in log.splitlines() if "Final Move Response" in line]
    return lines[-1] if lines else ""


def _pynetdicom_move(arch: Archive, model: str, dest: str, query: Dataset) -> list[Dataset]:
    """The C-MOVE responses pynetdicom got (status data sets; the last is the final one)."""
    ae = AE(ae_title="HOSPA")
    ae.add_requested_context(model)
    assoc = ae.associate("127.0.0.1", arch.dicom_port, ae_title=arch.aet)
    assert assoc.is_established
    try:
        return [status for status, _ in assoc.send_c_move(query, dest, model) if status]
    finally:
        if assoc.is_established:
            assoc.release()


@pytest.mark.parametrize(
    "model",
    [PatientRootQueryRetrieveInformationModelMove, StudyRootQueryRetrieveInformationModelMove],
)
def test_pynetdicom_image_level_move_sends_the_listed_instances(setup: Setup, model: str) -> None:
    """IMAGE level with two SOP Instance UIDs (a list: PS3.4 C.4.2.2.1): both arrive."""
    chosen = [setup.study[0], setup.study[-1]]
    query = Dataset()
    query.QueryRetrieveLevel = "IMAGE"
    query.PatientID = PATIENT_ID
    query.StudyInstanceUID = setup.study_uid
    query.SeriesInstanceUID = str(chosen[0].SeriesInstanceUID)
    query.SOPInstanceUID = [str(d.SOPInstanceUID) for d in chosen]
    if chosen[0].SeriesInstanceUID != chosen[1].SeriesInstanceUID:
        del query.SeriesInstanceUID  # a list across series: no series key (relational)
    setup.dest_a.take()
    statuses = _pynetdicom_move(setup.archive, model, "HOSPA_WS", query)
    assert statuses and int(statuses[-1].Status) == 0x0000
    assert set(setup.dest_a.take()) == {str(d.SOPInstanceUID) for d in chosen}


def test_a_move_that_matches_nothing_is_not_a_success(setup: Setup) -> None:
    query = Dataset()
    query.QueryRetrieveLevel = "IMAGE"
    query.StudyInstanceUID = setup.study_uid
    query.SeriesInstanceUID = str(setup.study[0].SeriesInstanceUID)
    query.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.999999999"
    setup.dest_a.take()
    statuses = _pynetdicom_move(
        setup.archive, StudyRootQueryRetrieveInformationModelMove, "HOSPA_WS", query
    )
    final = statuses[-1]
    # 0xB000 with a failed sub-operation: python plugin 4.0 reports each C-MOVE as one
    # sub-operation, which Orthanc 1.10 counts as completed and failed at once
    assert int(final.Status) != 0x0000, final
    assert int(final.get("NumberOfFailedSuboperations", 0)) >= 1, final
    assert setup.dest_a.take() == {}


def test_a_move_at_an_unknown_level_fails(setup: Setup) -> None:
    query = Dataset()
    query.QueryRetrieveLevel = "FRAME"
    query.StudyInstanceUID = setup.study_uid
    statuses = _pynetdicom_move(
        setup.archive, StudyRootQueryRetrieveInformationModelMove, "HOSPA_WS", query
    )
    final = statuses[-1]
    assert int(final.Status) not in (0x0000, 0xFF00)
    assert int(final.get("NumberOfCompletedSuboperations", 0)) == 0
    assert setup.dest_a.take() == {}


def test_a_stock_orthanc_receives_and_pulls_single_images(
    setup: Setup, stock_peer: StockOrthanc
) -> None:
    """The stock Orthanc, registered as an AE of Hospital A, as the destination of a
    workstation's IMAGE-level movescu, then pulling an image itself (its own C-MOVE SCU
    asks for IMAGE level)."""
    arch = setup.archive
    arch.vna(
        "institution", "add", "Hospital A", "--ae", stock_peer.aet,
        "--host", "127.0.0.1", "--port", str(stock_peer.dicom_port),
    )  # fmt: skip
    first, last = setup.study[0], setup.study[-1]
    keys, expected = _keys(setup, "IMAGE", "-S")

    def moved_to_peer() -> bool:
        proc = _movescu(arch, "-S", stock_peer.aet, keys)
        return proc.returncode == 0 and "Success" in _final_status(proc.stderr)

    # the archive's modality list takes the new AE within seconds
    wait_until(moved_to_peer, "the archive to C-MOVE to the stock Orthanc", deadline=60)
    assert _peer_has(stock_peer, expected)

    stock_peer.add_modality("vna", arch.aet, arch.dicom_port)
    pulled = stock_peer.post(
        "/modalities/vna/move",
        json={
            "Level": "Instance",
            "TargetAet": stock_peer.aet,
            "Resources": [
                {
                    "StudyInstanceUID": setup.study_uid,
                    "SeriesInstanceUID": str(last.SeriesInstanceUID),
                    "SOPInstanceUID": str(last.SOPInstanceUID),
                }
            ],
        },
    )
    assert pulled.status_code == 200, pulled.text
    assert _peer_has(stock_peer, {str(first.SOPInstanceUID), str(last.SOPInstanceUID)})
    moved = [r for r in audit_records(arch) if r["event"] == "instances-transferred"]
    assert any(r["user"] == stock_peer.aet and r["detail"].get("level") == "IMAGE" for r in moved)


def _peer_has(peer: StockOrthanc, sop_uids: set[str]) -> bool:
    for sop_uid in sop_uids:
        found = peer.post("/tools/lookup", data=sop_uid).json()
        if not any(r.get("Type") == "Instance" for r in found):
            return False
    return True


# --------------------------------------------------------------------------- C-GET off


# Orthanc 1.10 and 1.12 accept the C-GET presentation contexts whatever the configuration
# and give plugins no C-GET hook; a C-GET their modality list does not allow is answered by
# aborting the association. What the archive can do is send nothing, never report
# success, and tell the operator why (the audit record of the refusal).


def _c_get_refusals(arch: Archive) -> list[dict[str, object]]:
    return [
        r
        for r in audit_records(arch)
        if r["event"] == "security-alert" and r["detail"].get("service") == "C-GET"
    ]


def test_getscu_while_c_get_is_off_gets_nothing_and_the_refusal_says_why(
    setup: Setup, tmp_path: Path
) -> None:
    out = tmp_path / "got"
    out.mkdir()
    before = len(_c_get_refusals(setup.archive))
    proc = subprocess.run(
        ["getscu", "-v", "-S", "-aet", "HOSPA", "-aec", setup.archive.aet, "-od", str(out),
         "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={setup.study_uid}",
         "127.0.0.1", str(setup.archive.dicom_port)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert list(out.iterdir()) == []
    assert proc.returncode != 0 or "Success" not in proc.stderr, proc.stderr
    wait_until(
        lambda: len(_c_get_refusals(setup.archive)) > before, "the C-GET refusal to be audited"
    )
    refusal = _c_get_refusals(setup.archive)[-1]
    assert refusal["user"] == "HOSPA"
    assert "C-MOVE" in str(refusal["detail"]["reason"]), refusal


def test_pynetdicom_c_get_while_off_is_never_a_success(setup: Setup) -> None:
    received: list[str] = []

    def on_store(event: evt.Event) -> int:
        received.append(str(event.request.AffectedSOPInstanceUID))
        return 0x0000

    ae = AE(ae_title="HOSPA")
    ae.add_requested_context(PatientRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(setup.study[0].SOPClassUID)
    assoc = ae.associate(
        "127.0.0.1", setup.archive.dicom_port, ae_title=setup.archive.aet,
        ext_neg=[build_role(setup.study[0].SOPClassUID, scp_role=True)],
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
    )  # fmt: skip
    statuses: list[int] = []
    if assoc.is_established:
        query = Dataset()
        query.QueryRetrieveLevel = "PATIENT"
        query.PatientID = PATIENT_ID
        statuses = [
            int(status.Status)
            for status, _ in assoc.send_c_get(query, PatientRootQueryRetrieveInformationModelGet)
            if "Status" in status
        ]
        if assoc.is_established:
            assoc.release()
    assert received == []
    assert 0x0000 not in statuses
