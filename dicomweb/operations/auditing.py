"""Audit records for what the gateway does (security.audit holds the log itself).

Records never carry a token, secret or Authorization header: only who (subject,
institution, address), what (event, study) and the outcome.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from security.audit import AuditEvent, AuditLog

__all__ = ["AUDIT", "REQUEST_ID", "audit"]

# request-scoped key under which the metrics middleware puts the request id
REQUEST_ID: web.RequestKey[str] = web.RequestKey("vna_request_id", str)

logger = logging.getLogger(__name__)

AUDIT: web.AppKey[AuditLog] = web.AppKey("audit", AuditLog)


async def audit(
    request: web.Request,
    event: str,
    action: str,
    outcome: int,
    user: str,
    institution: str | None = None,
    study_uid: str | None = None,
    detail: dict[str, str] | None = None,
    patient: str | None = None,
) -> None:
    """Append one record; a failing audit log fails the request (no silent gaps)."""
    log = request.app.get(AUDIT)
    if log is None:
        return
    record = AuditEvent(
        event,
        action,
        outcome,
        user,
        institution,
        request.remote,
        request.get(REQUEST_ID),
        study_uid=study_uid,
        patient=patient,
        detail=detail or {},
    )
    await asyncio.to_thread(log.append, record)
