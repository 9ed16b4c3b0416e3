"""WADO-RS metadata from header bytes."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file

from archive.blobstore import BlobStore
from archive.split import pixel_data_offset
from dicomweb.wado.metadata import instance_metadata


def _header(data: bytes) -> bytes:
    return data[: pixel_data_offset(data) or len(data)]


def test_metadata_matches_the_data_set() -> None:
    data = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    document = instance_metadata(_header(data))
    ds = pydicom.dcmread(BytesIO(data))
    back = pydicom.Dataset.from_json(document)
    assert back.SOPInstanceUID == ds.SOPInstanceUID
    assert back.PatientName == ds.PatientName
    assert back.ImagePositionPatient == ds.ImagePositionPatient
    assert "7FE00010" not in document
    assert not any(tag.startswith("0002") for tag in document)  # no file meta


def test_large_binary_values_are_left_out_small_ones_inline() -> None:
    ds = pydicom.Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = "1.2.3"
    ds.add_new(0x00091001, "OB", b"\x01" * 16)
    ds.add_new(0x00091002, "OB", b"\x02" * 100_000)
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    buffer = BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    document = instance_metadata(buffer.getvalue())
    assert "InlineBinary" in document["00091001"]
    assert "00091002" not in document


def test_get_header_reads_only_the_header(store: BlobStore, small_ct: list[bytes]) -> None:
    store.put("h", 1, small_ct[0])
    assert store.get_header("h") == _header(small_ct[0])
