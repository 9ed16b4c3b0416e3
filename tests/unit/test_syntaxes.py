"""dicomweb.wado.syntaxes and the Accept parsing of dicomweb.wado.retrieve: which transfer syntax an
instance goes out in, and Implicit VR LE re-encoded as Explicit VR LE part by part."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from archive.api import AttachmentPart
from archive.split import NATIVE_CHUNK, split_dicom
from dicomweb.wado.retrieve import AcceptedDicom, negotiate_dicom
from dicomweb.wado.syntaxes import available_syntaxes, explicit_parts, target_syntax
from security.errors import NotAcceptable

EXPLICIT = "1.2.840.10008.1.2.1"
IMPLICIT = "1.2.840.10008.1.2"
JPEG = "1.2.840.10008.1.2.4.50"
J2K = "1.2.840.10008.1.2.4.90"


def _converted(data: bytes) -> tuple[pydicom.Dataset, list[AttachmentPart]]:
    spans = split_dicom(data)
    parts = [AttachmentPart(s.start, s.end, s.kind) for s in spans]
    pieces = explicit_parts(parts, [data[s.start : s.end] for s in spans])
    return pydicom.dcmread(BytesIO(b"".join(bytes(p) for p in pieces))), parts


def _same_elements(got: pydicom.Dataset, original: pydicom.Dataset) -> None:
    assert [e.tag for e in got] == [e.tag for e in original]
    for element in original:
        if element.VR != "SQ":
            assert got[element.tag].value == element.value, element.tag


@pytest.mark.parametrize("name", ["MR_small_implicit.dcm", "rtplan.dcm"])
def test_implicit_files_become_explicit_with_every_element(name: str) -> None:
    data = Path(get_testdata_file(name, download=False)).read_bytes()
    original = pydicom.dcmread(BytesIO(data))
    assert original.file_meta.TransferSyntaxUID == IMPLICIT
    got, _parts = _converted(data)
    assert got.file_meta.TransferSyntaxUID == EXPLICIT
    assert not got.original_encoding[0]  # read as explicit VR
    _same_elements(got, original)
    if "PixelData" in original:
        assert got["PixelData"].VR == "OW"
        assert np.array_equal(got.pixel_array, original.pixel_array)


def test_8_bit_pixels_and_a_trailer(tmp_path: Path) -> None:
    ds = pydicom.dcmread(get_testdata_file("MR_small_implicit.dcm", download=False))
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = bytes(range(256)) * (ds.Rows * ds.Columns // 256)
    ds.DataSetTrailingPadding = b"\0" * 6
    path = tmp_path / "implicit8.dcm"
    ds.save_as(path, implicit_vr=True, little_endian=True, enforce_file_format=True)
    data = path.read_bytes()
    got, parts = _converted(data)
    assert [p.kind for p in parts] == ["header", "pixels", "trailer"]
    assert got["PixelData"].VR == "OB"
    assert got.PixelData == ds.PixelData
    assert got.DataSetTrailingPadding == b"\0" * 6


def test_target_syntax() -> None:
    assert target_syntax(IMPLICIT, (EXPLICIT,), False) == (EXPLICIT, True)
    assert target_syntax(EXPLICIT, (EXPLICIT,), False) == (None, True)
    assert target_syntax(J2K, (EXPLICIT,), True) == (None, True)  # transfer-syntax=*
    assert target_syntax(J2K, (EXPLICIT,), False) == (None, False)  # no codec in Orthanc
    assert target_syntax(J2K, (J2K, EXPLICIT), False) == (None, True)
    # Explicit VR LE, always lossless, wins over a lossy offer listed first
    assert target_syntax(IMPLICIT, (JPEG, EXPLICIT), False) == (EXPLICIT, True)
    assert target_syntax(IMPLICIT, (JPEG,), False) == (JPEG, True)
    assert target_syntax(JPEG, ("1.2.3.4",), False) == (None, False)
    assert available_syntaxes(J2K) == (J2K,)
    assert available_syntaxes(JPEG)[:2] == (JPEG, EXPLICIT)


def test_negotiate_dicom() -> None:
    default = AcceptedDicom((EXPLICIT,), False)
    assert negotiate_dicom(None) == default
    assert negotiate_dicom("*/*") == default
    assert negotiate_dicom('multipart/related; type="application/dicom"') == default
    assert negotiate_dicom('multipart/related; type="application/dicom"; transfer-syntax=*') == (
        AcceptedDicom((), True)
    )
    two = (
        f'multipart/related; type="application/dicom"; transfer-syntax={JPEG},'
        f'multipart/related; type="application/dicom"; transfer-syntax={EXPLICIT},'
        'multipart/related; type="application/dicom"; transfer-syntax=*; q=0'
    )
    assert negotiate_dicom(two) == AcceptedDicom((JPEG, EXPLICIT), False)
    with pytest.raises(NotAcceptable):
        negotiate_dicom("text/html")


def test_pixel_data_stored_in_several_parts(tmp_path: Path) -> None:
    """Native pixel data over ``NATIVE_CHUNK`` is stored as several parts; all but the
    first go out untouched."""
    ds = pydicom.dcmread(get_testdata_file("MR_small_implicit.dcm", download=False))
    frames = NATIVE_CHUNK // (ds.Rows * ds.Columns * 2) + 2
    ds.NumberOfFrames = frames
    rng = np.random.default_rng(3)
    ds.PixelData = rng.integers(0, 4096, size=(frames, ds.Rows, ds.Columns), dtype="<u2").tobytes()
    path = tmp_path / "large.dcm"
    ds.save_as(path, implicit_vr=True, little_endian=True, enforce_file_format=True)
    got, parts = _converted(path.read_bytes())
    assert [p.kind for p in parts].count("pixels") > 1
    assert got.PixelData == ds.PixelData
