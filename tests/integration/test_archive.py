"""The storage area inside a real Orthanc: dedup across institutions, header-only growth,
compression, tamper detection, crash safety, key rotation, refusal of bad input."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import threading
import time
from collections.abc import Callable
from io import BytesIO
from pathlib import Path

import pydicom
import pytest
import zstandard
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom import _config as pynetdicom_config
from pynetdicom.sop_class import CTImageStorage

from synthetic import StudySpec, write_study
from tests.integration.harness import Archive


@pytest.fixture(scope="module")
def ct_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """A realistic synthetic CT study: 2 series of 20 slices, 512x512 int16."""
    spec = StudySpec(series=2, slices=20, patient_id="ITEST01", seed=7)
    return write_study(spec, tmp_path_factory.mktemp("ct"))


def catalog_rows(arch: Archive, sql: str, *params: object) -> list[tuple[object, ...]]:
    with sqlite3.connect(arch.home / "catalog.db") as conn:
        return list(conn.execute(sql, params))


def blob_kinds(arch: Archive) -> dict[str, int]:
    rows = catalog_rows(arch, "select kind, count(*) from blobs where refcount > 0 group by kind")
    return {str(kind): int(n) for kind, n in rows}  # type: ignore[call-overload]


def blob_sizes(arch: Archive) -> dict[bytes, int]:
    """Every blob in the catalog (referenced or not) and its stored size."""
    return {bytes(b): int(n) for b, n in catalog_rows(arch, "select id, stored_size from blobs")}  # type: ignore[call-overload]


def header_copy_blobs(arch: Archive) -> set[bytes]:
    """The blobs of Orthanc's header copies (dicom-until-pixel-data attachments): Orthanc 1.12
    makes them when it first reads an instance stored before, not when it is stored."""
    rows = catalog_rows(
        arch,
        "select p.blob_id from attachment_parts p join attachments a on a.uuid = p.uuid "
        "where a.content_type != 1",
    )
    return {bytes(b) for (b,) in rows}  # type: ignore[misc]


def send(arch: Archive, aet: str, *paths: Path) -> None:
    """storescu, then wait until the catalog has indexed what was sent."""
    proc = arch.storescu(aet, *paths, extra=("+sd", "+r") if len(paths) == 1 else ())
    assert proc.returncode == 0, proc.stderr
    arch.stats()


def test_second_institution_adds_no_blob_and_records_both(
    archive: Archive, ct_files: list[Path]
) -> None:
    folder = ct_files[0].parent.parent
    send(archive, "HOSPA", folder)
    first = archive.stats()
    blobs_first = blob_sizes(archive)
    # another institution stores into A's study only with a read+report grant (as STOW-RS)
    assert archive.storescu("HOSPB", ct_files[0]).returncode != 0
    study_uid = str(pydicom.dcmread(ct_files[0], stop_before_pixels=True).StudyInstanceUID)
    archive.vna(
        "grant", "add", study_uid, "--from", "Hospital A", "--to", "Hospital B",
        "--permission", "read+report",
    )  # fmt: skip
    send(archive, "HOSPB", folder)
    second = archive.stats()
    assert second["instances"] == first["instances"]
    # the second copy is deduplicated: no new blob, except Orthanc 1.12's header copies of
    # the instances it read meanwhile (Debian 13: +3), which Orthanc 1.10 made at the store
    blobs_second = blob_sizes(archive)
    new_blobs = set(blobs_second) - set(blobs_first)
    assert new_blobs <= header_copy_blobs(archive)
    assert second["blobs"] == first["blobs"] + len(new_blobs)
    assert second["stored_bytes"] == first["stored_bytes"] + sum(blobs_second[b] for b in new_blobs)
    sop_uid = str(pydicom.dcmread(ct_files[3], stop_before_pixels=True).SOPInstanceUID)
    sources = catalog_rows(
        archive,
        "select i.name, s.sender from instance_sources s join institutions i "
        "on i.id = s.institution_id where s.sop_uid = ? order by i.name",
        sop_uid,
    )
    assert sources == [("Hospital A", "HOSPA"), ("Hospital B", "HOSPB")]
    # the index names instances with Orthanc's own ids (computed, not asked for)
    ((orthanc_id, attachment),) = catalog_rows(
        archive, "select orthanc_id, attachment_uuid from instances where sop_uid = ?", sop_uid
    )
    instance_id = archive.lookup(sop_uid)
    assert orthanc_id == instance_id
    assert (
        attachment == archive.get(f"/instances/{instance_id}/attachments/dicom/info").json()["Uuid"]
    )


def test_edited_header_adds_only_header_blobs(
    archive: Archive, ct_files: list[Path], tmp_path: Path
) -> None:
    send(archive, "HOSPA", ct_files[0].parent.parent)
    before = blob_kinds(archive)
    edited = []
    for i, path in enumerate(ct_files[:5]):
        ds = pydicom.dcmread(path)
        ds.PatientName = "Corrected^Name"
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        out = tmp_path / f"edited{i}.dcm"
        ds.save_as(out, enforce_file_format=True)
        edited.append(out)
    send(archive, "HOSPA", *edited)
    after = blob_kinds(archive)
    assert after.get("pixels") == before.get("pixels"), "pixel blobs must be shared"
    assert after["header"] - before["header"] == len(edited)
    assert after.get("trailer", 0) == before.get("trailer", 0)


def test_ct_study_is_stored_well_under_raw_size(
    fresh_archive: Callable[[], Archive], ct_files: list[Path]
) -> None:
    arch = fresh_archive()
    send(arch, "HOSPA", ct_files[0].parent.parent)
    stats = arch.stats()
    raw = sum(p.stat().st_size for p in ct_files)
    assert stats["instances"] == len(ct_files)
    ratio = stats["stored_bytes"] / raw
    # zstd level 1 (the store's default) packs CT about 2x (synthetic/ is calibrated on a
    # real slice): splitting, naming and sealing the parts may add next to nothing to that
    zstd1 = sum(len(zstandard.ZstdCompressor(level=1).compress(p.read_bytes())) for p in ct_files)
    print(
        f"synthetic CT: {raw:,} bytes sent, {stats['stored_bytes']:,} stored "
        f"(ratio {ratio:.3f}; zstd -1 of the files {zstd1:,}; "
        f"Orthanc handed over {stats['logical_bytes']:,})"
    )
    assert stats["stored_bytes"] < 1.03 * zstd1
    assert ratio < 0.6


def test_flipped_byte_fails_loudly_and_fsck_names_it(
    fresh_archive: Callable[[], Archive], ct_files: list[Path]
) -> None:
    arch = fresh_archive()
    send(arch, "HOSPA", *ct_files[:3])
    sop_uid = str(pydicom.dcmread(ct_files[1], stop_before_pixels=True).SOPInstanceUID)
    ((blob_hex,),) = catalog_rows(
        arch,
        "select hex(b.id) from instances i join attachment_parts p on p.uuid = i.attachment_uuid "
        "join blobs b on b.id = p.blob_id where i.sop_uid = ? and b.kind = 'pixels'",
        sop_uid,
    )
    blob = str(blob_hex).lower()
    payload = arch.home / "blobs" / blob[:2] / blob[2:4] / blob
    data = bytearray(payload.read_bytes())
    data[len(data) // 2] ^= 0x01
    payload.write_bytes(bytes(data))

    instance_id = arch.lookup(sop_uid)
    answer = arch.get(f"/instances/{instance_id}/file")
    assert answer.status_code >= 500, "a tampered blob must never be served"
    other = arch.lookup(str(pydicom.dcmread(ct_files[0], stop_before_pixels=True).SOPInstanceUID))
    assert arch.get(f"/instances/{other}/file").status_code == 200

    fsck = arch.vna("fsck", check=False)
    assert fsck.returncode == 1
    assert blob in fsck.stdout and "DAMAGED" in fsck.stdout
    report = json.loads(arch.vna("fsck", "--json", check=False).stdout)
    assert report["ok"] is False
    assert [d["blob"] for d in report["damaged_blobs"]] == [blob]


def test_sigkill_during_ingest_loses_nothing_acknowledged(
    fresh_archive: Callable[[], Archive], tmp_path: Path
) -> None:
    arch = fresh_archive()
    files = write_study(
        StudySpec(series=2, slices=150, rows=256, columns=256, patient_id="KILL01", seed=3),
        tmp_path / "kill",
    )
    acknowledged: list[str] = []
    failures: list[str] = []

    def sender() -> None:
        ae = AE(ae_title="HOSPA")
        ae.add_requested_context(CTImageStorage)
        assoc = ae.associate("127.0.0.1", arch.dicom_port, ae_title=arch.aet)
        if not assoc.is_established:
            failures.append("no association")
            return
        for path in files:
            ds = pydicom.dcmread(path)
            status = assoc.send_c_store(ds)
            if not status or not assoc.is_established:
                break
            if status.Status == 0x0000:
                acknowledged.append(str(ds.SOPInstanceUID))
        if assoc.is_established:
            assoc.release()

    thread = threading.Thread(target=sender)
    thread.start()
    deadline = time.monotonic() + 120
    while len(acknowledged) < 40 and time.monotonic() < deadline and thread.is_alive():
        time.sleep(0.02)
    old_pid = arch.orthanc_pid()
    os.kill(old_pid, signal.SIGKILL)
    thread.join(60)
    assert not failures
    assert 40 <= len(acknowledged) < len(files), "the kill must land mid-run"

    # the supervisor restarts Orthanc after recovery
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready = arch.home / "run" / "ready"
        if ready.exists() and json.loads(ready.read_text())["pid"] != old_pid:
            break
        time.sleep(0.2)
    else:
        pytest.fail("Orthanc was not restarted")

    sent = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID): p for p in files}
    for sop_uid in acknowledged:
        instance_id = arch.lookup(sop_uid)
        assert instance_id, f"acknowledged instance {sop_uid} is missing"
        answer = arch.get(f"/instances/{instance_id}/file")
        assert answer.status_code == 200
        back = pydicom.dcmread(BytesIO(answer.content))
        assert back.PixelData == pydicom.dcmread(sent[sop_uid]).PixelData
    # what was journaled when Orthanc died is digested after the restart
    assert arch.stats()["pending"] == 0
    arch.down()
    fsck = json.loads(arch.vna("fsck", "--json", check=False).stdout)
    assert fsck["ok"] is True, fsck
    assert fsck["orphan_payloads"] == [] and fsck["orphan_attachments"] == []


def test_key_rotation_keeps_old_blobs_readable(
    fresh_archive: Callable[[], Archive], ct_files: list[Path], tmp_path: Path
) -> None:
    arch = fresh_archive()
    send(arch, "HOSPA", *ct_files[:4])
    (old_key,) = arch.stats()["keys"]
    originals = {}
    for path in ct_files[:4]:
        instance_id = arch.lookup(
            str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        )
        originals[instance_id] = arch.get(f"/instances/{instance_id}/file").content

    rotated_at = time.time()
    arch.vna("keys", "rotate")
    keys = json.loads(arch.vna("keys", "list", "--json").stdout)
    current = [k["id"] for k in keys if k["current"]]
    assert len(current) == 1 and current[0] != old_key
    assert arch.stats()["keys"] == {current[0]: arch.stats()["blobs"]}
    for instance_id, content in originals.items():
        assert arch.get(f"/instances/{instance_id}/file").content == content

    ds = pydicom.dcmread(ct_files[5])
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PixelData = bytes(reversed(ds.PixelData))  # new pixels: new blobs
    path = tmp_path / "after-rotation.dcm"
    ds.save_as(path, enforce_file_format=True)
    send(arch, "HOSPA", path)
    new_keys = catalog_rows(
        arch, "select distinct kek_id from blobs where created_at > ?", rotated_at
    )
    assert new_keys == [(current[0],)]


def _dicom_attachments(archive: Archive, *, files: bool = True) -> set[str]:
    """The DICOM-file attachments in the catalog (digested or still journaled); with
    ``files=False`` the others (Orthanc's header copies, dicom-until-pixel-data)."""
    where = "content_type = 1" if files else "content_type != 1"
    with sqlite3.connect(f"file:{archive.home / 'catalog.db'}?mode=ro", uri=True) as db:
        return {
            str(uuid)
            for table in ("attachments", "pending_attachments")
            for (uuid,) in db.execute(f"SELECT uuid FROM {table} WHERE {where}")  # noqa: S608
        }


def test_malformed_and_unauthorised_input_is_refused(
    archive: Archive, ct_files: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    send(archive, "HOSPA", ct_files[0])
    before = archive.stats()
    files_before = _dicom_attachments(archive)
    copies_before = _dicom_attachments(archive, files=False)

    # not DICOM at all, over Orthanc's REST API
    answer = archive.post("/instances", data=b"this is not a DICOM file" * 10)
    assert answer.status_code == 400

    # a Part 10 file whose data set is garbage, over DIMSE
    good = pydicom.dcmread(ct_files[1])
    broken = tmp_path / "broken.dcm"
    good.save_as(broken, enforce_file_format=True)
    raw = bytearray(broken.read_bytes())
    meta_end = 132 + 12 + int.from_bytes(raw[140:144], "little")
    # keep the leading SOP Class/Instance UIDs (pynetdicom reads them), garble the rest
    start = meta_end + 400
    raw[start : start + 64] = b"\xff" * 64
    broken.write_bytes(bytes(raw[: start + 1000]))
    # send the file's bytes as they are, without pynetdicom decoding (and refusing) them
    monkeypatch.setattr(pynetdicom_config, "STORE_SEND_CHUNKED_DATASET", True)
    ae = AE(ae_title="HOSPA")
    ae.dimse_timeout = 5  # a truncated stream may get no answer at all: that is a refusal too
    ae.add_requested_context(CTImageStorage, good.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", archive.dicom_port, ae_title=archive.aet)
    assert assoc.is_established
    status = assoc.send_c_store(broken)
    if assoc.is_established:
        assoc.release()
    assert not status or status.Status != 0x0000

    # a well-formed, new instance from an AE title no institution owns
    stranger = pydicom.dcmread(ct_files[2])
    stranger.SOPInstanceUID = generate_uid()
    stranger.file_meta.MediaStorageSOPInstanceUID = stranger.SOPInstanceUID
    stranger_file = tmp_path / "stranger.dcm"
    stranger.save_as(stranger_file, enforce_file_format=True)
    ae = AE(ae_title="STRANGER")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", archive.dicom_port, ae_title=archive.aet)
    assert assoc.is_established
    status = assoc.send_c_store(stranger)
    if assoc.is_established:
        assoc.release()
    # Orthanc refuses an unregistered AE before the archive's filter: it ends the association
    assert not status or status.Status != 0x0000
    proc = archive.storescu("STRANGER", stranger_file)
    assert proc.returncode != 0

    after = archive.stats()
    assert after["instances"] == before["instances"]
    # DICOM files; Orthanc 1.12 may meanwhile add header copies (dicom-until-pixel-data)
    # of instances it had stored before, when something reads them
    assert _dicom_attachments(archive) == files_before
    # no blob is referenced by what was refused. Orthanc 1.12 may hand the storage area a
    # broken data set it then drops (create, then remove): that blob is left unreferenced
    # for gc, like any removed attachment's, and holds nothing any answer reaches. New
    # referenced blobs can only be Orthanc 1.12's header copies of instances stored before
    # (a Debian 13 run: 255 -> 257 with two new copies; the DICOM files are unchanged above)
    new_copies = _dicom_attachments(archive, files=False) - copies_before
    assert (after["blobs"] - after["unreferenced_blobs"]) - (
        before["blobs"] - before["unreferenced_blobs"]
    ) <= len(new_copies)
    assert archive.lookup(str(stranger.SOPInstanceUID)) is None
