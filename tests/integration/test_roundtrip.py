"""pydicom's bundled files, across transfer syntaxes: stored with storescu, read back with
getscu and with Orthanc's WADO-RS, equal to what was sent, element by element and byte by
byte; and the storage area hands back exactly the bytes Orthanc gave it."""

from __future__ import annotations

import sqlite3
import subprocess
import warnings
from io import BytesIO
from pathlib import Path

import blake3
import pydicom
import pytest
from pydicom.data import get_testdata_files
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet

from archive.blobstore import attachment_digest
from archive.split import Span, split_dicom
from security.envelope import BlobNamer
from tests.integration.harness import Archive, multipart_parts

# transfer syntax -> the dcmtk option that proposes exactly it (storescu "-x?", getscu "+x?")
TS_OPTION = {
    "1.2.840.10008.1.2": "xi",
    "1.2.840.10008.1.2.1": "xe",
    "1.2.840.10008.1.2.2": "xb",
    "1.2.840.10008.1.2.1.99": "xd",
    "1.2.840.10008.1.2.5": "xr",
    "1.2.840.10008.1.2.4.50": "xy",
    "1.2.840.10008.1.2.4.51": "xx",
    "1.2.840.10008.1.2.4.70": "xs",
    "1.2.840.10008.1.2.4.80": "xt",
    "1.2.840.10008.1.2.4.81": "xu",
    "1.2.840.10008.1.2.4.90": "xv",
    "1.2.840.10008.1.2.4.91": "xw",
}


def bundled_files() -> list[tuple[Path, pydicom.Dataset]]:
    """Bundled files with file meta, SOP UIDs and a transfer syntax dcmtk can propose."""
    chosen: dict[str, tuple[Path, pydicom.Dataset]] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in sorted(get_testdata_files("*")):
            try:
                ds = pydicom.dcmread(name)
                syntax = str(ds.file_meta.TransferSyntaxUID)
                sop_uid = str(ds.SOPInstanceUID)
                str(ds.SOPClassUID)
            except Exception:  # noqa: S112 - not a usable Part 10 file
                continue
            if syntax in TS_OPTION and sop_uid not in chosen:
                chosen[sop_uid] = (Path(name), ds)
    return list(chosen.values())


FILES = bundled_files()


def dataset_equal(sent: pydicom.Dataset, received: pydicom.Dataset) -> list[str]:
    """Names of the data elements that differ (file meta excluded).

    Group lengths (gggg,0000) are retired (PS3.5 7.2) and DICOM receivers drop them on
    the network; Data Set Trailing Padding (FFFC,FFFC) is likewise dropped by the sending
    storescu itself. Neither carries data, so neither is compared.
    """
    differences = []
    tags = {
        t for t in set(sent.keys()) | set(received.keys()) if t.element != 0 and t != 0xFFFCFFFC
    }
    for tag in sorted(tags):
        a = sent.get(tag)
        b = received.get(tag)
        if a is None or b is None or a.value != b.value:
            differences.append(str(tag))
    return differences


def expected_digest(key: bytes, data: bytes, attachment: str) -> bytes:
    """The catalog's digest recomputed from the bytes read back: keyed BLAKE3 of each part
    (a new home's algorithm), bound in order (archive.blobstore.attachment_digest)."""
    spans = split_dicom(data) if attachment == "dicom" else [Span(0, len(data), "header")]
    parts = [
        (blake3.blake3(data[s.start : s.end], key=key).digest(), s.end - s.start) for s in spans
    ]
    return attachment_digest(BlobNamer(key, "blake3"), parts)


@pytest.fixture(scope="module")
def stored(archive: Archive) -> list[tuple[Path, pydicom.Dataset]]:
    """Send every usable bundled file with storescu; keep those Orthanc accepted."""
    accepted = []
    for path, ds in FILES:
        option = "-" + TS_OPTION[str(ds.file_meta.TransferSyntaxUID)]
        proc = archive.storescu("HOSPA", path, extra=("-R", option))
        if proc.returncode == 0:
            accepted.append((path, ds))
    rejected = sorted({p.name for p, _ in FILES} - {p.name for p, _ in accepted})
    print(f"accepted {len(accepted)} of {len(FILES)}; Orthanc refused {rejected}")
    assert len(accepted) >= 30, f"only {len(accepted)} of {len(FILES)} accepted: {rejected}"
    syntaxes = {str(ds.file_meta.TransferSyntaxUID) for _, ds in accepted}
    assert len(syntaxes) >= 8, f"too few transfer syntaxes accepted: {sorted(syntaxes)}"
    return accepted


def test_storage_area_returns_exact_bytes(
    archive: Archive, stored: list[tuple[Path, pydicom.Dataset]]
) -> None:
    """Every attachment read back hashes to the digest the storage area took of the bytes
    Orthanc handed it, and the file holds every element that was sent."""
    dedup_key = (archive.home / "keys" / "dedup.key").read_bytes()
    assert (archive.home / "keys" / "mac-algorithm").read_text().strip() == "blake3"
    catalog = sqlite3.connect(archive.home / "catalog.db")
    checked = 0
    for path, ds in stored:
        instance_id = archive.lookup(str(ds.SOPInstanceUID))
        assert instance_id, f"{path.name} is not in Orthanc"
        for name in archive.get(f"/instances/{instance_id}/attachments").json():
            base = f"/instances/{instance_id}/attachments/{name}"
            data = archive.get(base + "/data").content
            uuid = archive.get(base + "/info").json()["Uuid"]
            (digest,) = catalog.execute(
                "select digest from attachments where uuid = ?", (uuid,)
            ).fetchone()
            assert digest == expected_digest(dedup_key, data, name)
            checked += 1
        content = archive.get(f"/instances/{instance_id}/file").content
        stored_file = pydicom.dcmread(BytesIO(content))
        assert dataset_equal(ds, stored_file) == [], f"{path.name}: elements differ"
        if "PixelData" in ds:
            assert stored_file.PixelData == ds.PixelData
    assert checked > len(stored)  # "dicom" for all, "dicom-until-pixel-data" for images


UNCOMPRESSED = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"}


def test_getscu_returns_what_was_sent(
    archive: Archive, tmp_path: Path, stored: list[tuple[Path, pydicom.Dataset]]
) -> None:
    """dcmtk getscu, for the uncompressed syntaxes: the acceptor (Orthanc 1.10) picks an
    uncompressed syntax from getscu's proposals, so compressed files go to the next test."""
    checked = 0
    for path, ds in stored:
        syntax = str(ds.file_meta.TransferSyntaxUID)
        if syntax not in UNCOMPRESSED:
            continue
        out = tmp_path / path.stem
        out.mkdir()
        proc = subprocess.run(
            [
                "getscu",
                "-S",
                "+B",
                "+" + TS_OPTION[syntax],
                "-aet",
                "HOSPA",
                "-aec",
                archive.aet,
                "-od",
                str(out),
                "-k",
                "QueryRetrieveLevel=IMAGE",
                "-k",
                f"StudyInstanceUID={ds.StudyInstanceUID}",
                "-k",
                f"SeriesInstanceUID={ds.SeriesInstanceUID}",
                "-k",
                f"SOPInstanceUID={ds.SOPInstanceUID}",
                "127.0.0.1",
                str(archive.dicom_port),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        received = list(out.iterdir())
        assert proc.returncode == 0 and len(received) == 1, (
            f"{path.name}: getscu exit {proc.returncode}, {len(received)} files\n{proc.stderr}"
        )
        back = pydicom.dcmread(received[0])
        assert dataset_equal(ds, back) == [], f"{path.name} differs"
        if "PixelData" in ds and syntax == str(back.file_meta.TransferSyntaxUID):
            assert back.PixelData == ds.PixelData
        checked += 1
    assert checked >= 10


def test_cget_in_original_syntax_returns_what_was_sent(
    archive: Archive, stored: list[tuple[Path, pydicom.Dataset]]
) -> None:
    """pynetdicom C-GET proposing exactly the stored transfer syntax, for every file."""
    received: list[pydicom.Dataset] = []

    def on_store(event: evt.Event) -> int:
        dataset = event.dataset
        dataset.file_meta = event.file_meta
        received.append(dataset)
        return 0x0000

    for path, ds in stored:
        received.clear()
        syntax = str(ds.file_meta.TransferSyntaxUID)
        ae = AE(ae_title="HOSPA")
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
        ae.add_requested_context(ds.SOPClassUID, [syntax])
        assoc = ae.associate(
            "127.0.0.1",
            archive.dicom_port,
            ae_title=archive.aet,
            ext_neg=[build_role(ds.SOPClassUID, scp_role=True)],
            evt_handlers=[(evt.EVT_C_STORE, on_store)],
        )
        assert assoc.is_established
        query = pydicom.Dataset()
        query.QueryRetrieveLevel = "IMAGE"
        query.StudyInstanceUID = ds.StudyInstanceUID
        query.SeriesInstanceUID = ds.SeriesInstanceUID
        query.SOPInstanceUID = ds.SOPInstanceUID
        statuses = [
            status.Status
            for status, _ in assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet)
            if status
        ]
        assoc.release()
        assert statuses and statuses[-1] == 0x0000, f"{path.name}: C-GET statuses {statuses}"
        assert len(received) == 1, path.name
        back = received[0]
        assert str(back.file_meta.TransferSyntaxUID) == syntax
        assert dataset_equal(ds, back) == [], f"{path.name} differs"
        if "PixelData" in ds:
            assert back.PixelData == ds.PixelData


def test_wado_rs_returns_what_was_sent(
    archive: Archive, stored: list[tuple[Path, pydicom.Dataset]]
) -> None:
    accept = 'multipart/related; type="application/dicom"; transfer-syntax=*'
    for path, ds in stored:
        url = (
            f"/dicom-web/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
            f"/instances/{ds.SOPInstanceUID}"
        )
        answer = archive.get(url, headers={"Accept": accept})
        assert answer.status_code == 200, f"{path.name}: {answer.status_code}"
        parts = multipart_parts(answer.content, answer.headers["Content-Type"])
        assert len(parts) == 1
        instance_id = archive.lookup(str(ds.SOPInstanceUID))
        assert parts[0] == archive.get(f"/instances/{instance_id}/file").content
        back = pydicom.dcmread(BytesIO(parts[0]))
        assert str(back.file_meta.TransferSyntaxUID) == str(ds.file_meta.TransferSyntaxUID)
        assert dataset_equal(ds, back) == [], f"{path.name}: WADO-RS elements differ"
        if "PixelData" in ds:
            assert back.PixelData == ds.PixelData
