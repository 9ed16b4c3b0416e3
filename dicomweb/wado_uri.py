"""WADO-URI (PS3.18 section 9) for viewers that predate WADO-RS.

``GET /wado?requestType=WADO&studyUID=..&seriesUID=..&objectUID=..`` with
``contentType`` ``application/dicom`` (the stored file, streamed from the blobs, or
converted by Orthanc when another ``transferSyntax`` is named) or ``image/jpeg`` /
``image/png`` (rendered by Orthanc; ``frameNumber``, ``rows``, ``columns``,
``windowCenter``, ``windowWidth``, ``imageQuality`` honoured). Tokens come from the
Authorization header like everywhere else.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from dataclasses import dataclass

from aiohttp import web

from archive.api import BlobStore
from dicomweb.frames import fetch_one_part, instance_path
from dicomweb.middleware import STREAMING
from dicomweb.orthanc import OrthancClient
from dicomweb.prefetch import ordered_prefetch
from dicomweb.search import StoredInstance
from security.errors import InvalidInput

__all__ = ["WadoUriRequest", "parse_wado_uri", "send_dicom_file", "send_transcoded_file"]

_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_DICOM = "application/dicom"
_IMAGES = ("image/jpeg", "image/png", "image/gif")


@dataclass(frozen=True, slots=True)
class WadoUriRequest:
    """A checked WADO-URI query."""

    study_uid: str
    series_uid: str
    object_uid: str
    content_type: str
    transfer_syntax: str | None
    frame: int | None
    render: dict[str, str]


def _uid(query: Mapping[str, str], name: str) -> str:
    value = query.get(name, "").strip()
    if not value:
        raise InvalidInput(f"WADO-URI needs {name}")
    if len(value) > 64 or not _UID.match(value):
        raise InvalidInput(f"{name} is not a UID")
    return value


def _positive(query: Mapping[str, str], name: str) -> int | None:
    value = query.get(name)
    if value is None:
        return None
    if not value.isdigit() or int(value) < 1:
        raise InvalidInput(f"{name} is a positive integer")
    return int(value)


def _number(query: Mapping[str, str], name: str) -> str | None:
    value = query.get(name)
    if value is None:
        return None
    try:
        float(value)
    except ValueError:
        raise InvalidInput(f"{name} is a number") from None
    return value


def parse_wado_uri(query: Mapping[str, str]) -> WadoUriRequest:
    """Check a WADO-URI query (PS3.18 9.1, 9.2); InvalidInput names what is wrong."""
    if query.get("requestType") != "WADO":
        raise InvalidInput("requestType must be WADO")
    content_type = None
    for offer in query.get("contentType", "image/jpeg").split(","):
        media = offer.split(";")[0].strip().lower()
        if media in (_DICOM, *_IMAGES):
            content_type = media
            break
        if media in ("*/*", "image/*"):
            content_type = "image/jpeg"
            break
    if content_type is None:
        raise web.HTTPNotAcceptable(
            text="WADO-URI contentType: application/dicom, image/jpeg, image/png or image/gif"
        )
    syntax = query.get("transferSyntax")
    if syntax is not None and (len(syntax) > 64 or not _UID.match(syntax)):
        raise InvalidInput("transferSyntax is not a UID")
    render: dict[str, str] = {}
    rows, columns = _positive(query, "rows"), _positive(query, "columns")
    if rows is not None or columns is not None:
        render["viewport"] = f"{columns or rows},{rows or columns}"
    center, width = _number(query, "windowCenter"), _number(query, "windowWidth")
    if (center is None) != (width is None):
        raise InvalidInput("windowCenter and windowWidth go together")
    if center is not None and width is not None:
        render["window"] = f"{center},{width},linear"
    quality = _positive(query, "imageQuality")
    if quality is not None:
        if quality > 100:
            raise InvalidInput("imageQuality is from 1 to 100")
        render["quality"] = str(quality)
    return WadoUriRequest(
        study_uid=_uid(query, "studyUID"),
        series_uid=_uid(query, "seriesUID"),
        object_uid=_uid(query, "objectUID"),
        content_type=content_type,
        transfer_syntax=syntax,
        frame=_positive(query, "frameNumber"),
        render=render,
    )


async def send_dicom_file(
    request: web.Request, blobs: BlobStore, item: StoredInstance
) -> tuple[web.StreamResponse, int]:
    """The stored file as ``application/dicom``, written one stored part at a time."""
    parts = await asyncio.to_thread(blobs.parts, item.attachment_uuid)
    size = parts[-1].end
    response = web.StreamResponse(
        headers={
            "Content-Type": _DICOM,
            "Content-Disposition": f'attachment; filename="{item.sop_uid}.dcm"',
        }
    )
    response.content_length = size
    # one part in hand, the next one read meanwhile
    datas = ordered_prefetch(None, blobs.read_part, parts, [1] * len(parts), 2)
    try:
        async for data in datas:
            if not response.prepared:
                # the first part is read before anything is sent: a failure is still an
                # ordinary error answer
                await response.prepare(request)
                request[STREAMING] = True
            await response.write(data)
    finally:
        await datas.aclose()
    await response.write_eof()
    return response, size


async def send_transcoded_file(
    request: web.Request, orthanc: OrthancClient, item: StoredInstance, syntax: str
) -> tuple[web.StreamResponse, int]:
    """The instance converted to ``syntax`` by Orthanc's DICOMweb plugin (one instance)."""
    accept = f'multipart/related; type="{_DICOM}"; transfer-syntax={syntax}'
    part = await fetch_one_part(orthanc, "/dicom-web" + instance_path(item), accept)
    if part is None:
        raise web.HTTPNotAcceptable(text=f"this instance cannot be converted to {syntax}")
    data = part[1]
    return web.Response(body=data, headers={"Content-Type": _DICOM}), len(data)
