"""WADO-RS frames and bulk data (PS3.18 10.4, 8.7.3), served from the archive's blobs.

A stored DICOM file is header / pixel parts / trailer (``archive.split``): uncompressed
frames are byte ranges of the pixel parts, compressed frames are whole fragment parts.
Either way a frame costs the header blob plus the blob(s) holding it, never the whole
file. Whatever needs decoding or transcoding goes to Orthanc's DICOMweb plugin on
loopback, and its answer is streamed through.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from io import BytesIO
from typing import Any

import aiohttp
import pydicom
from aiohttp import web
from aiohttp.helpers import parse_mimetype
from aiohttp.http_exceptions import HttpProcessingError
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from archive.api import AttachmentPart, BlobStore
from dicomweb.http.middleware import STREAMING
from dicomweb.http.multipart import Multipart
from dicomweb.http.orthanc import OrthancClient, OrthancError
from dicomweb.wado.pixels import (
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    FramePlan,
    ImageGeometry,
    Plan,
    basic_offset_table,
    extract_bit_frame,
    fragments_per_frame,
    native_frame_bits,
    negotiate_frames,
)
from dicomweb.wado.prefetch import ordered_prefetch
from query.api import StoredInstance
from security.api import InvalidInput, NotAcceptable, NotFound

__all__ = [
    "PIXEL_DATA_PATH",
    "StoredImage",
    "fetch_one_part",
    "instance_path",
    "open_image",
    "public_location",
    "relay_parts",
    "send_bulk_value",
    "send_frames",
    "send_pixel_data",
    "stream_from_orthanc",
]

logger = logging.getLogger(__name__)

PIXEL_DATA_PATH = "7FE00010"
_GEOMETRY_TAGS = ["Rows", "Columns", "SamplesPerPixel", "BitsAllocated", "NumberOfFrames"]
_ORTHANC_ROOT = "/dicom-web/"
_RELAY_CHUNK = 256 * 1024  # the most of Orthanc's answer held at once while relaying
_BULK_PATH = re.compile(r"^[0-9A-Fa-f]{8}(/\d+/[0-9A-Fa-f]{8})*$")


def instance_path(item: StoredInstance) -> str:
    """The instance's WADO-RS path below the DICOMweb root (UIDs from the catalog)."""
    return f"/studies/{item.study_uid}/series/{item.series_uid}/instances/{item.sop_uid}"


class _PartCache:
    """Reads byte ranges of one file, decrypting each part at most once in a row."""

    def __init__(self, blobs: BlobStore, parts: Sequence[AttachmentPart]) -> None:
        self.blobs = blobs
        self.parts = parts
        self._index = -1
        self._data = b""

    def part(self, index: int) -> bytes:
        if index != self._index:
            self._data = self.blobs.read_part(self.parts[index])
            self._index = index
        return self._data

    def read(self, start: int, end: int) -> bytes:
        chunks = []
        for index, part in enumerate(self.parts):
            if part.end <= start or part.start >= end:
                continue
            data = self.part(index)
            chunks.append(
                data[max(start, part.start) - part.start : min(end, part.end) - part.start]
            )
        out = b"".join(chunks)
        if len(out) != end - start:
            raise InvalidInput("the stored pixel data is shorter than its frames")
        return out


@dataclass(frozen=True, slots=True)
class StoredImage:
    """An instance's parts, header data set and frame layout, ready to cut frames."""

    item: StoredInstance
    parts: tuple[AttachmentPart, ...]
    header: Dataset
    geometry: ImageGeometry | None  # None: no (walkable) pixel data
    syntax: str

    @property
    def encapsulated(self) -> bool:
        return bool(self.syntax) and bool(pydicom.uid.UID(self.syntax).is_encapsulated)

    @property
    def native(self) -> bool:
        """Uncompressed little endian, the only layout cut into frames here."""
        return self.syntax in (IMPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN)


def open_image(blobs: BlobStore, item: StoredInstance) -> StoredImage:
    """Read the part list and the header blob of ``item`` (blocking; one small blob)."""
    parts = tuple(blobs.parts(item.attachment_uuid))
    header_bytes = blobs.read_part(parts[0])
    try:
        ds = pydicom.dcmread(BytesIO(header_bytes), stop_before_pixels=True)
    except (InvalidDicomError, EOFError, ValueError, OSError) as exc:
        raise InvalidInput(f"instance {item.sop_uid} has an unreadable header") from exc
    syntax = str(ds.file_meta.get("TransferSyntaxUID", item.transfer_syntax or ""))
    geometry = None
    if all(ds.get(k) is not None for k in _GEOMETRY_TAGS[:4]):
        geometry = ImageGeometry(
            rows=int(ds.Rows),
            columns=int(ds.Columns),
            samples_per_pixel=int(ds.SamplesPerPixel),
            bits_allocated=int(ds.BitsAllocated),
            number_of_frames=int(ds.get("NumberOfFrames") or 1),
        )
    return StoredImage(item, parts, ds, geometry, syntax)


def _check_frames(image: StoredImage, numbers: Sequence[int]) -> ImageGeometry:
    if image.geometry is None:
        raise NotFound(f"instance {image.item.sop_uid} has no pixel data")
    for number in numbers:
        native_frame_bits(image.geometry, number)  # raises for a frame out of range
    return image.geometry


def _native_reader(
    image: StoredImage, cache: _PartCache, geometry: ImageGeometry
) -> Callable[[int], bytes]:
    element_header = 8 if image.syntax == IMPLICIT_VR_LITTLE_ENDIAN else 12
    value_start = image.parts[1].start + element_header

    def frame(number: int) -> bytes:
        bit_start, bit_end = native_frame_bits(geometry, number)
        if bit_start % 8 == 0 and bit_end % 8 == 0:
            return cache.read(value_start + bit_start // 8, value_start + bit_end // 8)
        first, last = bit_start // 8, (bit_end + 7) // 8
        data = cache.read(value_start + first, value_start + last)
        return extract_bit_frame(data, bit_start - first * 8, bit_end - bit_start)

    return frame


def _encapsulated_reader(
    image: StoredImage, cache: _PartCache, geometry: ImageGeometry
) -> Callable[[int], bytes] | None:
    """Frames as fragment parts; None when fragments cannot be matched to frames."""
    # parts: header, Pixel Data element header + Basic Offset Table, fragments, delimiter
    fragments = image.parts[2:-1]
    if len(image.parts) < 4 or image.parts[-1].kind != "trailer":
        return None
    table = basic_offset_table(cache.part(1)[12:])
    groups = fragments_per_frame(
        len(fragments),
        geometry.number_of_frames,
        table,
        [p.end - p.start for p in fragments],
    )
    if groups is None:
        return None

    def frame(number: int) -> bytes:
        return b"".join(cache.part(2 + i)[8:] for i in groups[number - 1])

    return frame


def _frame_reader(image: StoredImage, blobs: BlobStore) -> Callable[[int], bytes] | None:
    geometry = image.geometry
    if geometry is None or len(image.parts) < 2:
        return None  # not cut at Pixel Data (deflated, unusual files): Orthanc reads it
    cache = _PartCache(blobs, image.parts)
    if image.encapsulated:
        return _encapsulated_reader(image, cache, geometry)
    if not image.native:
        return None  # big endian: Orthanc converts
    return _native_reader(image, cache, geometry)


async def _send_parts(
    request: web.Request,
    produce: Callable[[int], bytes],
    count: int,
    content_type: str,
    location: Callable[[int], str],
) -> tuple[web.StreamResponse, int]:
    """Stream ``count`` bodies as multipart/related, reading the next while writing one;
    part ``i`` carries ``Content-Location: location(i)`` (its public URL, PS3.18 8.7.1)."""
    message = Multipart(content_type.split(";")[0])
    response = web.StreamResponse(headers={"Content-Type": message.content_type})
    # one body in hand, the next one read meanwhile
    bodies = ordered_prefetch(None, produce, range(count), [1] * count, 2)
    sent = 0
    sent_parts = 0
    try:
        async for data in bodies:
            if not response.prepared:
                # the first body is read before anything is sent: a failure is still an
                # ordinary error answer
                await response.prepare(request)
                request[STREAMING] = True
            head = message.head(
                content_type,
                first=sent_parts == 0,
                length=len(data),
                location=location(sent_parts),
            )
            sent_parts += 1
            await response.write(head)
            await response.write(data)
            sent += len(data)
    finally:
        await bodies.aclose()
    await response.write(message.end())
    await response.write_eof()
    return response, sent


def _part_type(plan: FramePlan) -> str:
    return f"{plan.media_type}; transfer-syntax={plan.transfer_syntax}"


async def send_frames(
    request: web.Request,
    blobs: BlobStore,
    orthanc: OrthancClient,
    item: StoredInstance,
    numbers: Sequence[int],
    root: str,
) -> tuple[web.StreamResponse, int]:
    """Answer a frames request (PS3.18 10.4.1.1.3); returns the response and bytes sent.

    ``root`` is the public DICOMweb root: each part's Content-Location is the frame's URL
    below it (never Orthanc's loopback address)."""
    image = await asyncio.to_thread(open_image, blobs, item)
    _check_frames(image, numbers)
    plan = negotiate_frames(request.headers.get("Accept"), image.syntax, len(numbers))
    reader = _frame_reader(image, blobs) if plan.plan is Plan.STORED else None
    if reader is None:
        wanted = (
            plan
            if plan.plan is Plan.TRANSCODE
            else FramePlan(Plan.TRANSCODE, plan.media_type, plan.transfer_syntax, plan.multipart)
        )
        path = f"{instance_path(item)}/frames/{','.join(map(str, numbers))}"
        return await _frames_from_orthanc(request, orthanc, path, wanted, root)
    if not plan.multipart:
        data = await asyncio.to_thread(reader, numbers[0])
        response = web.Response(body=data, headers={"Content-Type": _part_type(plan)})
        return response, len(data)
    frames = f"{root}{instance_path(item)}/frames/"
    return await _send_parts(
        request,
        lambda i: reader(numbers[i]),
        len(numbers),
        _part_type(plan),
        lambda i: f"{frames}{numbers[i]}",
    )


async def send_pixel_data(
    request: web.Request,
    blobs: BlobStore,
    orthanc: OrthancClient,
    item: StoredInstance,
    root: str,
) -> tuple[web.StreamResponse, int]:
    """Pixel Data's bulk data URI: the native value as one octet-stream part, or every
    compressed frame as one part each (as the frames resource would send them)."""
    image = await asyncio.to_thread(open_image, blobs, item)
    if image.geometry is None:
        raise NotFound(f"instance {item.sop_uid} has no pixel data")
    if image.encapsulated or not image.native or len(image.parts) < 2:
        frames = list(range(1, image.geometry.number_of_frames + 1))
        return await send_frames(request, blobs, orthanc, item, frames, root)
    element_header = 8 if image.syntax == IMPLICIT_VR_LITTLE_ENDIAN else 12
    cache = _PartCache(blobs, image.parts)
    first = image.parts[1]
    head = await asyncio.to_thread(cache.read, first.start, first.start + element_header)
    length = int.from_bytes(head[element_header - 4 :], "little")
    value_start = first.start + element_header
    value_end = value_start + length
    spans = [
        (max(p.start, value_start), min(p.end, value_end))
        for p in image.parts[1:]
        if p.start < value_end and p.end > value_start
    ]

    # one multipart part holding the whole value, written a stored part at a time
    message = Multipart("application/octet-stream")
    response = web.StreamResponse(headers={"Content-Type": message.content_type})
    data = await asyncio.to_thread(cache.read, *spans[0])
    await response.prepare(request)
    request[STREAMING] = True
    location = f"{root}{instance_path(item)}/bulkdata/{PIXEL_DATA_PATH}"
    await response.write(message.head(first=True, length=length, location=location))
    for index in range(len(spans)):
        await response.write(data)
        if index + 1 < len(spans):
            data = await asyncio.to_thread(cache.read, *spans[index + 1])
    await response.write(message.end())
    await response.write_eof()
    return response, length


def _bulk_value(header: Dataset, path: str) -> bytes:
    if not _BULK_PATH.match(path):
        raise InvalidInput("a bulk data path is TAG or TAG/ITEM/TAG/... (tags as 8 hex digits)")
    steps = path.split("/")
    node: Any = header
    for position, step in enumerate(steps):
        if position % 2 == 1:
            index = int(step)
            if not isinstance(node, pydicom.Sequence) or index >= len(node):
                raise NotFound(f"no bulk data at {path}")
            node = node[index]
            continue
        tag = int(step, 16)
        if not isinstance(node, Dataset) or tag not in node:
            raise NotFound(f"no bulk data at {path}")
        node = node[tag].value
    if isinstance(node, bytes | bytearray):
        return bytes(node)
    raise NotFound(f"the element at {path} is not a binary value")


async def send_bulk_value(
    request: web.Request, blobs: BlobStore, item: StoredInstance, path: str, root: str
) -> tuple[web.StreamResponse, int]:
    """A binary element of the header (other than Pixel Data) as one octet-stream part."""

    def read() -> bytes:
        header = blobs.read_part(blobs.parts(item.attachment_uuid)[0])
        ds = pydicom.dcmread(BytesIO(header), stop_before_pixels=True)
        return _bulk_value(ds, path)

    value = await asyncio.to_thread(read)
    location = f"{root}{instance_path(item)}/bulkdata/{path}"
    return await _send_parts(
        request, lambda _i: value, 1, "application/octet-stream", lambda _i: location
    )


async def stream_from_orthanc(
    request: web.Request,
    orthanc: OrthancClient,
    path: str,
    *,
    accept: str,
    params: dict[str, str] | None = None,
    refuse: Callable[[int, str], Exception],
    json_body: Any = None,
) -> tuple[web.StreamResponse, int]:
    """GET ``path`` (POST ``json_body`` when given) from Orthanc and stream a 200 answer
    through, headers and all.

    Any other answer becomes ``refuse(status, Orthanc's text)``, raised before a byte
    is sent; Orthanc's own errors never reach the client verbatim.
    """
    try:
        async with orthanc.session.request(
            "GET" if json_body is None else "POST",
            path,
            headers={"Accept": accept},
            params=params or {},
            json=json_body,
        ) as upstream:
            if upstream.status != 200:
                text = (await upstream.read())[:500].decode("utf-8", "replace")
                logger.info("Orthanc answered %d to GET %s: %s", upstream.status, path, text)
                raise refuse(upstream.status, text)
            response = web.StreamResponse(
                headers={"Content-Type": upstream.headers.get("Content-Type", accept)}
            )
            if upstream.content_length is not None:
                response.content_length = upstream.content_length
            await response.prepare(request)
            request[STREAMING] = True
            sent = 0
            async for chunk in upstream.content.iter_chunked(256 * 1024):
                await response.write(chunk)
                sent += len(chunk)
            await response.write_eof()
            return response, sent
    except aiohttp.ClientError as exc:
        if request.get(STREAMING):
            raise
        raise OrthancError(f"Orthanc is not reachable ({exc.__class__.__name__})") from exc


async def _frames_from_orthanc(
    request: web.Request, orthanc: OrthancClient, path: str, plan: FramePlan, root: str
) -> tuple[web.StreamResponse, int]:
    accept = f'multipart/related; type="{plan.media_type}"; transfer-syntax={plan.transfer_syntax}'

    def refuse(status: int, _text: str) -> Exception:
        return NotAcceptable(
            f"these frames cannot be converted to {plan.media_type} "
            f"({plan.transfer_syntax}); ask for the stored transfer syntax with "
            'multipart/related; type="application/octet-stream"; transfer-syntax=*'
        )

    if plan.multipart:
        return await _relay_parts(request, orthanc, "/dicom-web" + path, accept, refuse, root)
    # one frame asked for as a single part: unwrap Orthanc's one-part multipart answer
    part = await fetch_one_part(orthanc, "/dicom-web" + path, accept)
    if part is None:
        raise refuse(0, "")
    part_type, data = part
    return web.Response(body=data, headers={"Content-Type": part_type or plan.media_type}), len(
        data
    )


def public_location(value: str | None, root: str) -> str | None:
    """Orthanc's Content-Location (``http://127.0.0.1:<its port>/dicom-web/...``, a
    loopback address behind its own login) as the same resource below the public
    ``root``; None (drop it) for anything that is not a DICOMweb URL."""
    if not value:
        return None
    at = value.find(_ORTHANC_ROOT)
    return None if at < 0 else root + value[at + len(_ORTHANC_ROOT) - 1 :]


async def _relay_parts(
    request: web.Request,
    orthanc: OrthancClient,
    path: str,
    accept: str,
    refuse: Callable[[int, str], Exception],
    root: str,
) -> tuple[web.StreamResponse, int]:
    """Stream Orthanc's multipart answer to ``path`` through, part by part
    (:func:`relay_parts`)."""
    try:
        async with orthanc.session.get(
            path, headers={"Accept": accept, "Accept-Encoding": "identity"}
        ) as upstream:
            content_type = upstream.headers.get("Content-Type", "")
            mime = parse_mimetype(content_type)
            if (
                upstream.status != 200
                or mime.type != "multipart"
                or not mime.parameters.get("boundary")
            ):
                text = (await upstream.read())[:500].decode("utf-8", "replace")
                logger.info("Orthanc answered %d to GET %s: %s", upstream.status, path, text)
                raise refuse(upstream.status, text)
            response = web.StreamResponse(headers={"Content-Type": content_type})
            await response.prepare(request)
            request[STREAMING] = True
            sent = await relay_parts(upstream.headers, upstream.content, response.write, root)
            await response.write_eof()
            return response, sent
    except aiohttp.ClientError as exc:
        if request.get(STREAMING):
            raise
        raise OrthancError(f"Orthanc is not reachable ({exc.__class__.__name__})") from exc


async def relay_parts(
    headers: Mapping[str, str],
    content: aiohttp.StreamReader,
    write: Callable[[bytes], Awaitable[None]],
    root: str,
) -> int:
    """Copy the multipart body ``content`` (whose ``headers`` name its boundary) to
    ``write`` a piece at a time, with the part headers rewritten: Content-Type and
    Content-Length kept, Content-Location moved to the public ``root``
    (:func:`public_location`), anything else dropped. Returns the part bytes copied.

    Raises
    ------
    OrthancError
        For a malformed or truncated body; what was written by then has no closing
        delimiter, so the client sees a broken message, never a complete one.
    """
    boundary = parse_mimetype(headers.get("Content-Type", "")).parameters.get("boundary", "")
    sent = 0
    previous = ""  # each head also closes the previous part
    try:
        reader = aiohttp.MultipartReader(headers, content)
        while (part := await reader.next()) is not None:
            if not isinstance(part, aiohttp.BodyPartReader):
                raise ValueError("a part is itself multipart")
            head = f"{previous}--{boundary}\r\n"
            for name in ("Content-Type", "Content-Length"):
                if name in part.headers:
                    head += f"{name}: {part.headers[name]}\r\n"
            location = public_location(part.headers.get("Content-Location"), root)
            if location is not None:
                head += f"Content-Location: {location}\r\n"
            await write(f"{head}\r\n".encode("latin-1"))
            while not part.at_eof():
                chunk = await part.read_chunk(_RELAY_CHUNK)
                if chunk:
                    await write(chunk)
                    sent += len(chunk)
            previous = "\r\n"
    except (ValueError, AssertionError, KeyError, HttpProcessingError) as exc:
        raise OrthancError(
            f"Orthanc's multipart answer is malformed or ended early ({exc})"
        ) from exc
    await write(f"{previous}--{boundary}--\r\n".encode("ascii"))
    return sent


async def fetch_one_part(
    orthanc: OrthancClient, path: str, accept: str
) -> tuple[str, bytes] | None:
    """GET ``path`` from Orthanc, whose answer is a multipart body of one part (an
    instance or a frame, converted); returns the part's Content-Type and its bytes, or
    None unless the answer is a 200 of exactly one part.

    The part is read from the socket into one buffer, then made bytes: a converted
    instance (perhaps several times its stored size) is held at most twice, and only
    for that copy.
    """
    try:
        async with orthanc.session.get(
            path, headers={"Accept": accept, "Accept-Encoding": "identity"}
        ) as upstream:
            if upstream.status != 200:
                text = (await upstream.read())[:500].decode("utf-8", "replace")
                logger.info("Orthanc answered %d to GET %s: %s", upstream.status, path, text)
                return None
            reader = aiohttp.MultipartReader(upstream.headers, upstream.content)
            part = await reader.next()
            if not isinstance(part, aiohttp.BodyPartReader):
                return None
            data = bytearray()
            while not part.at_eof():
                data += await part.read_chunk(_RELAY_CHUNK)
            if await reader.next() is not None:
                return None
            return part.headers.get("Content-Type", ""), bytes(data)
    except (ValueError, AssertionError, KeyError, HttpProcessingError) as exc:
        logger.info("Orthanc's multipart answer to GET %s is malformed (%s)", path, exc)
        return None
    except aiohttp.ClientError as exc:
        raise OrthancError(f"Orthanc is not reachable ({exc.__class__.__name__})") from exc
