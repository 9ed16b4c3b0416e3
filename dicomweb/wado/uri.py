"""WADO-URI (PS3.18 section 9) for viewers that predate WADO-RS.

``GET /wado?requestType=WADO&studyUID=..&seriesUID=..&objectUID=..`` with
``contentType`` ``application/dicom`` (the stored file, streamed from the blobs, when
it is in the ``transferSyntax`` asked for, Explicit VR Little Endian by default; else
converted as WADO-RS converts) or ``image/jpeg`` /
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
from dicomweb.http.middleware import STREAMING
from dicomweb.http.orthanc import OrthancClient
from dicomweb.wado.instance_reader import InstanceReader
from dicomweb.wado.prefetch import ordered_prefetch
from dicomweb.wado.retrieve import convert_instance
from dicomweb.wado.syntaxes import EXPLICIT_VR_LITTLE_ENDIAN, available_syntaxes, target_syntax
from query.api import StoredInstance
from security.api import InvalidInput, NotAcceptable

__all__ = [
    "WadoUriRequest",
    "dicom_target",
    "parse_wado_uri",
    "send_converted_file",
    "send_dicom_file",
]

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
        raise NotAcceptable(
            "WADO-URI contentType: application/dicom, image/jpeg, image/png or image/gif"
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


def dicom_target(item: StoredInstance, transfer_syntax: str | None) -> str | None:
    """The syntax to convert ``item`` to for ``contentType=application/dicom``, or None
    to send the stored file.

    ``transferSyntax`` absent means Explicit VR Little Endian, the default of DICOM web
    services (PS3.18 9.4.2.4), as for WADO-RS (``dicomweb.wado.retrieve``).

    Raises
    ------
    NotAcceptable
        When the instance cannot be sent in that syntax, naming those it can be sent in.
    """
    if not item.transfer_syntax:  # not known to the catalog: as stored
        return None
    wanted = transfer_syntax or EXPLICIT_VR_LITTLE_ENDIAN
    target, possible = target_syntax(item.transfer_syntax, (wanted,), False)
    if not possible:
        available = ", ".join(available_syntaxes(item.transfer_syntax))
        raise NotAcceptable(
            f"instance {item.sop_uid} is stored as {item.transfer_syntax} and cannot be "
            f"converted to {wanted}; ask with transferSyntax set to one of {available}"
        )
    return target


async def send_converted_file(
    request: web.Request,
    reader: InstanceReader,
    orthanc: OrthancClient,
    item: StoredInstance,
    syntax: str,
) -> tuple[web.StreamResponse, int]:
    """The instance converted to ``syntax`` (``dicomweb.wado.retrieve.convert_instance``)."""
    (planned,) = await asyncio.to_thread(reader.plan, [item.attachment_uuid])
    pieces = await convert_instance(item, planned, syntax, reader, orthanc)
    size = sum(len(piece) for piece in pieces)
    response = web.StreamResponse(
        headers={
            "Content-Type": _DICOM,
            "Content-Disposition": f'attachment; filename="{item.sop_uid}.dcm"',
        }
    )
    response.content_length = size
    await response.prepare(request)
    request[STREAMING] = True
    for piece in pieces:
        await response.write(piece)
    await response.write_eof()
    return response, size
