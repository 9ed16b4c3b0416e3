"""Split a DICOM Part 10 file into content-defined parts for deduplication.

Parts are contiguous byte ranges whose concatenation is the file, so a read is a join:

* header: everything before the Pixel Data element (the same bytes Orthanc stores as its
  "DICOM until pixel data" attachment, so that attachment deduplicates for free);
* pixel data: native pixels as one part (chunked when very large); encapsulated pixels as
  the element header with the Basic Offset Table, then one part per fragment, so the same
  frame under another header (a corrected or de-identified copy) is stored once;
* trailer: whatever follows the pixel data (padding, signatures), if anything.

Only element headers are read (tag, VR, length); no value is decoded. Files this walker
does not understand (deflated transfer syntax, no pixel data, odd encodings) become one
part, which is always correct, merely less deduplicated.

The same walk serves admission (:func:`survey`: the UIDs an archive files an instance
under, and whether the file holds every byte its element lengths and image geometry
promise) and :func:`neutral_preamble` (PS3.10 7.1: the 128-byte preamble carries no
executable header, CVE-2019-11687).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = [
    "NATIVE_CHUNK",
    "Span",
    "Survey",
    "neutral_preamble",
    "pixel_data_offset",
    "split_dicom",
    "survey",
]

NATIVE_CHUNK = 16 * 1024 * 1024

_PIXEL_DATA = 0x7FE00010
_FLOAT_PIXEL = 0x7FE00008
_DOUBLE_PIXEL = 0x7FE00009
_ITEM = 0xFFFEE000
_ITEM_END = 0xFFFEE00D
_SEQ_END = 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF
_LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
_DEFLATED = {b"1.2.840.10008.1.2.1.99", b"1.2.840.10008.1.2.1.99\x00"}
_NATIVE = {b"1.2.840.10008.1.2", b"1.2.840.10008.1.2.1", b"1.2.840.10008.1.2.2"}

_SOP_INSTANCE_UID = 0x00080018
_STUDY_INSTANCE_UID = 0x0020000D
_SAMPLES_PER_PIXEL = 0x00280002
_PHOTOMETRIC = 0x00280004
_NUMBER_OF_FRAMES = 0x00280008
_ROWS = 0x00280010
_COLUMNS = 0x00280011
_BITS_ALLOCATED = 0x00280100
_STRINGS = (_SOP_INSTANCE_UID, _STUDY_INSTANCE_UID, _PHOTOMETRIC, _NUMBER_OF_FRAMES)
_US = (_SAMPLES_PER_PIXEL, _ROWS, _COLUMNS, _BITS_ALLOCATED)
# a preamble may hold a TIFF header (PS3.10 7.5, dual-personality files); it is never an
# executable's header, which must begin the file (ELF "\x7fELF", PE "MZ")
_TIFF_HEADERS = (b"II*\x00", b"MM\x00*")


@dataclass(frozen=True, slots=True)
class Span:
    """One part of a file: ``data[start:end]``; ``kind`` is header, pixels or trailer."""

    start: int
    end: int
    kind: str


class _Malformed(Exception):
    pass


class _Walker:
    def __init__(self, data: bytes | memoryview, implicit: bool, little: bool) -> None:
        self.data = data
        self.implicit = implicit
        self.end = len(data)
        self.u16 = struct.Struct("<H" if little else ">H").unpack_from
        self.u32 = struct.Struct("<I" if little else ">I").unpack_from
        self.tag_fmt = struct.Struct("<HH" if little else ">HH").unpack_from

    def tag_at(self, pos: int) -> int:
        if pos + 8 > self.end:
            raise _Malformed("truncated element header")
        group, element = self.tag_fmt(self.data, pos)
        return int(group << 16 | element)

    def header(self, pos: int) -> tuple[int, int, int]:
        """Return (tag, value offset, value length) of the element at ``pos``."""
        tag = self.tag_at(pos)
        if tag >> 16 == 0xFFFE or self.implicit:
            return tag, pos + 8, int(self.u32(self.data, pos + 4)[0])
        vr = bytes(self.data[pos + 4 : pos + 6])
        if vr in _LONG_VRS:
            if pos + 12 > self.end:
                raise _Malformed("truncated element header")
            return tag, pos + 12, int(self.u32(self.data, pos + 8)[0])
        return tag, pos + 8, int(self.u16(self.data, pos + 6)[0])

    def skip_undefined(self, pos: int, stop: int) -> int:
        """Skip items/elements until the delimiter ``stop``; return the offset after it."""
        while True:
            tag, value, length = self.header(pos)
            if tag == stop:
                return value
            if length == _UNDEFINED:
                inner = _ITEM_END if tag == _ITEM else _SEQ_END
                pos = self.skip_undefined(value, inner)
            else:
                pos = value + length
            if pos > self.end:
                raise _Malformed("value runs past the end of the file")

    def find_pixel_data(self, pos: int) -> int | None:
        while pos < self.end:
            tag, value, length = self.header(pos)
            if tag in (_PIXEL_DATA, _FLOAT_PIXEL, _DOUBLE_PIXEL):
                return pos
            pos = self.skip_undefined(value, _SEQ_END) if length == _UNDEFINED else value + length
            if pos > self.end:
                raise _Malformed("value runs past the end of the file")
        return None


def _dataset_start(data: bytes | memoryview) -> tuple[int, bytes] | None:
    """Offset of the data set after the File Meta group, and the transfer syntax UID."""
    try:
        return _walk_meta(data)
    except struct.error:  # truncated inside the File Meta group
        return None


def _walk_meta(data: bytes | memoryview) -> tuple[int, bytes] | None:
    if len(data) < 132 or bytes(data[128:132]) != b"DICM":
        return None
    pos = 132
    syntax = b""
    while pos + 8 <= len(data):
        group = struct.unpack_from("<H", data, pos)[0]
        if group != 0x0002:
            break
        vr = bytes(data[pos + 4 : pos + 6])
        if vr in _LONG_VRS:
            length = struct.unpack_from("<I", data, pos + 8)[0]
            value = pos + 12
        else:
            length = struct.unpack_from("<H", data, pos + 6)[0]
            value = pos + 8
        if struct.unpack_from("<H", data, pos + 2)[0] == 0x0010:
            syntax = bytes(data[value : value + length]).rstrip(b"\x00 ")
        pos = value + length
    return pos, syntax


def pixel_data_offset(data: bytes | memoryview) -> int | None:
    """Offset of the top-level Pixel Data element, or None when absent or not walkable."""
    start = _dataset_start(data)
    if start is None:
        return None
    pos, syntax = start
    if syntax in _DEFLATED:
        return None
    walker = _Walker(data, syntax == b"1.2.840.10008.1.2", syntax != b"1.2.840.10008.1.2.2")
    try:
        return walker.find_pixel_data(pos)
    except (_Malformed, struct.error):
        return None


def split_dicom(data: bytes | memoryview, *, native_chunk: int | None = None) -> list[Span]:
    """Cut a DICOM file into spans covering it exactly (see the module docstring); native
    pixel data in spans of at most ``native_chunk`` bytes (default ``NATIVE_CHUNK``)."""
    chunk = NATIVE_CHUNK if native_chunk is None else native_chunk
    size = len(data)
    whole = [Span(0, size, "header")]
    start = _dataset_start(data)
    if start is None:
        return whole
    pos, syntax = start
    if syntax in _DEFLATED:
        return whole
    walker = _Walker(data, syntax == b"1.2.840.10008.1.2", syntax != b"1.2.840.10008.1.2.2")
    try:
        offset = walker.find_pixel_data(pos)
        if offset is None:
            return whole
        spans = [Span(0, offset, "header")] if offset else []
        tag, value, length = walker.header(offset)
        if length != _UNDEFINED:
            end = value + length
            if end > size:
                return whole
            chunk_start = offset
            while end - chunk_start > chunk:
                spans.append(Span(chunk_start, chunk_start + chunk, "pixels"))
                chunk_start += chunk
            spans.append(Span(chunk_start, end, "pixels"))
        else:
            # element header + Basic Offset Table item, then one span per fragment item
            item_tag, item_value, item_length = walker.header(value)
            if item_tag != _ITEM or item_length == _UNDEFINED:
                return whole
            cursor = item_value + item_length
            spans.append(Span(offset, cursor, "pixels"))
            while True:
                item_tag, item_value, item_length = walker.header(cursor)
                if item_tag == _SEQ_END:
                    end = item_value
                    break
                if item_tag != _ITEM or item_length == _UNDEFINED:
                    return whole
                nxt = item_value + item_length
                if nxt > size:
                    return whole
                spans.append(Span(cursor, nxt, "pixels"))
                cursor = nxt
            # the 8-byte sequence delimiter travels with the trailer
            spans.append(Span(cursor, end, "trailer"))
        if end < size:
            if spans[-1].kind == "trailer":
                spans[-1] = Span(spans[-1].start, size, "trailer")
            else:
                spans.append(Span(end, size, "trailer"))
        return spans
    except (_Malformed, struct.error):
        return whole


@dataclass(frozen=True, slots=True)
class Survey:
    """What admission reads from a whole Part 10 file (:func:`survey`).

    ``truncated`` says why a declared length runs past the end of the file, and
    ``short_pixels`` why native Pixel Data holds fewer bytes than Rows x Columns x
    Samples per Pixel x Bits Allocated x Number of Frames need; both None for a
    complete file. The UIDs are None when absent or when the file cannot be walked
    (deflated transfer syntax): the caller then reads them another way.
    """

    study_uid: str | None
    sop_uid: str | None
    truncated: str | None = None
    short_pixels: str | None = None


def _image_bytes(values: dict[int, int | str]) -> int | None:
    """The bytes native pixel data needs for the image attributes in ``values``."""
    try:
        rows, columns = int(values[_ROWS]), int(values[_COLUMNS])
        bits = int(values[_BITS_ALLOCATED])
        samples = int(values.get(_SAMPLES_PER_PIXEL, 1))
        frames = int(str(values.get(_NUMBER_OF_FRAMES, "1")).split("\\")[0] or 1)
    except (KeyError, ValueError):
        return None
    bits_total = rows * columns * samples * frames * bits
    if str(values.get(_PHOTOMETRIC, "")).startswith(("YBR_FULL_422", "YBR_PARTIAL_422")):
        bits_total = bits_total * 2 // 3  # two chroma samples shared by two pixels
    return (bits_total + 7) // 8


def _walk_all(
    data: bytes | memoryview, pos: int, implicit: bool, little: bool
) -> tuple[dict[int, int | str], int | None, str | None]:
    """The wanted values, the native Pixel Data length and why the walk failed, if it did."""
    walker = _Walker(data, implicit, little)
    # an undefined-length UN element holds implicit VR (PS3.5 6.2.2)
    inner = walker if implicit else _Walker(data, True, little)
    size = len(data)
    values: dict[int, int | str] = {}
    pixel_length: int | None = None
    try:
        while pos < size:
            tag, value, length = walker.header(pos)
            if length == _UNDEFINED:
                un = not implicit and bytes(data[pos + 4 : pos + 6]) == b"UN"
                pos = (inner if un else walker).skip_undefined(value, _SEQ_END)
                continue
            pos = value + length
            if pos > size:
                raise _Malformed(
                    f"element ({tag >> 16:04X},{tag & 0xFFFF:04X}) declares {length} bytes, "
                    f"{size - value} remain"
                )
            if tag in _STRINGS:
                raw = bytes(data[value:pos]).rstrip(b"\x00 ")
                values[tag] = raw.decode("ascii", "replace").strip()
            elif tag in _US and length == 2:
                values[tag] = int(walker.u16(data, value)[0])
            elif tag == _PIXEL_DATA:
                pixel_length = length
    except (_Malformed, struct.error) as exc:
        return values, pixel_length, str(exc) if isinstance(exc, _Malformed) else "cut short"
    return values, pixel_length, None


def survey(data: bytes | memoryview) -> Survey:
    """Walk every top-level element header of a Part 10 file (see :class:`Survey`).

    A value is read only for the two UIDs and the image geometry; nested sequences and
    encapsulated fragments are skipped by their lengths, each checked against the end.
    A data set written in implicit VR under an explicit VR transfer syntax (a known
    writer bug that DCMTK and pydicom read) is walked as implicit VR when that fits.
    """
    size = len(data)
    if size < 132 or bytes(data[128:132]) != b"DICM":
        return Survey(None, None, truncated="the file is not DICOM Part 10 (no DICM prefix)")
    try:
        start = _walk_meta(data)
    except struct.error:
        start = None
    if start is None or start[0] > size:
        return Survey(None, None, truncated="the File Meta Information is cut short")
    pos, syntax = start
    if syntax in _DEFLATED:
        return Survey(None, None)
    implicit, little = syntax == b"1.2.840.10008.1.2", syntax != b"1.2.840.10008.1.2.2"
    values, pixel_length, truncated = _walk_all(data, pos, implicit, little)
    if truncated is not None and not implicit and little:
        retried = _walk_all(data, pos, True, True)
        if retried[2] is None:
            values, pixel_length, truncated = retried
    study = values.get(_STUDY_INSTANCE_UID)
    sop = values.get(_SOP_INSTANCE_UID)
    needed = _image_bytes(values) if syntax in _NATIVE and pixel_length is not None else None
    short = (
        f"Pixel Data holds {pixel_length} bytes, the image needs {needed}"
        if truncated is None and needed and pixel_length is not None and pixel_length < needed
        else None
    )
    return Survey(str(study) if study else None, str(sop) if sop else None, truncated, short)


def neutral_preamble(data: bytes) -> bytes:
    """``data`` with a preamble that cannot make the file an executable (CVE-2019-11687).

    PS3.10 7.1 leaves the 128-byte preamble to applications, so a Part 10 file can also be
    a valid PE or ELF program. Zeros and a TIFF header (dual-personality files, PS3.10
    7.5) are kept; anything else becomes 128 zero bytes. Not Part 10: unchanged.
    """
    if len(data) < 132 or data[128:132] != b"DICM":
        return data
    preamble = data[:128]
    if preamble == bytes(128) or preamble[:4] in _TIFF_HEADERS:
        return data
    return bytes(128) + data[128:]
