"""Deleting a study or a series through the gateway (scope ``dicom.delete``).

``DELETE /dicom-web/studies/{study}[/series/{series}]`` is not part of PS3.18 but is what
DICOMweb servers commonly offer (dcm4chee, Orthanc's own plugin). Only the owning
institution may delete: a grantee that sees the study gets 403, anybody else the same 404
as for a study that does not exist. Orthanc deletes the instances (``/tools/bulk-delete``);
the storage area drops their references, the indexer forgets them, and blobs nothing else
references are collected after the grace period (``vna gc``), so a mistaken delete can be
noticed in the audit log before the bytes are gone from disk.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from dicomweb.appkeys import CATALOG, ORTHANC_CLIENT, TOKEN_VALIDATOR
from dicomweb.http.auth import authorize
from dicomweb.http.orthanc import OrthancError
from dicomweb.operations.audit_records import EventAction, EventOutcome, EventType, audit
from query.api import deletion_targets
from security.api import Forbidden, NotFound

__all__ = ["delete_series", "delete_study"]

DELETE = "dicom.delete"


async def _delete(request: web.Request, what: str) -> web.Response:
    principal = await authorize(request, request.app[TOKEN_VALIDATOR], DELETE)
    study_uid = request.match_info["study"]
    series_uid = request.match_info.get("series")
    ids, seen = await asyncio.to_thread(
        deletion_targets, request.app[CATALOG], principal.institution, study_uid, series_uid
    )
    detail = {"level": what} | ({"series": series_uid} if series_uid else {})

    async def record(outcome: EventOutcome, more: dict[str, str]) -> None:
        await audit(
            request,
            event=EventType.STUDY_DELETED,
            action=EventAction.DELETE,
            outcome=outcome,
            user=principal.subject,
            institution=principal.institution,
            study_uid=study_uid,
            detail=detail | more,
        )

    if not ids:
        await record(
            EventOutcome.MINOR_FAILURE, {"refused": "not the owner" if seen else "not reachable"}
        )
        if seen:
            raise Forbidden(f"only the institution that owns this {what} may delete it")
        raise NotFound(f"no such {what}")
    status, _headers, body = await request.app[ORTHANC_CLIENT].request(
        "POST", "/tools/bulk-delete", json={"Resources": ids}
    )
    if status != 200:
        await record(EventOutcome.SERIOUS_FAILURE, {"refused": f"Orthanc answered {status}"})
        raise OrthancError(f"Orthanc could not delete the {what} ({status})", status)
    await record(EventOutcome.SUCCESS, {"instances": str(len(ids))})
    return web.json_response({"deleted_instances": len(ids), "study_uid": study_uid})


async def delete_study(request: web.Request) -> web.Response:
    """Delete every instance of a study the token's institution owns."""
    return await _delete(request, "study")


async def delete_series(request: web.Request) -> web.Response:
    """Delete one series of such a study."""
    return await _delete(request, "series")
