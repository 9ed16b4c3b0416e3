"""WADO-RS instance retrieval as ``multipart/related; type="application/dicom"`` (PS3.18 8.7).

Instances are sent in their stored transfer syntax, read from the archive's blobs (the
same verified read path the storage area uses; no Orthanc round trip). Reading runs on a
small thread pool a bounded number of bytes ahead of the socket
(``gateway.read_ahead_mb`` per request, see ``dicomweb.prefetch``), so the whole study is
never held in memory.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

import zstandard
from aiohttp import web

from dicomweb.blobcache import InstanceReader
from dicomweb.middleware import STREAMING
from dicomweb.prefetch import batches, ordered_prefetch
from dicomweb.search import StoredInstance

__all__ = ["AcceptedDicom", "accepts_zstd", "negotiate_dicom", "stream_instances"]

logger = logging.getLogger(__name__)

_DICOM = "application/dicom"
_BATCH_BYTES = 1 << 20  # instances read per thread hop: about this many bytes


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


def accepts_zstd(accept_encoding: str | None) -> bool:
    """Does ``Accept-Encoding`` name ``zstd`` with a non-zero quality (RFC 9110 12.5.3)?

    Only an explicit ``zstd``: a bare ``*`` is too vague to change the body's encoding.
    """
    for item in (accept_encoding or "").split(","):
        coding, _, params = item.partition(";")
        if coding.strip().lower() != "zstd":
            continue
        name, _, value = params.partition("=")
        if name.strip().lower() != "q":
            return True
        try:
            return float(value) > 0
        except ValueError:
            return False
    return False


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
    reader: InstanceReader,
    accepted: AcceptedDicom,
    zstd: bool = False,
) -> tuple[web.StreamResponse, int]:
    """Send ``items`` as one multipart/related body; returns the response and the bytes
    of DICOM sent.

    ``zstd`` (the client accepts ``Content-Encoding: zstd``): the body is a sequence of
    zstd frames, the boundaries and part headers compressed here and each stored part sent
    as the frame the archive keeps (``InstanceReader.read_zstd``): no decompression, and
    about a quarter of the bytes on the wire for CT. Such an answer is chunked.

    The catalog is asked for every instance's parts in one thread hop; instances are
    then read in batches of about 1 MiB on ``reader``'s pool, up to ``reader.read_ahead``
    bytes ahead of the socket, and each part is written as read (no joined copy). When every
    size is known up front (always, unless write-behind still journals an instance) the
    answer has a Content-Length instead of chunked encoding.

    Once the first byte is out, a failing read (e.g. ``IntegrityError``) cannot become an
    error status: the body is cut short without its closing boundary, which a client
    sees as a broken message, never as a complete one.
    """
    _check_syntaxes(items, accepted)
    # a catalog lookup like the others (default executor), not queued behind the reads
    plan = await asyncio.to_thread(reader.plan, [item.attachment_uuid for item in items])
    boundary = secrets.token_hex(16)
    heads = []
    for index, (item, planned) in enumerate(zip(items, plan, strict=True)):
        # each head also closes the previous part, so small writes come in one piece
        previous = "\r\n" if index else ""
        syntax = f"; transfer-syntax={item.transfer_syntax}" if item.transfer_syntax else ""
        length = "" if planned.size is None else f"Content-Length: {planned.size}\r\n"
        heads.append(
            f"{previous}--{boundary}\r\nContent-Type: {_DICOM}{syntax}\r\n{length}\r\n".encode(
                "ascii"
            )
        )
    closing = f"\r\n--{boundary}--\r\n".encode("ascii")
    sizes = [planned.size for planned in plan]
    headers = {"Content-Type": f'multipart/related; type="{_DICOM}"; boundary={boundary}'}
    read_batch = reader.read_batch
    if zstd:
        text = zstandard.ZstdCompressor(level=1)
        heads = [text.compress(head) for head in heads]
        closing = text.compress(closing)
        headers["Content-Encoding"] = "zstd"
        read_batch = reader.read_zstd_batch
    headers["Vary"] = "Accept-Encoding"
    response = web.StreamResponse(status=200, headers=headers)
    if not zstd and all(size is not None for size in sizes):
        response.content_length = (
            sum(len(h) for h in heads) + len(closing) + sum(size or 0 for size in sizes)
        )
    weights = [size or (1 << 20) for size in sizes]
    runs = batches(weights, _BATCH_BYTES)
    chunks = ordered_prefetch(
        reader.executor,
        read_batch,
        [plan[run.start : run.stop] for run in runs],
        [sum(weights[run.start : run.stop]) for run in runs],
        reader.read_ahead,
    )
    sent = 0
    index = 0
    try:
        async for batch in chunks:
            if index == 0:
                # the first batch is read before anything is sent, so a broken first
                # instance is still an ordinary error answer
                await response.prepare(request)
                request[STREAMING] = True
            for parts in batch:
                await response.write(heads[index])
                for part in parts:
                    # a memoryview: what the socket does not take at once is then copied
                    # into the transport's buffer once, not sliced into a new bytes first
                    await response.write(memoryview(part))
                sent += sizes[index] or sum(len(part) for part in parts)
                index += 1
        await response.write(closing)
        await response.write_eof()
        return response, sent
    finally:
        await chunks.aclose()
