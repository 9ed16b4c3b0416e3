"""Audit records for what the gateway does (security.audit holds the log itself).

Records never carry a token, secret or Authorization header: only who (subject,
institution, address), what (event, study) and the outcome.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

from aiohttp import web

from dicomweb.appkeys import AUDIT_LOG, REQUEST_ID
from security.api import AuditEvent, EventAction, EventOutcome, EventType

__all__ = [
    "EventAction",
    "EventOutcome",
    "EventType",
    "audit",
    "audit_refusal",
]


logger = logging.getLogger(__name__)

E = TypeVar("E", bound=BaseException)


async def audit(
    request: web.Request,
    *,
    event: EventType,
    action: EventAction,
    outcome: EventOutcome,
    user: str,
    institution: str | None = None,
    study_uid: str | None = None,
    detail: dict[str, str] | None = None,
    patient: str | None = None,
) -> None:
    """Append one record; a failing audit log fails the request (no silent gaps)."""
    log = request.app.get(AUDIT_LOG)
    if log is None:
        return
    record = AuditEvent(
        event=event.value,
        action=action.value,
        outcome=outcome.value,
        user=user,
        institution=institution,
        network_address=request.remote,
        request_id=request.get(REQUEST_ID),
        study_uid=study_uid,
        patient=patient,
        detail=detail or {},
    )
    await asyncio.to_thread(log.append, record)


@asynccontextmanager
async def audit_refusal(
    request: web.Request,
    *,
    refused: type[E] | tuple[type[E], ...],
    event: EventType,
    action: EventAction,
    user: str,
    institution: str | None = None,
    study_uid: str | None = None,
    detail: Callable[[E], dict[str, str]],
    patient: str | None = None,
) -> AsyncIterator[None]:
    """Record a ``refused`` error raised in the block as a minor failure, then let it go
    on to the error middleware; ``detail`` says what was refused and why."""
    try:
        yield
    except refused as exc:
        await audit(
            request,
            event=event,
            action=action,
            outcome=EventOutcome.MINOR_FAILURE,
            user=user,
            institution=institution,
            study_uid=study_uid,
            detail=detail(exc),
            patient=patient,
        )
        raise
