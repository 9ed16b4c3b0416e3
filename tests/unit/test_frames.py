"""Frames: offset arithmetic, fragment matching, Accept negotiation, and cutting frames out of
a real blob store (parts read one by one, never the whole file)."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

import archive.split
from archive.blobstore import BlobStore
from dicomweb.wado.frames import _bulk_value, _frame_reader, open_image
from dicomweb.wado.metadata import instance_metadata
from dicomweb.wado.pixels import (
    EXPLICIT_VR_LITTLE_ENDIAN,
    FramePlan,
    ImageGeometry,
    Plan,
    extract_bit_frame,
    fragments_per_frame,
    native_frame_bits,
    negotiate_frames,
    parse_frame_list,
)
from dicomweb.wado.rendered import negotiate_image, negotiate_rendered_many, rendered_params
from dicomweb.wado.uri import parse_wado_uri
from query.api import StoredInstance
from security.errors import InvalidInput, NotAcceptable, NotFound

JPEG = "1.2.840.10008.1.2.4.50"
RLE = "1.2.840.10008.1.2.5"


def _image(
    rows: int, columns: int, frames: int, bits: int, samples: int = 1, syntax: str = ""
) -> pydicom.Dataset:
    ds = pydicom.Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7.2"
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Rows, ds.Columns, ds.NumberOfFrames = rows, columns, frames
    ds.SamplesPerPixel = samples
    ds.PhotometricInterpretation = "MONOCHROME2" if samples == 1 else "RGB"
    if samples == 3:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated = bits
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    total_bits = rows * columns * samples * bits * frames
    rng = np.random.default_rng(rows * columns + frames)
    ds.PixelData = rng.integers(0, 256, size=(total_bits + 7) // 8, dtype=np.uint8).tobytes()
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax or ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def _item(ds: pydicom.Dataset, uuid: str) -> StoredInstance:
    return StoredInstance(
        str(ds.StudyInstanceUID),
        str(ds.SeriesInstanceUID),
        str(ds.SOPInstanceUID),
        str(ds.file_meta.TransferSyntaxUID),
        uuid,
    )


# -- arithmetic ----------------------------------------------------------------------------


def test_native_frame_ranges_multi_frame_and_odd_sizes() -> None:
    geometry = ImageGeometry(
        rows=3, columns=5, samples_per_pixel=1, bits_allocated=8, number_of_frames=3
    )
    assert native_frame_bits(geometry, 1) == (0, 120)
    assert native_frame_bits(geometry, 3) == (240, 360)  # byte 30..45, the pad byte is 45
    rgb16 = ImageGeometry(
        rows=2, columns=3, samples_per_pixel=3, bits_allocated=16, number_of_frames=2
    )
    assert native_frame_bits(rgb16, 2) == (2 * 18 * 8, 2 * 2 * 18 * 8)
    for bad in (0, 4):
        with pytest.raises(NotFound, match="3 frame"):
            native_frame_bits(geometry, bad)


def test_one_bit_frames_need_not_start_on_a_byte() -> None:
    # 3x3 pixels per frame = 9 bits: frame 2 starts at bit 9
    pixels = np.array([[1, 0, 1, 1, 0, 0, 1, 1, 1], [0, 1, 1, 0, 1, 0, 0, 0, 1]], dtype=np.uint8)
    packed = np.packbits(pixels.ravel(), bitorder="little").tobytes()
    for index in range(2):
        frame = extract_bit_frame(packed, index * 9, 9)
        back = np.unpackbits(np.frombuffer(frame, np.uint8), bitorder="little")[:9]
        assert back.tolist() == pixels[index].tolist()
        assert len(frame) == 2
    with pytest.raises(InvalidInput):
        extract_bit_frame(packed, 9, 20)


def test_fragments_to_frames() -> None:
    assert fragments_per_frame(3, 3, [], [10, 10, 10]) == [range(0, 1), range(1, 2), range(2, 3)]
    assert fragments_per_frame(4, 1, [], [10] * 4) == [range(0, 4)]
    # two frames of two fragments each, located by the Basic Offset Table
    assert fragments_per_frame(4, 2, [0, 20], [10, 10, 12, 8]) == [range(0, 2), range(2, 4)]
    assert fragments_per_frame(4, 2, [], [10] * 4) is None  # not knowable without decoding
    assert fragments_per_frame(4, 2, [0, 15], [10] * 4) is None  # offset inside a fragment


def test_frame_list() -> None:
    assert parse_frame_list("3,1, 2") == [3, 1, 2]
    for bad in ("0", "1,,2", "a", "-1", ""):
        with pytest.raises(InvalidInput):
            parse_frame_list(bad)


# -- negotiation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "stored", "count", "expected"),
    [
        (
            None,
            EXPLICIT_VR_LITTLE_ENDIAN,
            2,
            FramePlan(Plan.STORED, "application/octet-stream", EXPLICIT_VR_LITTLE_ENDIAN),
        ),
        (
            'multipart/related; type="application/octet-stream"',
            ImplicitVRLittleEndian,
            1,
            FramePlan(Plan.STORED, "application/octet-stream", EXPLICIT_VR_LITTLE_ENDIAN),
        ),
        ('multipart/related; type="*/*"', JPEG, 1, FramePlan(Plan.STORED, "image/jpeg", JPEG)),
        (
            'multipart/related; type="application/octet-stream"; transfer-syntax=*',
            RLE,
            1,
            FramePlan(Plan.STORED, "application/octet-stream", RLE),
        ),
        (
            'multipart/related; type="application/octet-stream"',
            JPEG,
            1,
            FramePlan(Plan.TRANSCODE, "application/octet-stream", EXPLICIT_VR_LITTLE_ENDIAN),
        ),
        (
            'multipart/related; type="image/jpeg"',
            EXPLICIT_VR_LITTLE_ENDIAN,
            1,
            FramePlan(Plan.TRANSCODE, "image/jpeg", JPEG),
        ),
        (
            'multipart/related; type="image/x-dicom-rle"',
            RLE,
            1,
            FramePlan(Plan.STORED, "image/dicom-rle", RLE),
        ),
        # quality values order offers; the stored bytes win among equals
        (
            'multipart/related; type="image/jpeg"; q=0.5, '
            'multipart/related; type="application/octet-stream"',
            JPEG,
            1,
            FramePlan(Plan.TRANSCODE, "application/octet-stream", EXPLICIT_VR_LITTLE_ENDIAN),
        ),
        (
            'multipart/related; type="application/octet-stream", '
            'multipart/related; type="image/jpeg"',
            JPEG,
            1,
            FramePlan(Plan.STORED, "image/jpeg", JPEG),
        ),
        # a bare media type is a single-part answer, for one frame only
        (
            "application/octet-stream",
            EXPLICIT_VR_LITTLE_ENDIAN,
            1,
            FramePlan(Plan.STORED, "application/octet-stream", EXPLICIT_VR_LITTLE_ENDIAN, False),
        ),
    ],
)
def test_negotiate_frames(accept: str | None, stored: str, count: int, expected: FramePlan) -> None:
    assert negotiate_frames(accept, stored, count) == expected


def test_negotiate_frames_refusals() -> None:
    for accept, count in (
        ("text/html", 1),
        ("application/octet-stream", 2),
        ('multipart/related; type="image/jpeg"; transfer-syntax=1.2.3', 1),
    ):
        with pytest.raises(NotAcceptable):
            negotiate_frames(accept, EXPLICIT_VR_LITTLE_ENDIAN, count)


def test_negotiate_image_and_rendered_parameters() -> None:
    assert negotiate_image(None) == "image/jpeg"
    assert negotiate_image("image/png, image/jpeg") == "image/png"
    assert negotiate_image("image/png;q=0.2, image/jpeg") == "image/jpeg"
    assert negotiate_image("*/*") == "image/jpeg"
    with pytest.raises(NotAcceptable):
        negotiate_image("application/dicom")
    assert rendered_params({"quality": "80", "other": "x"}, default_viewport="128,128") == {
        "quality": "80",
        "viewport": "128,128",
    }
    assert rendered_params({"viewport": "64,64"}, default_viewport="128,128") == {
        "viewport": "64,64"
    }
    for bad in ({"quality": "0"}, {"quality": "101"}, {"viewport": "a/../b"}):
        with pytest.raises(InvalidInput):
            rendered_params(bad, default_viewport=None)


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, ("image/jpeg", False)),  # dicomweb-client without media types
        ("image/jpeg", ("image/jpeg", False)),  # dicomweb-client, Orthanc's plugin
        ("image/*", ("image/jpeg", False)),
        ("image/png, image/jpeg", ("image/png", False)),
        ('multipart/related; type="image/jpeg"', ("image/jpeg", True)),
        ("multipart/related; type=image/png", ("image/png", True)),
        ('multipart/related; type="image/png";q=0.5, image/gif', ("image/gif", False)),
        ('multipart/related; type="application/dicom", */*', ("image/jpeg", False)),
    ],
)
def test_a_rendered_study_or_series_is_one_image_unless_a_multipart_is_asked_for(
    accept: str | None, expected: tuple[str, bool]
) -> None:
    assert negotiate_rendered_many(accept) == expected


def test_a_rendered_study_refuses_what_it_cannot_render() -> None:
    with pytest.raises(NotAcceptable) as caught:
        negotiate_rendered_many('application/dicom, multipart/related; type="video/mp4"')
    assert "multipart/related" in str(caught.value)


def test_wado_uri_parameters() -> None:
    base = {"requestType": "WADO", "studyUID": "1.2", "seriesUID": "1.2.3", "objectUID": "1.2.4"}
    parsed = parse_wado_uri(base)
    assert parsed.content_type == "image/jpeg"  # PS3.18 9.1.2: images by default
    parsed = parse_wado_uri(
        {**base, "contentType": "application/dicom", "transferSyntax": "1.2.840.10008.1.2.1"}
    )
    assert (parsed.content_type, parsed.transfer_syntax) == (
        "application/dicom",
        "1.2.840.10008.1.2.1",
    )
    rendered = parse_wado_uri(
        {**base, "rows": "64", "windowCenter": "40", "windowWidth": "400", "frameNumber": "2"}
    )
    assert rendered.render == {"viewport": "64,64", "window": "40,400,linear"}
    assert rendered.frame == 2
    for bad in (
        {**base, "requestType": "X"},
        {**base, "studyUID": "1.2/../x"},
        {k: v for k, v in base.items() if k != "objectUID"},
        {**base, "windowCenter": "40"},
        {**base, "imageQuality": "200"},
    ):
        with pytest.raises(InvalidInput):
            parse_wado_uri(bad)
    with pytest.raises(NotAcceptable):
        parse_wado_uri({**base, "contentType": "text/html"})


# -- against a real blob store -------------------------------------------------------------


def _put(
    store: BlobStore, to_bytes: Callable[[pydicom.Dataset], bytes], ds: pydicom.Dataset, uuid: str
) -> StoredInstance:
    store.put(uuid, 1, to_bytes(ds))
    return _item(ds, uuid)


@pytest.mark.parametrize(
    ("rows", "columns", "frames", "bits", "samples", "syntax"),
    [
        (33, 31, 3, 8, 1, ExplicitVRLittleEndian),  # odd frame size, padded value
        (16, 16, 4, 16, 1, ImplicitVRLittleEndian),
        (5, 7, 2, 8, 3, ExplicitVRLittleEndian),  # RGB
        (3, 3, 5, 1, 1, ExplicitVRLittleEndian),  # 1-bit: frames off byte boundaries
    ],
)
def test_native_frames_from_the_blobs(
    store: BlobStore,
    to_bytes: Callable[[pydicom.Dataset], bytes],
    rows: int,
    columns: int,
    frames: int,
    bits: int,
    samples: int,
    syntax: str,
) -> None:
    # small pixel chunks, so that frames straddle stored parts
    total = rows * columns * samples * bits * frames // 8
    chunk = min(50, total // 3)
    store = BlobStore(store.catalog, store.keys, store.hot, store.settings, native_chunk=chunk)
    ds = _image(rows, columns, frames, bits, samples, syntax)
    item = _put(store, to_bytes, ds, "mf")
    image = open_image(store, item)
    assert len(image.parts) > 3  # header + several pixel chunks
    reader = _frame_reader(image, store)
    assert reader is not None
    size = rows * columns * samples * bits
    all_bits = np.unpackbits(np.frombuffer(ds.PixelData, np.uint8), bitorder="little")
    for number in range(1, frames + 1):
        if bits % 8 == 0:
            expected = ds.PixelData[(number - 1) * size // 8 : number * size // 8]
        else:
            chunk = all_bits[(number - 1) * size : number * size]
            expected = np.packbits(chunk, bitorder="little").tobytes()
        assert reader(number) == expected, number


def test_encapsulated_frames_are_fragment_parts(
    store: BlobStore, to_bytes: Callable[[pydicom.Dataset], bytes]
) -> None:
    ds = pydicom.dcmread(get_testdata_file("SC_rgb_rle_2frame.dcm"))
    item = _put(store, to_bytes, ds, "rle")
    reader = _frame_reader(open_image(store, item), store)
    assert reader is not None
    assert [reader(1), reader(2)] == list(generate_frames(ds.PixelData, number_of_frames=2))
    # two fragments per frame, told apart by the Basic Offset Table
    frames = [b"\x01" * 10 + b"\x02" * 6, b"\x03" * 8 + b"\x04" * 4]
    split = encapsulate([frames[0], frames[1]], fragments_per_frame=2, has_bot=True)
    multi = _image(4, 4, 2, 8, syntax=RLE)
    multi.PixelData = split
    multi["PixelData"].is_undefined_length = True
    multi["PixelData"].VR = "OB"
    item = _put(store, to_bytes, multi, "two-fragments")
    image = open_image(store, item)
    assert len(image.parts) == 2 + 4 + 1  # header, table, four fragments, delimiter
    reader = _frame_reader(image, store)
    assert reader is not None
    assert [reader(1), reader(2)] == frames


def test_metadata_bulk_data_uris(tmp_path: Path) -> None:
    ds = _image(4, 4, 1, 16)
    ds.add_new(0x00091002, "OB", b"\x02" * 100_000)
    inner = pydicom.Dataset()
    inner.add_new(0x00091003, "OB", b"\x03" * 70_000)
    ds.add_new(0x00091010, "SQ", pydicom.Sequence([pydicom.Dataset(), inner]))
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    data = buffer.getvalue()
    header = data[: archive.split.pixel_data_offset(data)]
    url = "http://gw/dicom-web/studies/1/series/2/instances/3"
    document = instance_metadata(header, url)
    assert document["7FE00010"] == {"vr": "OW", "BulkDataURI": f"{url}/bulkdata/7FE00010"}
    assert document["00091002"]["BulkDataURI"] == f"{url}/bulkdata/00091002"
    nested = document["00091010"]["Value"][1]["00091003"]
    assert nested["BulkDataURI"] == f"{url}/bulkdata/00091010/1/00091003"
    parsed = pydicom.dcmread(io.BytesIO(header), stop_before_pixels=True)
    assert _bulk_value(parsed, "00091010/1/00091003") == b"\x03" * 70_000
    assert _bulk_value(parsed, "00091002") == b"\x02" * 100_000
    for missing in ("00091010/5/00091003", "00100010", "00099999"):
        with pytest.raises(NotFound):
            _bulk_value(parsed, missing)
    with pytest.raises(InvalidInput):
        _bulk_value(parsed, "../x")
