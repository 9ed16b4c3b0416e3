"""WADO-RS instance retrieval as ``multipart/related; type="application/dicom"`` (PS3.18 8.7).

Instances whose stored transfer syntax the client accepts are sent as stored, read from
the archive's blobs (the same verified read path the storage area uses; no Orthanc round
trip). Reading runs on a small thread pool a bounded number of bytes ahead of the socket
(``gateway.read_ahead_mb`` per request, see ``dicomweb.wado.prefetch``), so the whole study is
never held in memory. Without a ``transfer-syntax`` the client gets Explicit VR Little
Endian (PS3.18 8.7.3): other instances are converted (``dicomweb.wado.syntaxes``), one at a
time within the same read-ahead bound.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from io import BytesIO

import pydicom
import zstandard
from aiohttp import web

from dicomweb.http.middleware import STREAMING
from dicomweb.http.multipart import Multipart
from dicomweb.http.orthanc import OrthancClient
from dicomweb.wado.frames import fetch_one_part, instance_path
from dicomweb.wado.instance_reader import InstanceReader, PlannedInstance
from dicomweb.wado.prefetch import batches, ordered_prefetch, ordered_tasks
from dicomweb.wado.syntaxes import (
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    available_syntaxes,
    explicit_parts,
    target_syntax,
)
from query.api import StoredInstance
from security.api import NotAcceptable

__all__ = [
    "DEFAULT_DICOM",
    "AcceptedDicom",
    "accepts_zstd",
    "convert_instance",
    "negotiate_dicom",
    "stream_instances",
]

logger = logging.getLogger(__name__)

_DICOM = "application/dicom"
_BATCH_BYTES = 1 << 20  # instances read per thread hop: about this many bytes


@dataclass(frozen=True, slots=True)
class AcceptedDicom:
    """What the client accepts: ``transfer_syntaxes`` in its order of preference, and
    ``any_syntax`` when it named ``transfer-syntax=*`` (the stored bytes, whatever they are)."""

    transfer_syntaxes: tuple[str, ...]
    any_syntax: bool


DEFAULT_DICOM = AcceptedDicom((EXPLICIT_VR_LITTLE_ENDIAN,), False)


def _params(text: str) -> tuple[str, dict[str, str]]:
    media, *rest = (p.strip() for p in text.split(";"))
    params = {}
    for item in rest:
        name, _, value = item.partition("=")
        params[name.strip().lower()] = value.strip().strip('"')
    return media.lower(), params


def negotiate_dicom(accept: str | None) -> AcceptedDicom:
    """Parse ``Accept`` for a DICOM instance retrieval (PS3.18 8.7.3).

    Acceptable: no header, ``*/*``, ``multipart/related`` (``type`` absent or
    ``application/dicom``), with an optional ``transfer-syntax``: ``*`` means the stored
    bytes, whatever their syntax; none means Explicit VR Little Endian, the default of
    ``application/dicom`` (PS3.18 Table 8.7.3-2), as Orthanc's DICOMweb plugin does since
    1.5. Offers with ``q=0`` are ignored.

    Raises
    ------
    NotAcceptable
        When no offered media type is one the gateway produces.
    """
    if not accept:
        return DEFAULT_DICOM
    syntaxes: list[str] = []
    any_syntax = False
    matched = False
    for item in accept.split(","):
        media, params = _params(item)
        if params.get("q", "1").strip() in ("0", "0.0", "0.00", "0.000"):
            continue
        if media in ("*/*", "multipart/*") or (
            media == "multipart/related" and params.get("type", _DICOM).lower() in (_DICOM, "*/*")
        ):
            matched = True
            syntax = params.get("transfer-syntax", EXPLICIT_VR_LITTLE_ENDIAN)
            if syntax == "*":
                any_syntax = True
            elif syntax not in syntaxes:
                syntaxes.append(syntax)
    if not matched:
        raise NotAcceptable('this resource is sent as multipart/related; type="application/dicom"')
    return AcceptedDicom(tuple(syntaxes), any_syntax)


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


def _targets(items: Sequence[StoredInstance], accepted: AcceptedDicom) -> list[str | None]:
    """Per instance: None to send the stored bytes, else the syntax to convert it to.

    Raises
    ------
    NotAcceptable
        Before anything is sent, for an instance none of whose acceptable syntaxes can be
        produced, naming the ones that can.
    """
    targets: list[str | None] = []
    for item in items:
        if not item.transfer_syntax:  # not known to the catalog: as stored, unlabelled
            targets.append(None)
            continue
        target, possible = target_syntax(
            item.transfer_syntax, accepted.transfer_syntaxes, accepted.any_syntax
        )
        if not possible:
            raise _not_acceptable(item, accepted.transfer_syntaxes)
        targets.append(target)
    return targets


def _dicom_type(syntax: str | None) -> str:
    return f"{_DICOM}; transfer-syntax={syntax}" if syntax else _DICOM


def _not_acceptable(item: StoredInstance, asked: Sequence[str]) -> NotAcceptable:
    available = ", ".join(available_syntaxes(item.transfer_syntax or ""))
    return NotAcceptable(
        f"instance {item.sop_uid} is stored as {item.transfer_syntax} and cannot be "
        f"converted to {', '.join(asked)}; ask for one of {available} "
        "(transfer-syntax=* sends each instance as stored)"
    )


async def stream_instances(
    request: web.Request,
    items: Sequence[StoredInstance],
    reader: InstanceReader,
    accepted: AcceptedDicom,
    zstd: bool = False,
    orthanc: OrthancClient | None = None,
) -> tuple[web.StreamResponse, int]:
    """Send ``items`` as one multipart/related body; returns the response and the bytes
    of DICOM sent.

    Each instance goes out in its stored transfer syntax when ``accepted`` allows it;
    otherwise converted (:func:`_send_converted`: Implicit VR Little Endian to Explicit VR
    Little Endian here, anything else by ``orthanc``), each part labelled with the syntax
    of its bytes. A syntax nothing can produce is a 406 before anything is sent.

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
    targets = _targets(items, accepted)
    if any(target is not None for target in targets):
        if orthanc is None:
            raise NotAcceptable("transcoding is not available here")
        return await _send_converted(request, items, targets, reader, orthanc)
    # a catalog lookup like the others (default executor), not queued behind the reads
    plan = await asyncio.to_thread(reader.plan, [item.attachment_uuid for item in items])
    message = Multipart(_DICOM)
    # each head also closes the previous part, so small writes come in one piece
    heads = [
        message.head(_dicom_type(item.transfer_syntax), first=index == 0, length=planned.size)
        for index, (item, planned) in enumerate(zip(items, plan, strict=True))
    ]
    closing = message.end()
    sizes = [planned.size for planned in plan]
    headers = {"Content-Type": message.content_type}
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


async def _transcoded(orthanc: OrthancClient, item: StoredInstance, syntax: str) -> bytes:
    """The instance converted to ``syntax`` by Orthanc's DICOMweb plugin (which
    transcodes with DCMTK since DICOMweb 1.5 / Orthanc 1.7), checked to be in ``syntax``."""
    part = await fetch_one_part(
        orthanc,
        "/dicom-web" + instance_path(item),
        f'multipart/related; type="{_DICOM}"; transfer-syntax={syntax}',
    )
    if part is None:
        logger.info("Orthanc did not convert %s to %s", item.sop_uid, syntax)
        raise _not_acceptable(item, (syntax,))
    data = part[1]

    def labelled() -> str:
        meta = pydicom.dcmread(BytesIO(data), stop_before_pixels=True, force=True).file_meta
        return str(meta.get("TransferSyntaxUID", ""))

    got = await asyncio.to_thread(labelled)
    if got != syntax:  # never label bytes with a syntax they are not in
        logger.warning("Orthanc converted %s to %s, not %s", item.sop_uid, got, syntax)
        raise _not_acceptable(item, (syntax,))
    return data


def _by_orthanc(item: StoredInstance, target: str | None) -> bool:
    """Whether converting ``item`` to ``target`` takes Orthanc (all but Implicit VR
    Little Endian to Explicit VR Little Endian, done here)."""
    if target is None:
        return False
    return (item.transfer_syntax, target) != (IMPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN)


async def convert_instance(
    item: StoredInstance,
    planned: PlannedInstance,
    target: str,
    reader: InstanceReader,
    orthanc: OrthancClient,
) -> list[bytes | memoryview]:
    """``item`` converted to ``target``, as pieces to write in order: Implicit VR Little
    Endian to Explicit VR Little Endian here (``dicomweb.wado.syntaxes.explicit_parts``),
    anything else by Orthanc (whole).

    Raises
    ------
    NotAcceptable
        When Orthanc cannot produce ``target``.
    """
    if not _by_orthanc(item, target):
        try:
            return await asyncio.get_running_loop().run_in_executor(
                reader.executor, _explicit, reader, planned
            )
        except (ValueError, TypeError, KeyError, EOFError, OSError) as exc:
            # an odd header pydicom cannot re-encode (e.g. a long value in a short VR)
            logger.info("converting %s here failed (%s): Orthanc converts it", item.sop_uid, exc)
    return [await _transcoded(orthanc, item, target)]


def _explicit(reader: InstanceReader, planned: PlannedInstance) -> list[bytes | memoryview]:
    parts = planned.parts
    if parts is None:  # still in the write-behind journal
        parts = tuple(reader.blobs.parts(planned.uuid))
    return explicit_parts(parts, reader.read(PlannedInstance(planned.uuid, parts)))


async def _send_converted(
    request: web.Request,
    items: Sequence[StoredInstance],
    targets: Sequence[str | None],
    reader: InstanceReader,
    orthanc: OrthancClient,
) -> tuple[web.StreamResponse, int]:
    """Send ``items``, some converted to ``targets``, as multipart/related (chunked).

    Up to ``reader.read_ahead`` stored bytes of instances are read or converted ahead of
    the socket, each instance whole (a part's length is known when its head is
    written); the study as a whole is never held. A conversion failing on the first
    instance is a 406; on a later one the body is cut short, as for a failing read.
    """
    plan = await asyncio.to_thread(reader.plan, [item.attachment_uuid for item in items])
    loop = asyncio.get_running_loop()

    async def produce(index: int) -> tuple[str, list[bytes | memoryview]]:
        item, planned, target = items[index], plan[index], targets[index]
        if target is None:
            stored = await loop.run_in_executor(reader.executor, reader.read, planned)
            return item.transfer_syntax or "", list(stored)
        return target, await convert_instance(item, planned, target, reader, orthanc)

    message = Multipart(_DICOM)
    response = web.StreamResponse(status=200, headers={"Content-Type": message.content_type})
    # a conversion by Orthanc weighs the whole read-ahead: one at a time, so a decoded
    # instance (several times its stored size) is the most held, and Orthanc's CPU is
    # not taken by one retrieval's conversions at once
    weights = [
        reader.read_ahead if _by_orthanc(item, target) else (planned.size or (1 << 20))
        for item, planned, target in zip(items, plan, targets, strict=True)
    ]
    bodies = ordered_tasks(produce, weights, reader.read_ahead)
    sent = 0
    try:
        async for syntax, pieces in bodies:
            size = sum(len(piece) for piece in pieces)
            first = not response.prepared
            if first:
                # the first instance is ready before anything is sent: its failure is an
                # ordinary error answer
                await response.prepare(request)
                request[STREAMING] = True
            await response.write(message.head(_dicom_type(syntax), first=first, length=size))
            for piece in pieces:
                await response.write(piece)
            sent += size
        await response.write(message.end())
        await response.write_eof()
        return response, sent
    finally:
        await bodies.aclose()
