"""Pure arithmetic and negotiation for WADO-RS frames (PS3.18 8.7.3, PS3.5 8.1.1, A.4).

Nothing here reads blobs or talks HTTP: where a frame lies in a stored file, which
fragments make up a frame, and what an ``Accept`` header lets the gateway send.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from security.api import InvalidInput, NotAcceptable, NotFound

__all__ = [
    "EXPLICIT_VR_LITTLE_ENDIAN",
    "FRAME_MEDIA_TYPES",
    "FramePlan",
    "ImageGeometry",
    "Plan",
    "extract_bit_frame",
    "fragments_per_frame",
    "native_frame_bits",
    "negotiate_frames",
    "parse_frame_list",
]

IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
_NATIVE = frozenset({IMPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN})
_OCTET = "application/octet-stream"

# PS3.18 Table 8.7.3-5: the media type of a compressed frame in each transfer syntax
FRAME_MEDIA_TYPES: dict[str, str] = {
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.92": "image/jpx",
    "1.2.840.10008.1.2.4.93": "image/jpx",
    "1.2.840.10008.1.2.4.201": "image/jphc",
    "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc",
    "1.2.840.10008.1.2.4.110": "image/jxl",
    "1.2.840.10008.1.2.4.111": "image/jxl",
    "1.2.840.10008.1.2.4.112": "image/jxl",
    "1.2.840.10008.1.2.5": "image/dicom-rle",
}
# the syntax a media type means when the client names no transfer-syntax (Table 8.7.3-5)
_DEFAULT_SYNTAX: dict[str, str] = {
    _OCTET: EXPLICIT_VR_LITTLE_ENDIAN,
    "image/jpeg": "1.2.840.10008.1.2.4.50",
    "image/jls": "1.2.840.10008.1.2.4.80",
    "image/x-jls": "1.2.840.10008.1.2.4.80",
    "image/jp2": "1.2.840.10008.1.2.4.90",
    "image/jpx": "1.2.840.10008.1.2.4.92",
    "image/jphc": "1.2.840.10008.1.2.4.201",
    "image/jxl": "1.2.840.10008.1.2.4.110",
    "image/dicom-rle": "1.2.840.10008.1.2.5",
    "image/x-dicom-rle": "1.2.840.10008.1.2.5",
}
_ALIASES = {"image/x-jls": "image/jls", "image/x-dicom-rle": "image/dicom-rle"}


@dataclass(frozen=True, slots=True)
class ImageGeometry:
    """What locates native frames in Pixel Data (from the header)."""

    rows: int
    columns: int
    samples_per_pixel: int
    bits_allocated: int
    number_of_frames: int

    @property
    def frame_bits(self) -> int:
        return self.rows * self.columns * self.samples_per_pixel * self.bits_allocated


def native_frame_bits(geometry: ImageGeometry, frame: int) -> tuple[int, int]:
    """Bit range ``[start, end)`` of 1-based ``frame`` within native Pixel Data.

    Frames follow each other without padding (PS3.5 8.1.1 and 8.2), so for 1-bit
    images a frame need not start on a byte; the one padding byte of an odd-length
    value comes after the last frame and belongs to none.
    """
    if not 1 <= frame <= geometry.number_of_frames:
        raise NotFound(
            f"frame {frame} does not exist: the instance has "
            f"{geometry.number_of_frames} frame(s), numbered from 1"
        )
    size = geometry.frame_bits
    return (frame - 1) * size, frame * size


def extract_bit_frame(data: bytes, bit_start: int, bit_count: int) -> bytes:
    """The bits ``[bit_start, bit_start + bit_count)`` of ``data`` as bytes (LSB first).

    1-bit pixel data packs pixels from the least significant bit (PS3.5 8.1.1); the
    result is a frame packed the same way, its last byte zero-filled.
    """
    import numpy as np  # only 1-bit images pay for the import

    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little")
    chunk = bits[bit_start : bit_start + bit_count]
    if len(chunk) != bit_count:
        raise InvalidInput("pixel data is shorter than its frames")
    return bytes(np.packbits(chunk, bitorder="little").tobytes())


def fragments_per_frame(
    fragments: int, frames: int, offsets: Sequence[int], fragment_sizes: Sequence[int]
) -> list[range] | None:
    """Which fragments (0-based indices) make up each frame of encapsulated Pixel Data.

    ``offsets`` is the Basic Offset Table (may be empty); ``fragment_sizes`` are the
    sizes of the fragment items including their 8-byte item headers. Returns None when
    the split is not knowable without decoding (no table, fewer frames than fragments).
    """
    if frames == fragments:
        return [range(i, i + 1) for i in range(frames)]
    if frames == 1:
        return [range(0, fragments)]
    if len(offsets) != frames:
        return None
    starts: list[int] = []
    position = 0
    for size in fragment_sizes:
        starts.append(position)
        position += size
    out = []
    for index, offset in enumerate(offsets):
        end = offsets[index + 1] if index + 1 < frames else position
        members = [i for i, s in enumerate(starts) if offset <= s < end]
        if not members or starts[members[0]] != offset:
            return None
        out.append(range(members[0], members[-1] + 1))
    return out


def basic_offset_table(item: bytes) -> list[int]:
    """The offsets of a Basic Offset Table item (header included); empty when absent."""
    length = struct.unpack_from("<I", item, 4)[0]
    return list(struct.unpack_from(f"<{length // 4}I", item, 8))


def parse_frame_list(text: str) -> list[int]:
    """``"1,3,5"`` -> ``[1, 3, 5]`` (PS3.18 8.3.3.1: 1-based, comma separated)."""
    out = []
    for item in text.split(","):
        item = item.strip()
        if not item.isdigit() or int(item) < 1:
            raise InvalidInput(f"frame numbers are positive integers separated by commas: {text!r}")
        out.append(int(item))
    return out


class Plan(enum.Enum):
    STORED = "stored"  # frame bytes as stored (native or compressed)
    TRANSCODE = "transcode"  # through Orthanc


@dataclass(frozen=True, slots=True)
class FramePlan:
    """How to answer a frames request.

    ``media_type`` is what each frame part is labelled (for STORED) and
    ``transfer_syntax`` the syntax wanted (for TRANSCODE: the one Orthanc must produce).
    ``multipart`` is False when the client asked for a single-part answer.
    """

    plan: Plan
    media_type: str
    transfer_syntax: str
    multipart: bool = True


def _params(text: str) -> tuple[str, dict[str, str], float]:
    media, *rest = (p.strip() for p in text.split(";"))
    params: dict[str, str] = {}
    quality = 1.0
    for item in rest:
        name, _, value = item.partition("=")
        name = name.strip().lower()
        value = value.strip().strip('"')
        if name == "q":
            try:
                quality = float(value)
            except ValueError:
                quality = 0.0
        else:
            params[name] = value
    return media.lower(), params, quality


def _serves_stored(
    media: str, syntax: str | None, stored_media: str | None, stored_label: str
) -> bool:
    """Whether an offer is answered by the stored frame bytes."""
    if stored_media is None:  # e.g. video: no frame media type to label them with
        return False
    if media == _OCTET:
        # "*" lets the server choose (compressed frames then go out as stored, labelled
        # with their transfer syntax, as Orthanc does); no syntax means uncompressed
        return syntax in ("*", stored_label) or (
            syntax is None and stored_label == EXPLICIT_VR_LITTLE_ENDIAN
        )
    if (
        media == "*/*"
        or media == stored_media
        or (media.endswith("/*") and stored_media.startswith(media[:-1]))
    ):
        return syntax in (None, "*", stored_label)
    return False


def _transcoding(media: str, syntax: str | None, multipart: bool) -> FramePlan | None:
    """The plan that asks Orthanc for ``media`` in ``syntax`` (or its default), if valid."""
    if media == "*/*":
        media = _OCTET
    target = syntax if syntax not in (None, "*") else _DEFAULT_SYNTAX.get(media)
    if target is None:
        return None
    expected = _OCTET if target in _NATIVE else FRAME_MEDIA_TYPES.get(target)
    if expected != media:
        return None
    return FramePlan(Plan.TRANSCODE, media, target, multipart)


def negotiate_frames(accept: str | None, stored_syntax: str, frame_count: int) -> FramePlan:
    """Choose how to send frames of an instance stored in ``stored_syntax``.

    Offers are taken by quality (``q``); among equals, serving the stored bytes wins
    (uncompressed frames as ``application/octet-stream``; compressed ones as their own
    media type, or as octet-stream with ``transfer-syntax=*``, as Orthanc does) over the
    first type Orthanc could transcode to. Raises 406 when nothing fits.
    """
    stored_native = stored_syntax in _NATIVE
    stored_media = _OCTET if stored_native else FRAME_MEDIA_TYPES.get(stored_syntax)
    stored_label = EXPLICIT_VR_LITTLE_ENDIAN if stored_native else stored_syntax
    offers: list[tuple[float, int, str, str | None, bool]] = []
    for position, item in enumerate((accept or "*/*").split(",")):
        if not item.strip():
            continue
        media, params, quality = _params(item)
        if quality <= 0:
            continue
        multipart = True
        if media == "multipart/related":
            media = params.get("type", "*/*").lower()
        elif media in ("*/*", "multipart/*"):
            media = "*/*"
        else:
            multipart = False  # a bare media type: one frame, one body (PS3.18 8.7.3.3)
        syntax = params.get("transfer-syntax")
        offers.append((-quality, position, _ALIASES.get(media, media), syntax, multipart))
    offers.sort()
    # highest quality first; among offers of equal quality the stored bytes win
    fallback: FramePlan | None = None
    for index, (neg_q, _pos, media, syntax, multipart) in enumerate(offers):
        if multipart or frame_count == 1:
            if _serves_stored(media, syntax, stored_media, stored_label):
                label = _OCTET if media == _OCTET else stored_media
                assert label is not None
                return FramePlan(Plan.STORED, label, stored_label, multipart)
            if fallback is None:
                fallback = _transcoding(media, syntax, multipart)
        last_of_quality = index + 1 == len(offers) or offers[index + 1][0] != neg_q
        if fallback is not None and last_of_quality:
            return fallback
    raise NotAcceptable(
        f"frames of this instance are stored as {stored_syntax}; acceptable: "
        f'multipart/related; type="{stored_media or _OCTET}"; transfer-syntax={stored_label}'
        ' or type="application/octet-stream" (uncompressed, transcoded by Orthanc)'
    )
