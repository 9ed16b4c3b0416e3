"""Grants over REST: an institution shares its studies with another (issue 3 and 4).

Routes::

    GET    /api/grants         grants the token's institution gave and received  (share or admin)
    POST   /api/grants         grant a study or a patient's studies              (share)
    DELETE /api/grants/{id}    revoke a grant the token's institution gave       (share)

The grantor is always the token's institution, and only the owner of a study may grant it
(``sharing.api.Grants``). Every change and every refusal is an audit record; errors are
``security.errors`` types, answered as JSON by the error middleware.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Literal

from aiohttp import web
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, model_validator

from dicomweb.appkeys import GRANTS, TOKEN_VALIDATOR
from dicomweb.http.auth import bearer_token
from dicomweb.operations.audit_records import (
    EventAction,
    EventOutcome,
    EventType,
    audit,
    audit_refusal,
)
from security.api import InvalidInput, NotFound, VnaError
from security.identity import InsufficientScope, Principal, TokenValidator
from sharing.api import Grant, parse_duration

__all__ = ["GrantRequest", "add_grant", "list_grants", "revoke_grant"]


SHARE = "share"
ADMIN = "admin"

_UID = r"^[0-9]+(\.[0-9]+)*$"


class GrantRequest(BaseModel):
    """The body of ``POST /api/grants`` (untrusted input)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    grantee: str = Field(min_length=1, max_length=128, description="institution name")
    study_uid: str | None = Field(default=None, max_length=64, pattern=_UID)
    patient_id: str | None = Field(default=None, min_length=1, max_length=64)
    issuer: str | None = Field(default=None, min_length=1, max_length=128)
    permission: Literal["read", "read+report"] = "read"
    expires_in: str | int | None = Field(default=None, description='"7d", "12h" or seconds')
    expires_at: AwareDatetime | None = None

    @model_validator(mode="after")
    def _one_target(self) -> GrantRequest:
        if (self.study_uid is None) == (self.patient_id is None):
            raise ValueError("give either study_uid or patient_id (with issuer)")
        if self.patient_id is not None and self.issuer is None:
            raise ValueError("a patient-level grant needs issuer (the patient id's issuer)")
        if self.study_uid is not None and self.issuer is not None:
            raise ValueError("issuer goes with patient_id, not with study_uid")
        if self.expires_in is not None and self.expires_at is not None:
            raise ValueError("give expires_in or expires_at, not both")
        return self

    def expiry(self, now: float) -> float | None:
        """The expiry as POSIX seconds, or None for a grant until revoked."""
        if self.expires_at is not None:
            return self.expires_at.timestamp()
        if self.expires_in is not None:
            return now + parse_duration(str(self.expires_in))
        return None


def _validator(request: web.Request) -> TokenValidator:
    return request.app[TOKEN_VALIDATOR]


async def _principal(request: web.Request, *scopes: str) -> Principal:
    """Validate the bearer token and require one of ``scopes``."""
    token = bearer_token(request)
    principal = await asyncio.to_thread(_validator(request).validate, token)
    if not any(principal.has(scope) for scope in scopes):
        raise InsufficientScope(scopes[0])
    return principal


def _message(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"])
        parts.append(f"{where}: {error['msg']}" if where else str(error["msg"]))
    return "invalid grant: " + "; ".join(parts)


async def _grant_request(request: web.Request) -> GrantRequest:
    try:
        raw = await request.read()
        return GrantRequest.model_validate_json(raw)
    except ValidationError as exc:
        if any(error["type"] == "json_invalid" for error in exc.errors()):
            raise InvalidInput("the body must be a JSON object (application/json)") from None
        raise InvalidInput(_message(exc)) from None


async def list_grants(request: web.Request) -> web.Response:
    """The grants the token's institution gave and those it received, oldest first."""
    principal = await _principal(request, SHARE, ADMIN)
    found = await asyncio.to_thread(request.app[GRANTS].list, institution=principal.institution)
    now = time.time()
    return web.json_response(
        {
            "institution": principal.institution,
            "given": [g.to_json(now) for g in found if g.grantor == principal.institution],
            "received": [g.to_json(now) for g in found if g.grantee == principal.institution],
        }
    )


async def add_grant(request: web.Request) -> web.Response:
    """Grant a study, or a patient's studies, of the token's institution to another."""
    principal = await _principal(request, SHARE)
    added = EventType.GRANT_ADDED
    async with _change_refused(request, principal, added, lambda exc: {"refused": str(exc)}):
        body = await _grant_request(request)
    async with _change_refused(
        request,
        principal,
        added,
        lambda exc: {"refused": str(exc), "grantee": body.grantee},
        study_uid=body.study_uid,
        patient=_patient(body.patient_id, body.issuer),
    ):
        now = time.time()
        grant = await asyncio.to_thread(
            request.app[GRANTS].add,
            grantor=principal.institution,
            grantee=body.grantee,
            created_by=principal.subject,
            study_uid=body.study_uid,
            patient_id=body.patient_id,
            issuer=body.issuer,
            permission=body.permission,
            expires_at=body.expiry(now),
            now=now,
        )
    await _audit_change(request, principal, grant, EventType.GRANT_ADDED)
    return web.json_response(
        grant.to_json(), status=201, headers={"Location": f"/api/grants/{grant.id}"}
    )


async def revoke_grant(request: web.Request) -> web.Response:
    """Revoke a grant the token's institution gave; answers the revoked grant."""
    principal = await _principal(request, SHARE)
    text = request.match_info["id"]
    async with _change_refused(
        request,
        principal,
        EventType.GRANT_REVOKED,
        lambda exc: {"grant": text[:32], "refused": str(exc)},
    ):
        if not text.isdigit():
            raise NotFound(f"no grant {text}")
        grant = await asyncio.to_thread(
            request.app[GRANTS].revoke,
            int(text),
            by=principal.subject,
            institution=principal.institution,
        )
    await _audit_change(request, principal, grant, EventType.GRANT_REVOKED)
    return web.json_response(grant.to_json())


_CHANGE_ACTION = {
    EventType.GRANT_ADDED: EventAction.CREATE,
    EventType.GRANT_REVOKED: EventAction.DELETE,
}


def _change_refused(
    request: web.Request,
    principal: Principal,
    event: EventType,
    detail: Callable[[VnaError], dict[str, str]],
    *,
    study_uid: str | None = None,
    patient: str | None = None,
) -> AbstractAsyncContextManager[None]:
    """Record an addition or revocation refused in the block (any ``VnaError``), then let
    the error go on to the error middleware; ``detail`` says what and why."""
    return audit_refusal(
        request,
        refused=VnaError,
        event=event,
        action=_CHANGE_ACTION[event],
        user=principal.subject,
        institution=principal.institution,
        study_uid=study_uid,
        detail=detail,
        patient=patient,
    )


async def _audit_change(
    request: web.Request, principal: Principal, grant: Grant, event: EventType
) -> None:
    """The record of a grant added or revoked, with the grant's study or patient."""
    await audit(
        request,
        event=event,
        action=_CHANGE_ACTION[event],
        outcome=EventOutcome.SUCCESS,
        user=principal.subject,
        institution=principal.institution,
        study_uid=grant.study_uid,
        detail=_detail(grant.to_json()),
        patient=_patient(grant.patient_id, grant.issuer),
    )


def _patient(patient_id: str | None, issuer: str | None) -> str | None:
    # PS3.15 A.5.2.5 patient participant: the id qualified by its issuer (ID^^^issuer)
    return None if patient_id is None else f"{patient_id}^^^{issuer}"


def _detail(grant: dict[str, object]) -> dict[str, str]:
    keys = ("id", "grantee", "grantor", "level", "permission", "expires_at")
    return {("grant" if k == "id" else k): str(grant[k]) for k in keys if grant[k] is not None}
