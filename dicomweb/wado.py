"""WADO-RS instance retrieval as ``multipart/related; type="application/dicom"`` (PS3.18 8.7).

Instances are sent in their stored transfer syntax, read from the archive's blobs (the
same verified read path the storage area uses; no Orthanc round trip), one part at a
time: the next instance is read while the current one is written, and nothing larger
than one instance is held in memory.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from aiohttp import web

from archive.api import BlobStore
from dicomweb.middleware import STREAMING
from dicomweb.search import StoredInstance

__all__ = ["AcceptedDicom", "negotiate_dicom", "stream_instances"]

logger = logging.getLogger(__name__)

_DICOM = "application/dicom"


@dataclass(frozen=True, slots=True)
class AcceptedDicom:
    """What the client accepts: ``transfer_syntaxes`` empty means "as stored" is fine."""

    transfer_syntaxes: frozenset[str]
    any_syntax: bool


def _params(text: str) -> tuple[str, dict[str, str]]:
    media, *rest = (p.strip() for p in text.split(";"))
    params = {}
    for item in rest:
        name, _, value = item.partition("=")
        params[name.strip().lower()] = value.strip().strip('"')
    return media.lower(), params


def negotiate_dicom(accept: str | None) -> AcceptedDicom:
    """Parse ``Accept`` for a DICOM instance retrieval.

    Acceptable: no header, ``*/*``, ``multipart/related`` (``type`` absent or
    ``application/dicom``), with an optional ``transfer-syntax`` (``*`` = as stored).
    Without ``transfer-syntax`` the stored syntax is sent, as Orthanc does.

    Raises
    ------
    aiohttp.web.HTTPNotAcceptable
        When no offered media type is one the gateway produces.
    """
    if not accept:
        return AcceptedDicom(frozenset(), True)
    syntaxes: set[str] = set()
    any_syntax = False
    matched = False
    for item in accept.split(","):
        media, params = _params(item)
        if media in ("*/*", "multipart/*") or (
            media == "multipart/related" and params.get("type", _DICOM).lower() in (_DICOM, "*/*")
        ):
            matched = True
            syntax = params.get("transfer-syntax")
            if syntax is None or syntax == "*":
                any_syntax = True
            else:
                syntaxes.add(syntax)
    if not matched:
        raise web.HTTPNotAcceptable(
            text='this resource is sent as multipart/related; type="application/dicom"'
        )
    return AcceptedDicom(frozenset(syntaxes), any_syntax)


def _check_syntaxes(items: Sequence[StoredInstance], accepted: AcceptedDicom) -> None:
    if accepted.any_syntax:
        return
    for item in items:
        if item.transfer_syntax not in accepted.transfer_syntaxes:
            raise web.HTTPNotAcceptable(
                text=(
                    f"instance {item.sop_uid} is stored as {item.transfer_syntax}; "
                    "transcoding is not available yet: ask for transfer-syntax=*"
                )
            )


async def stream_instances(
    request: web.Request,
    items: Sequence[StoredInstance],
    blobs: BlobStore,
    accepted: AcceptedDicom,
) -> tuple[web.StreamResponse, int]:
    """Send ``items`` as one multipart/related body; returns the response and bytes sent.

    Once the first byte is out, a failing read (e.g. ``IntegrityError``) cannot become an
    error status: the body is cut short without its closing boundary, which a client
    sees as a broken message, never as a complete one.
    """
    _check_syntaxes(items, accepted)
    boundary = secrets.token_hex(16)
    response = web.StreamResponse(
        status=200,
        headers={
            "Content-Type": f'multipart/related; type="{_DICOM}"; boundary={boundary}',
        },
    )
    first = asyncio.create_task(asyncio.to_thread(blobs.get, items[0].attachment_uuid))
    pending: asyncio.Task[bytes] | None = first
    try:
        data = await first  # a broken first instance is still an ordinary error answer
        pending = None
        await response.prepare(request)
        request[STREAMING] = True
        sent = 0
        for index, item in enumerate(items):
            if index + 1 < len(items):
                following = items[index + 1].attachment_uuid
                pending = asyncio.create_task(asyncio.to_thread(blobs.get, following))
            syntax = f"; transfer-syntax={item.transfer_syntax}" if item.transfer_syntax else ""
            head = (
                f"--{boundary}\r\nContent-Type: {_DICOM}{syntax}\r\n"
                f"Content-Length: {len(data)}\r\n\r\n"
            )
            await response.write(head.encode("ascii"))
            await response.write(data)
            await response.write(b"\r\n")
            sent += len(data)
            if pending is not None:
                data = await pending
                pending = None
        await response.write(f"--{boundary}--\r\n".encode("ascii"))
        await response.write_eof()
        return response, sent
    finally:
        if pending is not None:
            pending.cancel()
