"""Transfer syntaxes of WADO-RS instance retrieval (PS3.18 8.7.3), as pure code.

What the gateway sends for each instance: the stored bytes when the client accepts the
stored syntax (or ``transfer-syntax=*``); otherwise a conversion, preferring Explicit VR
Little Endian, the default of ``application/dicom`` on the web (PS3.18 8.7.3.5.2, Table
8.7.3-2). Implicit VR Little Endian becomes Explicit VR Little Endian here, part by part
(:func:`explicit_parts`: the header is re-encoded, the pixel data go out as stored);
anything else is converted by Orthanc (its DCMTK codecs, the syntaxes below).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from io import BytesIO

import pydicom
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset

from archive.api import AttachmentPart

__all__ = [
    "EXPLICIT_VR_LITTLE_ENDIAN",
    "IMPLICIT_VR_LITTLE_ENDIAN",
    "available_syntaxes",
    "explicit_file",
    "explicit_parts",
    "target_syntax",
]

IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
EXPLICIT_VR_BIG_ENDIAN = "1.2.840.10008.1.2.2"
DEFLATED = "1.2.840.10008.1.2.1.99"
RLE = "1.2.840.10008.1.2.5"

# What Orthanc's DCMTK transcoder reads and writes (Orthanc 1.10 and 1.12 without the
# GDCM plugin: DcmtkTranscoder::IsSupported); it also decodes RLE. JPEG 2000, HTJ2K,
# JPEG XL and video have no codec there: such instances go out as stored or not at all.
_DCMTK_WRITES = (
    EXPLICIT_VR_LITTLE_ENDIAN,
    "1.2.840.10008.1.2.4.50",
    "1.2.840.10008.1.2.4.51",
    "1.2.840.10008.1.2.4.57",
    "1.2.840.10008.1.2.4.70",
    "1.2.840.10008.1.2.4.80",
    "1.2.840.10008.1.2.4.81",
    IMPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_BIG_ENDIAN,
    DEFLATED,
)
_DCMTK_READS = frozenset(_DCMTK_WRITES) | {RLE}

_PIXEL_TAGS = {0x7FE00010, 0x7FE00008, 0x7FE00009}


def available_syntaxes(stored: str) -> tuple[str, ...]:
    """The syntaxes an instance stored in ``stored`` can be sent in, stored one first."""
    if stored not in _DCMTK_READS:
        return (stored,)
    return (stored, *(s for s in _DCMTK_WRITES if s != stored))


def target_syntax(
    stored: str, accepted: Sequence[str], any_syntax: bool
) -> tuple[str | None, bool]:
    """What to send an instance stored in ``stored`` as: ``(None, True)`` for the stored
    bytes, ``(syntax, True)`` for a conversion, ``(None, False)`` when no accepted syntax
    can be produced.

    ``accepted`` is in the client's order of preference; Explicit VR Little Endian, always
    lossless, wins over the others when offered.
    """
    if any_syntax or stored in accepted:
        return None, True
    possible = available_syntaxes(stored)
    if EXPLICIT_VR_LITTLE_ENDIAN in accepted and EXPLICIT_VR_LITTLE_ENDIAN in possible:
        return EXPLICIT_VR_LITTLE_ENDIAN, True
    for syntax in accepted:
        if syntax in possible:
            return syntax, True
    return None, False


def _header(data: bytes) -> tuple[bytes, pydicom.Dataset]:
    """The header part (preamble, File Meta, data set up to Pixel Data) re-encoded as
    Explicit VR Little Endian; and its data set."""
    ds = pydicom.dcmread(BytesIO(data), force=True)
    ds.file_meta.TransferSyntaxUID = pydicom.uid.UID(EXPLICIT_VR_LITTLE_ENDIAN)
    out = BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue(), ds


def _pixel_element(head: bytes, ds: pydicom.Dataset) -> bytes:
    """The explicit element header of an implicit Pixel Data element header (8 bytes):
    OW for more than 8 bits allocated, else OB (PS3.5 A.2); float pixels OF / OD."""
    group, element, length = struct.unpack("<HHI", head[:8])
    tag = group << 16 | element
    if tag not in _PIXEL_TAGS:
        raise ValueError("the pixel part does not start with a pixel data element")
    if tag == 0x7FE00008:
        vr = b"OF"
    elif tag == 0x7FE00009:
        vr = b"OD"
    else:
        vr = b"OW" if int(ds.get("BitsAllocated") or 8) > 8 else b"OB"
    return struct.pack("<HH2sHI", group, element, vr, 0, length)


def _trailer(data: bytes) -> bytes:
    """Elements after Pixel Data (padding, signatures) re-encoded explicit."""
    ds = read_dataset(BytesIO(data), is_implicit_VR=True, is_little_endian=True)
    out = DicomBytesIO()
    out.is_implicit_VR = False
    out.is_little_endian = True
    write_dataset(out, ds)
    return out.getvalue()


def explicit_file(data: bytes) -> bytes:
    """A whole Implicit VR Little Endian file as Explicit VR Little Endian."""
    return _header(data)[0]


def explicit_parts(
    parts: Sequence[AttachmentPart], datas: Sequence[bytes]
) -> list[bytes | memoryview]:
    """An Implicit VR Little Endian file, given as its stored parts (``archive.split``:
    header, pixels..., trailer), as Explicit VR Little Endian pieces to write in order.

    Only the header, the 8 bytes of the Pixel Data element header and the trailer are
    re-encoded; the pixel values go out as stored (they are the same bytes in both
    syntaxes), so the cost does not grow with the image.

    Raises
    ------
    ValueError, pydicom's errors
        When the parts are not a header followed by pixels (the caller then asks Orthanc).
    """
    if len(parts) < 2 or parts[0].kind != "header" or parts[1].kind != "pixels":
        if len(parts) == 1:
            return [explicit_file(datas[0])]
        raise ValueError("the stored parts are not header, pixels, trailer")
    header, ds = _header(datas[0])
    out: list[bytes | memoryview] = [header]
    for index, (part, data) in enumerate(zip(parts[1:], datas[1:], strict=True)):
        if index == 0:
            out.append(_pixel_element(data, ds))
            out.append(memoryview(data)[8:])
        elif part.kind == "pixels":
            out.append(data)
        else:
            out.append(_trailer(data))
    return out
