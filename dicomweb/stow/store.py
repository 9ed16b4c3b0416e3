"""STOW-RS, the Studies Store transaction (PS3.18 10.5), for ``application/dicom`` parts.

A request is handled in three steps:

1. **Receive.** The ``multipart/related`` body is read as a stream (aiohttp's
   ``MultipartReader``); each part is spooled to memory, or to an unlinked temporary file
   in ``<home>/run/stow`` once it or the request grows large, never holding the whole
   body in memory. The whole body is limited to ``gateway.max_request_mb`` (aiohttp's
   ``client_max_size`` does not apply to streamed readers, so it is counted here).
2. **Check.** Only when the body is complete and well formed is anything stored: a broken,
   truncated or oversized request is answered 400 / 413 / 415 and stores nothing. Each
   part is then checked cheaply (the ``DICM`` prefix, then the indexer's own header read)
   and against the request's study and the token's institution.
3. **Store.** Each accepted instance goes to Orthanc's ``POST /instances`` on loopback, so
   it takes the storage area's path like a C-STORE. Before that the instance's sender (the
   token's institution) is announced to the catalog by Orthanc instance id; the indexer
   records it as the instance's source, and as the study's owner when the study is new.

The answer is a Store Instances Response (PS3.18 Annex I) in DICOM JSON: 200 when all
were stored, 202 when some failed, 409 when none was stored.

Failure reasons (FailureReason (0008,1197); PS3.18 I.2.2 and this archive's own codes):

======  ==========================================================================
0x0110  processing failure (Orthanc refused or could not be reached)
0x0124  refused, not authorised: the instance's study (or the SOP instance) belongs to
        another institution, which did not give the token's institution a
        ``read+report`` grant (PS3.7 C.5 status; the same rule as C-STORE)
0xA700  out of resources (the archive's storage is full)
0xA900  data set does not match SOP class: native Pixel Data shorter than its image
0xC000  cannot understand: not a DICOM Part 10 file, unreadable header, missing UIDs,
        an element whose declared length runs past the end of the file, or a part
        whose media type is not ``application/dicom``
0xC409  the instance's Study Instance UID differs from the study in the request URL
======  ==========================================================================
"""

from __future__ import annotations

import asyncio
import json
import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import IO, Any

from aiohttp import BodyPartReader, MultipartReader, hdrs, web
from aiohttp.helpers import parse_mimetype
from aiohttp.http_exceptions import HttpProcessingError
from pydicom import Dataset, config

from archive.api import Catalog, Institution, header_record, survey
from dicomweb.http.middleware import error_status
from dicomweb.http.orthanc import OrthancClient, OrthancError
from dicomweb.operations.audit_records import (
    EventAction,
    EventOutcome,
    EventType,
    audit,
    audit_refusal,
)
from query.api import claim_for_store
from security.api import (
    Forbidden,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    UnsupportedMediaType,
    VnaError,
)
from security.identity import Principal

__all__ = [
    "FailureReason",
    "Outcome",
    "StowLimits",
    "check_content_type",
    "receive_parts",
    "store_instances",
    "store_instances_response",
    "store_response",
]

logger = logging.getLogger(__name__)

DICOM = "application/dicom"
CHUNK_BYTES = 256 * 1024
# a part stays in memory up to this size; all parts of a request together up to the second
MEMORY_PART_BYTES = 16 * 1024 * 1024
MEMORY_REQUEST_BYTES = 64 * 1024 * 1024
# RFC 2046 caps boundaries at 70 characters, but Orthanc's DICOMweb plugin (1.7 at least)
# sends 73: be liberal, yet bounded, since the parser scans every chunk for the boundary
MAX_BOUNDARY = 200


class FailureReason(IntEnum):
    """FailureReason (0008,1197) values this gateway answers (see the module docstring)."""

    PROCESSING_FAILURE = 0x0110
    NOT_AUTHORIZED = 0x0124
    OUT_OF_RESOURCES = 0xA700
    DATASET_MISMATCH = 0xA900
    CANNOT_UNDERSTAND = 0xC000
    STUDY_MISMATCH = 0xC409


@dataclass(frozen=True, slots=True)
class StowLimits:
    """How much a request may hold and where large parts are spooled."""

    max_request_bytes: int
    spool_dir: Path
    memory_part_bytes: int = MEMORY_PART_BYTES
    memory_request_bytes: int = MEMORY_REQUEST_BYTES


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one part: stored (``failure`` None) or failed with a reason."""

    sop_class_uid: str | None
    sop_uid: str | None
    study_uid: str | None = None
    series_uid: str | None = None
    failure: FailureReason | None = None


@dataclass(slots=True)
class ReceivedPart:
    """One body part, spooled; ``close`` frees it."""

    index: int
    content_type: str | None
    data: IO[bytes]
    memory_cap: int  # the spool stays in memory while ``size`` is at most this
    size: int = 0

    def close(self) -> None:
        self.data.close()


@dataclass(frozen=True, slots=True)
class _Candidate:
    """A part that reads as DICOM, with the identity the indexer will give it."""

    part: ReceivedPart
    sop_class_uid: str
    sop_uid: str
    study_uid: str
    series_uid: str
    orthanc_id: str


@dataclass(slots=True)
class _Budget:
    """The parts received so far and how many of their bytes are held in memory."""

    limits: StowLimits
    in_memory: int = 0
    parts: list[ReceivedPart] = field(default_factory=list)


# -- step 1: receive -----------------------------------------------------------------------


def check_content_type(value: str | None) -> None:
    """Accept ``multipart/related; type="application/dicom"; boundary=...`` only.

    Raises
    ------
    UnsupportedMediaType
        Not multipart/related, or parts of another type (PS3.18 10.5.3: 415).
    InvalidInput
        No usable boundary (a malformed request: 400).
    """
    expected = 'use Content-Type: multipart/related; type="application/dicom"; boundary=...'
    if not value:
        raise UnsupportedMediaType(f"STOW-RS needs a multipart body: {expected}")
    mime = parse_mimetype(value)
    if (mime.type, mime.subtype) != ("multipart", "related"):
        raise UnsupportedMediaType(f"{mime.type}/{mime.subtype} is not supported here: {expected}")
    part_type = mime.parameters.get("type")
    # a missing type parameter is tolerated: each part's own Content-Type is checked
    if part_type is not None and part_type.strip().lower() != DICOM:
        raise UnsupportedMediaType(
            f"parts of type {part_type!r} are not supported (only {DICOM}): {expected}"
        )
    boundary = mime.parameters.get("boundary")
    if not boundary:
        raise InvalidInput(f"the multipart Content-Type has no boundary: {expected}")
    if len(boundary) > MAX_BOUNDARY:
        raise InvalidInput(
            f"the multipart boundary is longer than {MAX_BOUNDARY} characters: "
            "use a boundary of at most 70 (RFC 2046)"
        )


class _LiberalMultipartReader(MultipartReader):
    """aiohttp's reader, with boundaries up to ``MAX_BOUNDARY`` characters: its own stops
    at RFC 2046's 70, which refuses every STOW-RS from Orthanc's DICOMweb plugin.

    The length was checked by :func:`check_content_type` before the reader is made.
    """

    def _get_boundary(self) -> str:
        boundary = parse_mimetype(self.headers[hdrs.CONTENT_TYPE]).parameters["boundary"]
        if len(boundary) > MAX_BOUNDARY:
            raise ValueError(f"the boundary is longer than {MAX_BOUNDARY} characters")
        return boundary


def _too_large(limit: int) -> PayloadTooLarge:
    mib = limit / (1024 * 1024)
    return PayloadTooLarge(
        f"the request body exceeds the gateway's limit of {mib:g} MiB "
        "(gateway.max_request_mb); nothing was stored: send fewer instances per request"
    )


def _spool(budget: _Budget) -> tuple[IO[bytes], int]:
    """A spool for the next part, in memory while the request's memory budget lasts.

    Spooled files are unlinked temporary files: nothing is left behind, even by a crash.
    """
    limits = budget.limits
    in_memory = min(limits.memory_part_bytes, limits.memory_request_bytes - budget.in_memory)
    if in_memory <= 0:
        return tempfile.TemporaryFile(dir=str(limits.spool_dir)), 0
    return tempfile.SpooledTemporaryFile(max_size=in_memory, dir=str(limits.spool_dir)), in_memory


def _describe(exc: BaseException) -> str:
    """The parser's complaint, short: it may quote the body, which is no place for an echo."""
    text = str(getattr(exc, "message", None) or exc or type(exc).__name__).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    return first if len(first) <= 120 else first[:117] + "..."


async def _receive_part(
    request: web.Request, part: BodyPartReader, budget: _Budget, index: int
) -> ReceivedPart:
    limit = budget.limits.max_request_bytes
    spool, memory_cap = _spool(budget)
    received = ReceivedPart(index, part.headers.get(hdrs.CONTENT_TYPE), spool, memory_cap)
    budget.parts.append(received)  # closed by the caller, whatever happens next
    while chunk := await part.read_chunk(CHUNK_BYTES):
        # counted on the raw stream: boundaries and part headers are part of the body
        if request.content.total_bytes > limit:
            raise _too_large(limit)
        await asyncio.to_thread(received.data.write, chunk)
        received.size += len(chunk)
    if received.size <= received.memory_cap:
        budget.in_memory += received.size
    return received


async def receive_parts(request: web.Request, limits: StowLimits) -> list[ReceivedPart]:
    """Read the whole multipart body into spooled parts; all or nothing.

    Raises the 4xx answer (nothing stored) for a bad Content-Type, a missing boundary, a
    broken or truncated body, nested multiparts, no parts, or a body over the limit.
    The caller closes the parts.
    """
    check_content_type(request.headers.get(hdrs.CONTENT_TYPE))
    limit = limits.max_request_bytes
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(limit)
    limits.spool_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    budget = _Budget(limits)
    try:
        reader = _LiberalMultipartReader(request.headers, request.content)
        index = 0
        while True:
            part = await reader.next()
            if part is None:
                break
            index += 1
            if not isinstance(part, BodyPartReader):
                raise InvalidInput(f"part {index} is itself multipart; send DICOM parts only")
            await _receive_part(request, part, budget, index)
        if request.content.total_bytes > limit:
            raise _too_large(limit)
    except (ValueError, AssertionError, HttpProcessingError) as exc:
        for received in budget.parts:
            received.close()
        raise InvalidInput(
            f"the multipart body is malformed or truncated ({_describe(exc)}); nothing was stored"
        ) from exc
    except BaseException:
        for received in budget.parts:
            received.close()
        raise
    if not budget.parts:
        raise InvalidInput("the multipart body holds no part; nothing was stored")
    return budget.parts


# -- step 2: check -------------------------------------------------------------------------


def inspect_part(part: ReceivedPart) -> _Candidate | Outcome:
    """Read a part's identity with the indexer's own header reader (blocking)."""
    declared = parse_mimetype(part.content_type) if part.content_type else None
    if declared is not None and f"{declared.type}/{declared.subtype}" != DICOM:
        logger.info("STOW part %d refused: media type %s", part.index, part.content_type)
        return Outcome(None, None, failure=FailureReason.CANNOT_UNDERSTAND)
    part.data.seek(0)
    head = part.data.read(132)
    if len(head) < 132 or head[128:132] != b"DICM":
        logger.info("STOW part %d refused: not a DICOM Part 10 file", part.index)
        return Outcome(None, None, failure=FailureReason.CANNOT_UNDERSTAND)
    part.data.seek(0)
    try:
        record = header_record(part.data, "", attachment_uuid=f"part {part.index}", size=part.size)
    except Exception as exc:  # pydicom raises many kinds on garbage; all mean the same here
        logger.info("STOW part %d refused: unreadable DICOM header (%s)", part.index, exc)
        return Outcome(None, None, failure=FailureReason.CANNOT_UNDERSTAND)
    if not record.sop_class_uid or not record.orthanc_id:
        logger.info("STOW part %d refused: no SOP Class UID", part.index)
        return Outcome(
            record.sop_class_uid, record.sop_uid, failure=FailureReason.CANNOT_UNDERSTAND
        )
    part.data.seek(0)
    whole = survey(part.data.read())
    incomplete = whole.truncated or whole.short_pixels
    if incomplete:
        # DCMTK (so Orthanc) reads past such a file's end leniently and would store it
        logger.info("STOW part %d refused: incomplete data set (%s)", part.index, incomplete)
        failure = (
            FailureReason.CANNOT_UNDERSTAND if whole.truncated else FailureReason.DATASET_MISMATCH
        )
        return Outcome(
            record.sop_class_uid, record.sop_uid, record.study_uid, record.series_uid, failure
        )
    return _Candidate(
        part,
        record.sop_class_uid,
        record.sop_uid,
        record.study_uid,
        record.series_uid,
        record.orthanc_id,
    )


def refused(catalog: Catalog, institution: Institution | str, study_uid: str, sop_uid: str) -> bool:
    """True when ``institution`` may not store this instance (blocking).

    The rule C-STORE follows too (:func:`query.api.claim_for_store`): the first
    institution to store an instance of a study owns its UID; another may store into it
    only with an active ``read+report`` grant (a reading centre's reports), and a SOP
    instance already filed under such a study is refused. Admission claims the study
    and the instance for the institution, so two parallel first stores of one new study
    cannot both pass.
    """
    if isinstance(institution, str):
        institution = catalog.institution(institution)
    return claim_for_store(catalog, institution, study_uid, sop_uid) is not None


# -- step 3: store -------------------------------------------------------------------------


def _orthanc_failure(status: int, body: bytes) -> FailureReason:
    if status == 507 or b"FullStorage" in body:
        return FailureReason.OUT_OF_RESOURCES
    if status == 400:
        return FailureReason.CANNOT_UNDERSTAND  # Orthanc could not parse the file
    return FailureReason.PROCESSING_FAILURE


async def _store_one(
    candidate: _Candidate,
    catalog: Catalog,
    orthanc: OrthancClient,
    institution_id: int,
    principal: Principal,
    remote: str | None,
) -> Outcome:
    stored = Outcome(
        candidate.sop_class_uid, candidate.sop_uid, candidate.study_uid, candidate.series_uid
    )
    await asyncio.to_thread(
        catalog.announce_source,
        candidate.orthanc_id,
        institution_id,
        "stow",
        principal.subject,
        remote,
    )
    candidate.part.data.seek(0)
    try:
        status, _headers, body = await orthanc.request(
            "POST",
            "/instances",
            data=candidate.part.data,
            headers={hdrs.CONTENT_TYPE: DICOM},
        )
    except OrthancError as exc:
        logger.error("STOW of %s failed: %s", candidate.sop_uid, exc)
        status, body = 0, b""
    if 200 <= status < 300:
        answer = _json(body)
        if answer.get("ID") and answer["ID"] != candidate.orthanc_id:
            logger.warning(
                "Orthanc filed %s as %s, the catalog expected %s",
                candidate.sop_uid,
                answer["ID"],
                candidate.orthanc_id,
            )
        return stored
    reason = _orthanc_failure(status, body)
    logger.warning("Orthanc refused STOW instance %s (HTTP %s)", candidate.sop_uid, status)
    await asyncio.to_thread(catalog.withdraw_source, candidate.orthanc_id, institution_id)
    return Outcome(
        candidate.sop_class_uid,
        candidate.sop_uid,
        candidate.study_uid,
        candidate.series_uid,
        reason,
    )


def _json(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


async def store_instances(
    request: web.Request,
    principal: Principal,
    catalog: Catalog,
    orthanc: OrthancClient,
    limits: StowLimits,
    study_uid: str | None,
) -> list[Outcome]:
    """Receive, check and store the instances of a STOW-RS request, in the body's order.

    Raises the 4xx answer for a request that cannot be read (nothing is stored then) and
    :class:`Forbidden` when the token's institution is not registered in the archive.
    """
    try:
        institution = await asyncio.to_thread(catalog.institution, principal.institution)
    except NotFound:
        raise Forbidden(
            f"institution {principal.institution!r} of this token is not registered in the "
            "archive; nothing can be stored for it"
        ) from None
    parts = await receive_parts(request, limits)
    outcomes: list[Outcome] = []
    try:
        for part in parts:
            checked = await asyncio.to_thread(inspect_part, part)
            if isinstance(checked, Outcome):
                outcomes.append(checked)
                continue
            reason: FailureReason | None = None
            if study_uid is not None and checked.study_uid != study_uid:
                reason = FailureReason.STUDY_MISMATCH
            elif await asyncio.to_thread(
                refused, catalog, institution, checked.study_uid, checked.sop_uid
            ):
                reason = FailureReason.NOT_AUTHORIZED
            if reason is not None:
                logger.info("STOW instance %s refused: %s", checked.sop_uid, reason.name)
                outcomes.append(
                    Outcome(
                        checked.sop_class_uid,
                        checked.sop_uid,
                        checked.study_uid,
                        checked.series_uid,
                        reason,
                    )
                )
                continue
            outcomes.append(
                await _store_one(
                    checked, catalog, orthanc, institution.id, principal, request.remote
                )
            )
    finally:
        for part in parts:
            part.close()
    return outcomes


# -- the answer ----------------------------------------------------------------------------


def _instance_url(root: str, outcome: Outcome) -> str:
    series = f"{root}/studies/{outcome.study_uid}/series/{outcome.series_uid}"
    return f"{series}/instances/{outcome.sop_uid}"


def _item(**elements: Any) -> Dataset:
    item = Dataset()
    # the UIDs are what the client sent, valid or not: the answer names them as they came
    with config.disable_value_validation():
        for keyword, value in elements.items():
            setattr(item, keyword, value)
    return item


def store_response(
    outcomes: Sequence[Outcome], root: str, study_uid: str | None
) -> tuple[int, dict[str, Any]]:
    """The HTTP status and Store Instances Response (PS3.18 Annex I) of ``outcomes``.

    200 all stored, 202 some failed, 409 none stored (PS3.18 Table 10.5.3-1). The
    response's Retrieve URL names the request's study, else the one study stored, else
    is empty (type 2). Built as a data set and written by pydicom's DICOM JSON model.
    """
    stored = [o for o in outcomes if o.failure is None]
    failed = [o for o in outcomes if o.failure is not None]
    studies_stored = {o.study_uid for o in stored}
    target = study_uid or (next(iter(studies_stored)) if len(studies_stored) == 1 else None)
    response = Dataset()
    response.RetrieveURL = f"{root}/studies/{target}" if target else None
    if failed:
        response.FailedSOPSequence = [
            _item(
                ReferencedSOPClassUID=o.sop_class_uid,
                ReferencedSOPInstanceUID=o.sop_uid,
                FailureReason=int(o.failure or 0),
            )
            for o in failed
        ]
    if stored:
        response.ReferencedSOPSequence = [
            _item(
                ReferencedSOPClassUID=o.sop_class_uid,
                ReferencedSOPInstanceUID=o.sop_uid,
                RetrieveURL=_instance_url(root, o),
            )
            for o in stored
        ]
    status = 200 if not failed else 202 if stored else 409
    return status, response.to_json_dict()


_STORE_OUTCOME = {
    200: EventOutcome.SUCCESS,
    202: EventOutcome.MINOR_FAILURE,
    409: EventOutcome.SERIOUS_FAILURE,
}


async def store_instances_response(
    request: web.Request,
    principal: Principal,
    catalog: Catalog,
    orthanc: OrthancClient,
    limits: StowLimits,
    root: str,
) -> web.Response:
    """Handle an authorised STOW-RS request and audit it, refusals included.

    One audit record per request (PS3.15 A.5.3 DICOM Instances Transferred, action C):
    outcome 0 all stored, 4 some failed or the request was refused, 8 none stored.
    """
    study_uid = request.match_info.get("study")

    def refused(exc: BaseException) -> dict[str, str]:
        status = error_status(exc)
        return {
            "transaction": "stow-rs",
            "refused": type(exc).__name__,
            "status": str(status or ""),
        }

    async with audit_refusal(
        request,
        refused=(web.HTTPException, VnaError),
        event=EventType.INSTANCES_TRANSFERRED,
        action=EventAction.CREATE,
        user=principal.subject,
        institution=principal.institution,
        study_uid=study_uid,
        detail=refused,
    ):
        outcomes = await store_instances(request, principal, catalog, orthanc, limits, study_uid)
    status, body = store_response(outcomes, root, study_uid)
    stored = sum(1 for o in outcomes if o.failure is None)
    studies_seen = {o.study_uid for o in outcomes if o.study_uid}
    uid = study_uid or (next(iter(studies_seen)) if len(studies_seen) == 1 else None)
    detail = {"stored": str(stored), "failed": str(len(outcomes) - stored)}
    if len(studies_seen) > 1:
        detail["studies"] = str(len(studies_seen))
    await audit(
        request,
        event=EventType.INSTANCES_TRANSFERRED,
        action=EventAction.CREATE,
        outcome=_STORE_OUTCOME[status],
        user=principal.subject,
        institution=principal.institution,
        study_uid=uid,
        detail={"transaction": "stow-rs", **detail},
    )
    # without a charset parameter: some clients (dicomweb-client) compare the type exactly
    return web.Response(
        body=json.dumps(body).encode(),
        status=status,
        headers={hdrs.CONTENT_TYPE: "application/dicom+json"},
    )
