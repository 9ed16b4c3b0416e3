"""Splitting DICOM Part 10 files into header / pixel / trailer spans (archive.split)."""

from __future__ import annotations

import io
import math
import random
import struct
import warnings
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file, get_testdata_files
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, generate_fragments, parse_basic_offsets
from pydicom.errors import InvalidDicomError
from pydicom.sequence import Sequence
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
    generate_uid,
)

from archive import split
from archive.split import Span, pixel_data_offset, split_dicom

SEQUENCE_DELIMITER_LE = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"

# every regular file pydicom bundles (DICOM or not), sorted, with a readable test id; not
# the files of pydicom-data (installed for tests/unit/test_synthetic.py), which
# get_testdata_files() lists as well
_PYDICOM_DATA = Path(pydicom.data.__file__).parent
BUNDLED = sorted(
    Path(f) for f in get_testdata_files() if Path(f).is_file() and _PYDICOM_DATA in Path(f).parents
)
BUNDLED_IDS = ["/".join(p.parts[-2:]) for p in BUNDLED]

# files with pixel data that the walker deliberately leaves whole (always correct, less dedup)
NOT_WALKABLE = {
    "image_dfl.dcm": "deflated transfer syntax",
    "SC_rgb_jpeg.dcm": "data set written in implicit VR under an explicit VR transfer syntax",
    "MR_truncated.dcm": "Pixel Data value runs past the end of the file",
    "meta_missing_tsyntax.dcm": "no Transfer Syntax UID in the File Meta group",
}


def _read(path: Path) -> bytes:
    return path.read_bytes()


def _pydicom_header_end(data: bytes) -> tuple[Dataset, int] | None:
    """(data set, offset where pydicom stops before pixel data), or None if not DICOM."""
    fp = io.BytesIO(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(fp, stop_before_pixels=True)
    except InvalidDicomError:
        return None
    return ds, fp.tell()


def _classify() -> tuple[list[Path], list[Path]]:
    with_pixels: list[Path] = []
    without_pixels: list[Path] = []
    for path in BUNDLED:
        data = _read(path)
        seen = _pydicom_header_end(data)
        if seen is None:
            continue
        (with_pixels if seen[1] < len(data) else without_pixels).append(path)
    return with_pixels, without_pixels


WITH_PIXELS, WITHOUT_PIXELS = _classify()
SPLITTABLE = [p for p in WITH_PIXELS if p.name not in NOT_WALKABLE]


def _full(path: Path) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path)


def _is_encapsulated(ds: Dataset) -> bool:
    return bool(ds.file_meta.TransferSyntaxUID.is_encapsulated)


NATIVE = [p for p in SPLITTABLE if not _is_encapsulated(_full(p))]
ENCAPSULATED = [p for p in SPLITTABLE if _is_encapsulated(_full(p))]


def _ids(paths: list[Path]) -> list[str]:
    return ["/".join(p.parts[-2:]) for p in paths]


def assert_exact_cover(spans: list[Span], data: bytes | memoryview) -> None:
    """Spans start at 0, touch each other, end at len(data), and join back to the data."""
    assert spans, "split_dicom returned no span"
    assert spans[0].start == 0
    assert spans[-1].end == len(data)
    for before, after in zip(spans, spans[1:], strict=False):
        assert before.end == after.start, (before, after)
    for span in spans:
        assert span.start <= span.end
        assert span.kind in {"header", "pixels", "trailer"}
    if len(spans) > 1:
        assert all(s.start < s.end for s in spans), "a multi-part split has an empty part"
    assert b"".join(bytes(data[s.start : s.end]) for s in spans) == bytes(data)


def _whole(data: bytes) -> list[Span]:
    return [Span(0, len(data), "header")]


# --------------------------------------------------------------------- every bundled file


def test_the_bundled_corpus_is_meaningful() -> None:
    """Guard against an empty or changed corpus making the parametrised tests vacuous."""
    assert len(BUNDLED) > 100
    assert len(NATIVE) >= 20
    assert len(ENCAPSULATED) >= 20
    # pydicom reads a deflated file through a decompressor, so its offset says nothing there
    assert {p.name for p in WITH_PIXELS} >= set(NOT_WALKABLE) - {"image_dfl.dcm"}


@pytest.mark.parametrize("path", BUNDLED, ids=BUNDLED_IDS)
def test_spans_cover_every_bundled_file_exactly(path: Path) -> None:
    data = _read(path)
    spans = split_dicom(data)
    assert_exact_cover(spans, data)
    kinds = [s.kind for s in spans]
    assert kinds[0] == "header"
    assert "header" not in kinds[1:]
    assert "trailer" not in kinds[:-1]


@pytest.mark.parametrize("path", SPLITTABLE, ids=_ids(SPLITTABLE))
def test_header_ends_where_pydicom_stops_before_pixels(path: Path) -> None:
    data = _read(path)
    seen = _pydicom_header_end(data)
    assert seen is not None
    _ds, offset = seen
    spans = split_dicom(data)
    assert len(spans) >= 2
    assert spans[0] == Span(0, offset, "header")
    assert spans[1].kind == "pixels"
    assert pixel_data_offset(data) == offset


@pytest.mark.parametrize("path", WITH_PIXELS, ids=_ids(WITH_PIXELS))
def test_pixel_data_offset_agrees_with_pydicom(path: Path) -> None:
    data = _read(path)
    seen = _pydicom_header_end(data)
    assert seen is not None
    if path.name in ("image_dfl.dcm", "SC_rgb_jpeg.dcm", "meta_missing_tsyntax.dcm"):
        assert pixel_data_offset(data) is None
    else:
        assert pixel_data_offset(data) == seen[1]


@pytest.mark.parametrize("name", sorted(NOT_WALKABLE))
def test_files_the_walker_does_not_understand_stay_whole(name: str) -> None:
    data = _read(Path(get_testdata_file(name)))
    assert split_dicom(data) == _whole(data)


@pytest.mark.parametrize("path", WITHOUT_PIXELS, ids=_ids(WITHOUT_PIXELS))
def test_files_without_pixel_data_are_one_header_span(path: Path) -> None:
    data = _read(path)
    assert split_dicom(data) == _whole(data)
    assert pixel_data_offset(data) is None


@pytest.mark.parametrize("path", NATIVE, ids=_ids(NATIVE))
def test_native_pixels_are_one_span_holding_the_whole_element(path: Path) -> None:
    data = _read(path)
    ds = _full(path)
    spans = split_dicom(data)
    pixels = [s for s in spans if s.kind == "pixels"]
    assert len(pixels) == 1
    span = pixels[0]
    syntax = ds.file_meta.TransferSyntaxUID
    tag = struct.pack(">HH" if syntax == ExplicitVRBigEndian else "<HH", 0x7FE0, 0x0010)
    assert data[span.start : span.start + 4] == tag
    element_header = 8 if syntax == ImplicitVRLittleEndian else 12
    assert span.end - span.start == element_header + len(ds.PixelData)
    assert data[span.start + element_header : span.end] == ds.PixelData
    trailer = spans[-1] if spans[-1].kind == "trailer" else None
    assert (trailer is None) == (span.end == len(data))


@pytest.mark.parametrize("path", ENCAPSULATED, ids=_ids(ENCAPSULATED))
def test_encapsulated_pixels_get_one_span_per_fragment(path: Path) -> None:
    data = _read(path)
    value = _full(path).PixelData
    stream = io.BytesIO(value)
    offsets = parse_basic_offsets(stream)
    fragments = list(generate_fragments(stream))
    spans = split_dicom(data)
    pixels = [s for s in spans if s.kind == "pixels"]
    # element header (12) + Basic Offset Table item, then one span per fragment item
    assert len(pixels) == 1 + len(fragments)
    bot = pixels[0]
    assert data[bot.start : bot.start + 4] == b"\xe0\x7f\x10\x00"
    assert bot.end - bot.start == 12 + 8 + 4 * len(offsets)
    for span, fragment in zip(pixels[1:], fragments, strict=True):
        assert data[span.start : span.start + 4] == b"\xfe\xff\x00\xe0"
        assert data[span.start + 8 : span.end] == fragment
    trailer = spans[-1]
    assert trailer.kind == "trailer"
    assert data[trailer.start : trailer.start + 8] == SEQUENCE_DELIMITER_LE
    assert trailer.end == len(data)


def test_multi_frame_rle_has_one_span_per_frame() -> None:
    data = _read(Path(get_testdata_file("SC_rgb_rle_2frame.dcm")))
    kinds = [s.kind for s in split_dicom(data)]
    assert kinds == ["header", "pixels", "pixels", "pixels", "trailer"]


def test_trailer_after_native_pixels_is_kept() -> None:
    data = _read(Path(get_testdata_file("CT_small.dcm")))
    spans = split_dicom(data)
    assert [s.kind for s in spans] == ["header", "pixels", "trailer"]
    # Data Set Trailing Padding (FFFC,FFFC) follows the pixel data in this file
    assert data[spans[-1].start : spans[-1].start + 4] == b"\xfc\xff\xfc\xff"


def test_implicit_vr_little_endian() -> None:
    data = _read(Path(get_testdata_file("MR_small_implicit.dcm")))
    spans = split_dicom(data)
    _ds, offset = _pydicom_header_end(data) or (None, -1)
    assert [s.kind for s in spans] == ["header", "pixels"]
    assert spans[0].end == offset
    # implicit VR: tag then a 4-byte length, no VR
    assert data[offset : offset + 4] == b"\xe0\x7f\x10\x00"
    assert struct.unpack_from("<I", data, offset + 4)[0] == spans[1].end - offset - 8


def test_implicit_vr_with_nested_private_sequences() -> None:
    data = _read(Path(get_testdata_file("nested_priv_SQ.dcm")))
    _ds, offset = _pydicom_header_end(data) or (None, -1)
    assert split_dicom(data)[0] == Span(0, offset, "header")


@pytest.mark.parametrize("name", ["MR_small_bigendian.dcm", "MR_small_expb.dcm", "rtdose_expb.dcm"])
def test_explicit_vr_big_endian(name: str) -> None:
    data = _read(Path(get_testdata_file(name)))
    spans = split_dicom(data)
    _ds, offset = _pydicom_header_end(data) or (None, -1)
    assert spans[0].end == offset
    pixels = spans[1]
    assert data[pixels.start : pixels.start + 6] in (b"\x7f\xe0\x00\x10OW", b"\x7f\xe0\x00\x10OB")
    assert struct.unpack_from(">I", data, pixels.start + 8)[0] == pixels.end - pixels.start - 12


def test_memoryview_input_splits_like_bytes() -> None:
    data = _read(Path(get_testdata_file("examples_ybr_color.dcm")))
    assert split_dicom(memoryview(data)) == split_dicom(data)
    assert pixel_data_offset(memoryview(data)) == pixel_data_offset(data)


# --------------------------------------------------------------------- constructed files


def _with_icon(
    syntax: str,
    to_bytes: Callable[[Dataset], bytes],
    *,
    encapsulated: bool = False,
    undefined_sequence: bool = True,
    float_pixels: bool = False,
) -> bytes:
    """A data set whose Icon Image Sequence item holds its own Pixel Data before the real one."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.PatientName = "Icon^Test"
    icon = Dataset()
    icon.Rows = 2
    icon.Columns = 2
    if encapsulated:
        icon.add_new(0x7FE00010, "OB", encapsulate([b"\x01\x02\x03\x04"]))
        icon["PixelData"].is_undefined_length = True
    else:
        icon.add_new(0x7FE00010, "OB", b"\x01\x02\x03\x04")
    ds.IconImageSequence = Sequence([icon])
    ds["IconImageSequence"].is_undefined_length = undefined_sequence
    if float_pixels:
        ds.add_new(0x7FE00008, "OF", b"\x00\x00\x80\x3f" * 4)
    elif encapsulated:
        ds.add_new(0x7FE00010, "OB", encapsulate([b"ab" * 10, b"cd" * 12]))
        ds["PixelData"].is_undefined_length = True
    else:
        ds.add_new(0x7FE00010, "OW", b"\x05\x06" * 8)
    return to_bytes(ds)


@pytest.mark.parametrize("undefined_sequence", [True, False], ids=["undefined-SQ", "defined-SQ"])
@pytest.mark.parametrize(
    "syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian]
)
def test_pixel_data_inside_a_sequence_is_not_the_top_level_one(
    syntax: str, undefined_sequence: bool, to_bytes: Callable[[Dataset], bytes]
) -> None:
    data = _with_icon(syntax, to_bytes, undefined_sequence=undefined_sequence)
    _ds, offset = _pydicom_header_end(data) or (None, -1)
    spans = split_dicom(data)
    assert_exact_cover(spans, data)
    assert spans[0] == Span(0, offset, "header")
    assert [s.kind for s in spans] == ["header", "pixels"]
    assert spans[1].end - spans[1].start == (8 if syntax == ImplicitVRLittleEndian else 12) + 16


def test_encapsulated_icon_inside_a_sequence_is_skipped(
    to_bytes: Callable[[Dataset], bytes],
) -> None:
    data = _with_icon(RLELossless, to_bytes, encapsulated=True)
    _ds, offset = _pydicom_header_end(data) or (None, -1)
    spans = split_dicom(data)
    assert_exact_cover(spans, data)
    assert spans[0] == Span(0, offset, "header")
    assert [s.kind for s in spans] == ["header", "pixels", "pixels", "pixels", "trailer"]
    assert data[spans[2].start + 8 : spans[2].end] == b"ab" * 10
    assert data[spans[3].start + 8 : spans[3].end] == b"cd" * 12


def test_float_pixel_data_counts_as_pixel_data(to_bytes: Callable[[Dataset], bytes]) -> None:
    data = _with_icon(ExplicitVRLittleEndian, to_bytes, float_pixels=True)
    _ds, offset = _pydicom_header_end(data) or (None, -1)
    spans = split_dicom(data)
    assert spans[0] == Span(0, offset, "header")
    assert data[offset : offset + 6] == b"\xe0\x7f\x08\x00OF"
    assert [s.kind for s in spans] == ["header", "pixels"]


def test_deflated_files_stay_whole(to_bytes: Callable[[Dataset], bytes]) -> None:
    ds = _full(Path(get_testdata_file("CT_small.dcm")))
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    data = to_bytes(ds)
    assert data[128:132] == b"DICM"
    assert split_dicom(data) == _whole(data)
    assert pixel_data_offset(data) is None


# --------------------------------------------------------------------- chunking


def test_native_pixels_are_chunked_when_large() -> None:
    data = _read(Path(get_testdata_file("CT_small.dcm")))
    default = split_dicom(data)
    element = default[1]
    length = element.end - element.start
    spans = split_dicom(data, native_chunk=4096)
    assert_exact_cover(spans, data)
    pixels = [s for s in spans if s.kind == "pixels"]
    assert len(pixels) == math.ceil(length / 4096)
    assert all(s.end - s.start == 4096 for s in pixels[:-1])
    assert 0 < pixels[-1].end - pixels[-1].start <= 4096
    assert pixels[0].start == element.start
    assert pixels[-1].end == element.end
    assert spans[0] == default[0]
    assert spans[-1] == default[-1]


def test_chunk_boundaries_at_exact_multiples() -> None:
    data = _read(Path(get_testdata_file("CT_small.dcm")))
    element = split_dicom(data)[1]
    length = element.end - element.start
    assert length % 2 == 0
    assert len([s for s in split_dicom(data, native_chunk=length) if s.kind == "pixels"]) == 1
    halves = [s for s in split_dicom(data, native_chunk=length // 2) if s.kind == "pixels"]
    assert [s.end - s.start for s in halves] == [length // 2, length // 2]


def test_encapsulated_fragments_are_not_chunked() -> None:
    data = _read(Path(get_testdata_file("MR_small_RLE.dcm")))
    default = split_dicom(data)
    assert split_dicom(data, native_chunk=16) == default


def test_512_ct_is_one_pixel_span_by_default_and_chunks_when_asked(big_ct: bytes) -> None:
    _ds, offset = _pydicom_header_end(big_ct) or (None, -1)
    spans = split_dicom(big_ct)
    assert [s.kind for s in spans] == ["header", "pixels"]
    assert spans[0].end == offset
    assert spans[1].end - spans[1].start == 12 + 512 * 512 * 2
    chunked = split_dicom(big_ct, native_chunk=64 * 1024)
    assert_exact_cover(chunked, big_ct)
    assert len(chunked) == 1 + math.ceil((12 + 512 * 512 * 2) / (64 * 1024))


def test_synthetic_ct_splits_at_pydicom_offset(small_ct: list[bytes]) -> None:
    for data in small_ct:
        _ds, offset = _pydicom_header_end(data) or (None, -1)
        spans = split_dicom(data)
        assert spans == [Span(0, offset, "header"), Span(offset, len(data), "pixels")]
        assert len(data) - offset == 12 + 64 * 64 * 2


# --------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00",
        b"garbage" * 3,
        b"\x00" * 128,
        b"\x00" * 131,
        b"\x00" * 128 + b"DICM",
        b"\x00" * 128 + b"DICX" + b"\x00" * 64,
        b"\x00" * 128 + b"DICM" + b"\x02\x00",
        b"\x00" * 128 + b"DICM" + b"\xff" * 200,
        b"\x00" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\xff\xff",
        b"%PDF-1.4\n" + b"x" * 500,
    ],
    ids=[
        "empty",
        "one-byte",
        "text",
        "preamble-only",
        "short-preamble",
        "magic-only",
        "wrong-magic",
        "meta-cut-in-tag",
        "meta-all-ff",
        "meta-length-past-end",
        "pdf",
    ],
)
def test_garbage_is_one_whole_span(data: bytes) -> None:
    assert split_dicom(data) == _whole(data)
    assert pixel_data_offset(data) is None


@pytest.mark.parametrize("name", ["README.txt", "crayons.icc", "test1.json", "zipMR.gz"])
def test_non_dicom_bundled_files_are_whole(name: str) -> None:
    data = _read(Path(get_testdata_file(name)))
    assert split_dicom(data) == _whole(data)


def test_random_bytes_never_raise() -> None:
    rng = random.Random(20240501)
    for _ in range(300):
        size = rng.randrange(0, 2048)
        data = b"\x00" * 128 + b"DICM" + bytes(rng.randrange(256) for _ in range(size))
        assert_exact_cover(split_dicom(data), data)
        pixel_data_offset(data)


@pytest.mark.parametrize("name", ["MR_small_RLE.dcm", "CT_small.dcm", "rtdose_expb_1frame.dcm"])
def test_truncated_data_sets_never_raise(name: str) -> None:
    """Every cut point after the File Meta group (see the xfail below for cuts inside it)."""
    data = _read(Path(get_testdata_file(name)))
    seen = _pydicom_header_end(data)
    assert seen is not None
    meta_end = 132 + 12 + int(seen[0].file_meta.FileMetaInformationGroupLength)
    pixels = seen[1]
    # every cut through the element headers, a stride through the pixel values, every cut
    # through the trailer
    sizes = [
        *range(meta_end, pixels + 64),
        *range(pixels + 64, len(data) - 160, 61),
        *range(len(data) - 160, len(data)),
    ]
    for size in sizes:
        cut = data[:size]
        spans = split_dicom(cut)
        assert_exact_cover(spans, cut)


def test_truncated_pixel_data_is_whole() -> None:
    data = _read(Path(get_testdata_file("MR_small_RLE.dcm")))
    # cut in the middle of the single fragment
    cut = data[: (len(data) + 1600) // 2]
    assert split_dicom(cut) == _whole(cut)
    native = _read(Path(get_testdata_file("MR_small.dcm")))[:-500]
    assert split_dicom(native) == _whole(native)


def test_truncated_inside_file_meta_never_raises() -> None:
    data = _read(Path(get_testdata_file("CT_small.dcm")))
    for size in range(0, 400):
        cut = data[:size]
        assert_exact_cover(split_dicom(cut), cut)
        pixel_data_offset(cut)


def test_random_byte_flips_never_raise() -> None:
    rng = random.Random(7)
    for name in ("MR_small_RLE.dcm", "CT_small.dcm", "MR_small_implicit.dcm", "JPEG2000.dcm"):
        original = _read(Path(get_testdata_file(name)))
        for _ in range(150):
            mutated = bytearray(original)
            for _ in range(rng.randint(1, 4)):
                mutated[rng.randrange(132, len(mutated))] = rng.randrange(256)
            data = bytes(mutated)
            assert_exact_cover(split_dicom(data), data)


# ------------------------------------------------------------------ admission: survey()

TRUNCATED = {"MR_truncated.dcm", "rtplan_truncated.dcm"}
PART10 = [p for p in BUNDLED if _read(p)[128:132] == b"DICM"]


@pytest.mark.parametrize("path", PART10, ids=_ids(PART10))
def test_survey_finds_every_bundled_file_complete_but_the_truncated_ones(path: Path) -> None:
    """No complete file is refused (odd encodings included); cut files are."""
    found = split.survey(_read(path))
    if path.name in TRUNCATED:
        assert found.truncated and "declares" in found.truncated
        return
    assert (found.truncated, found.short_pixels) == (None, None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    if "SOPInstanceUID" in ds and path.name != "image_dfl.dcm":
        assert found.sop_uid == str(ds.SOPInstanceUID).strip()
        assert found.study_uid == (str(ds.get("StudyInstanceUID", "")).strip() or None)


def _image(syntax: str = ExplicitVRLittleEndian, **attributes: object) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.BitsAllocated = 4, 6, 1, 16
    ds.PhotometricInterpretation = "MONOCHROME2"
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = syntax
    return ds


def _part10(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
@pytest.mark.parametrize(
    ("attributes", "needed"),
    [
        ({}, 4 * 6 * 2),
        ({"NumberOfFrames": "3"}, 3 * 4 * 6 * 2),
        ({"SamplesPerPixel": 3, "BitsAllocated": 8, "PhotometricInterpretation": "RGB"}, 72),
        (
            {"SamplesPerPixel": 3, "BitsAllocated": 8, "PhotometricInterpretation": "YBR_FULL_422"},
            48,
        ),
        ({"BitsAllocated": 1, "Columns": 8}, 4),
    ],
    ids=["mono16", "frames", "rgb", "ybr422", "1-bit"],
)
def test_native_pixel_data_must_hold_the_whole_image(
    syntax: str, attributes: dict[str, object], needed: int
) -> None:
    ds = _image(syntax, **attributes)
    ds.PixelData = bytes(needed)
    complete = split.survey(_part10(ds))
    assert (complete.truncated, complete.short_pixels) == (None, None)
    assert (complete.study_uid, complete.sop_uid) == (ds.StudyInstanceUID, ds.SOPInstanceUID)
    ds.PixelData = bytes(needed - 2)
    short = split.survey(_part10(ds))
    assert short.truncated is None
    assert short.short_pixels == f"Pixel Data holds {needed - 2} bytes, the image needs {needed}"


def test_a_length_past_the_end_is_truncation_wherever_it_is() -> None:
    ds = _image()
    ds.PixelData = bytes(48)
    data = _part10(ds)
    assert split.survey(data[:-10]).truncated == "element (7FE0,0010) declares 48 bytes, 38 remain"
    # inside a sequence: the item runs past the end
    ds.ReferencedImageSequence = Sequence([Dataset()])
    ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID = generate_uid()
    del ds.PixelData
    data = _part10(ds)
    assert split.survey(data[:-6]).truncated
    assert split.survey(data).truncated is None


def test_encapsulated_pixel_data_without_its_delimiter_is_truncated() -> None:
    ds = _image(RLELossless)
    ds.PixelData = encapsulate([b"\x00" * 10, b"\x01" * 10])
    data = _part10(ds)
    assert split.survey(data).truncated is None
    assert split.survey(data[: -len(SEQUENCE_DELIMITER_LE)]).truncated


ELF = b"\x7fELF\x02\x01\x01" + bytes(121)
PE = b"MZ\x90\x00" + b"\x41" * 124
TIFF = b"MM\x00*" + b"\x07" * 124


@pytest.mark.parametrize(("preamble", "kept"), [(ELF, False), (PE, False), (TIFF, True)])
def test_a_preamble_is_zeroed_unless_zeros_or_tiff(preamble: bytes, kept: bool) -> None:
    ds = _image()
    ds.PixelData = bytes(48)
    ds.preamble = preamble
    data = _part10(ds)
    neutral = split.neutral_preamble(data)
    assert neutral == (data if kept else bytes(128) + data[128:])
    # the "until pixel data" copy Orthanc also stores changes alike: the header still dedups
    offset = pixel_data_offset(data)
    assert offset is not None
    assert split.neutral_preamble(data[:offset]) == neutral[:offset]
    assert split.neutral_preamble(neutral) is neutral
    assert split.neutral_preamble(b"not dicom" * 20) == b"not dicom" * 20
