"""Share links over HTTP: create/list/revoke (scope ``share``), open, and study download.

Routes::

    GET    /share/share.js               the share page's script (no inline script)
    GET    /share/{id}                   the share page (the same for every id)
    POST   /share/{id}/open              {"secret", "pin"} -> a study-narrowed token
    GET    /api/shares                   the token's institution's links (scope share)
    POST   /api/shares                   create one; the answer has the link, once
    DELETE /api/shares/{id}              revoke
    GET    /api/studies/{study}/archive  the study as a ZIP with DICOMDIR (scope export)

A link's token names the institution ``share:<id>`` (``query.api.reachable`` narrows it
to the link's study while the link is active) and carries ``dicom.read``, plus ``export``
when the link allows download. Every open, wrong PIN, unknown link and download is
audited; failed openings from one address beyond a limit are answered 429.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dicomweb.appkeys import (
    CATALOG,
    EMBEDDED_ISSUER,
    GATEWAY_VIEW,
    METRICS,
    ORTHANC_CLIENT,
    REQUEST_ID,
    SHARE_LINKS,
    TOKEN_VALIDATOR,
)
from dicomweb.http.auth import authorize
from dicomweb.http.middleware import ERROR_RENDERER, ErrorAnswer
from dicomweb.http.orthanc import OrthancError
from dicomweb.operations.audit_records import (
    EventAction,
    EventOutcome,
    EventType,
    audit,
    audit_refusal,
)
from dicomweb.settings import GatewaySettings
from dicomweb.wado.frames import stream_from_orthanc
from query.api import reaches_study, study_orthanc_ids
from security.api import FailureThrottle, InvalidInput, NotFound, TooManyAttempts
from security.identity import Principal
from sharing.api import (
    Action,
    LinkGone,
    LinkLocked,
    ShareLink,
    ShareLinks,
    WrongPin,
    parse_duration,
    share_institution,
)
from viewer.api import SHARE_SCRIPT, ViewerMode, ViewerUrls, share_headers, share_page

__all__ = ["add_share_routes", "share_context"]

SHARE = "share"
EXPORT = "export"
READ = "dicom.read"
FAILURE_WINDOW = 600.0
THROTTLE_KIND = "share"


class ShareService:
    """The link table plus the failed openings per address (in the catalog: shared by
    every gateway worker, forgotten after ``FAILURE_WINDOW``)."""

    def __init__(
        self, links: ShareLinks, gateway: GatewaySettings, throttle: FailureThrottle
    ) -> None:
        self.links = links
        self.gateway = gateway
        self.throttle = throttle

    def throttled(self, address: str) -> bool:
        return self.throttle.throttled(THROTTLE_KIND, address)

    def failed(self, address: str) -> None:
        self.throttle.failed(THROTTLE_KIND, address)


def share_context(
    gateway: GatewaySettings,
) -> Callable[[web.Application], AsyncIterator[None]]:
    """``cleanup_ctx``: the link table on the catalog's engine (after the catalog opens)."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        engine = app[CATALOG].engine
        links = await asyncio.to_thread(ShareLinks, engine, pin_attempts=gateway.share_pin_attempts)
        throttle = FailureThrottle(
            engine, limit=gateway.share_open_failures_per_address, window=FAILURE_WINDOW
        )
        app[SHARE_LINKS] = ShareService(links, gateway, throttle)
        yield

    return context


def _viewer_urls(request: web.Request) -> ViewerUrls:
    return ViewerUrls.for_gateway(request.app[GATEWAY_VIEW].public_url)


def _share_error(request: web.Request, answer: ErrorAnswer) -> web.Response:
    """An error of the share page's requests: the gateway's JSON answer with the page's
    headers (no caching, no Referer)."""
    body = {"error": answer.error, "message": answer.message, **answer.details}
    body["request_id"] = request.get(REQUEST_ID)
    return web.json_response(body, status=answer.status, headers=share_headers())


class _BadOpenRequest(InvalidInput):
    code = "invalid_request"  # what the share page's script was written against


# -- the page a visitor opens ---------------------------------------------------------------


async def share_script(_request: web.Request) -> web.Response:
    headers = share_headers()
    headers["Content-Type"] = "text/javascript; charset=utf-8"
    return web.Response(text=SHARE_SCRIPT, headers=headers)


async def share_page_handler(request: web.Request) -> web.Response:
    urls = _viewer_urls(request)
    viewer = urls.origin + urls.router_basename(ViewerMode.SHARE) + "/viewer"
    headers = share_headers()
    headers["Content-Type"] = "text/html; charset=utf-8"
    return web.Response(text=share_page(viewer, "/share/share.js"), headers=headers)


class OpenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    secret: str = Field(min_length=1, max_length=128)
    pin: str | None = Field(None, max_length=64)


async def open_link(request: web.Request) -> web.Response:
    """Trade a link's secret (and PIN) for a short-lived token narrowed to its study."""
    request[ERROR_RENDERER] = _share_error
    service = request.app[SHARE_LINKS]
    link_id = request.match_info["id"]
    user = share_institution(link_id)
    address = request.remote or "unknown"
    now = time.time()
    # every record of this exchange: an attempt to use the link, by the link's pseudonymous user
    record = functools.partial(audit, request, action=EventAction.EXECUTE, user=user)
    if await asyncio.to_thread(service.throttled, address):
        await record(
            event=EventType.SECURITY_ALERT,
            outcome=EventOutcome.SERIOUS_FAILURE,
            detail={"refused": "throttled"},
        )
        raise TooManyAttempts("Too many failed attempts: try again later.")
    try:
        body = OpenRequest.model_validate(await request.json())
    except (ValueError, ValidationError):
        raise _BadOpenRequest("The request must be JSON with the link's secret.") from None
    try:
        link = await asyncio.to_thread(service.links.open, link_id, body.secret, body.pin, now)
    except NotFound:
        # an unknown id or a wrong secret: somebody guessing, or a mangled link
        await asyncio.to_thread(service.failed, address)
        await record(
            event=EventType.SECURITY_ALERT,
            outcome=EventOutcome.MINOR_FAILURE,
            detail={"refused": "no such link"},
        )
        raise NotFound("This link does not exist. Check that it is complete.") from None
    except WrongPin as exc:
        await asyncio.to_thread(service.failed, address)
        await record(
            event=EventType.AUTHENTICATION,
            outcome=EventOutcome.MINOR_FAILURE,
            detail={"refused": "wrong PIN", "attempts_left": str(exc.attempts_left)},
        )
        raise
    except LinkLocked:
        await record(
            event=EventType.AUTHENTICATION,
            outcome=EventOutcome.MINOR_FAILURE,
            detail={"refused": "locked"},
        )
        raise
    except LinkGone as exc:
        await record(
            event=EventType.AUTHENTICATION,
            outcome=EventOutcome.MINOR_FAILURE,
            detail={"refused": str(exc)},
        )
        raise
    scopes = [READ] + ([EXPORT] if Action.DOWNLOAD in link.actions else [])
    lifetime = min(
        service.gateway.share_token_minutes * 60, max(int(link.expires_at - now), 1)
    )  # never beyond the link's own expiry
    token = request.app[EMBEDDED_ISSUER].mint(
        subject=user, institution=user, scopes=scopes, lifetime=lifetime
    )
    await record(
        event=EventType.AUTHENTICATION,
        outcome=EventOutcome.SUCCESS,
        institution=link.institution,
        study_uid=link.study_uid,
        detail={"opened": "share link", "uses": str(link.uses)},
    )
    root = request.app[GATEWAY_VIEW].public_url
    return web.json_response(
        {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": lifetime,
            "study_uid": link.study_uid,
            "actions": sorted(link.actions),
            "dicomweb_root": f"{root}/dicom-web",
            "download_url": f"{root}/api/studies/{link.study_uid}/archive",
        },
        headers=share_headers(),
    )


# -- management -----------------------------------------------------------------------------


class CreateShare(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    study_uid: str = Field(min_length=1, max_length=64)
    expires: str | None = Field(None, description="e.g. 7d [gateway.share_default_expiry]")
    max_uses: int | None = Field(None, ge=1)
    pin: str | None = Field(None, min_length=4, max_length=64)
    download: bool = False


def _link_json(link: ShareLink) -> dict[str, Any]:
    return {
        "id": link.id,
        "study_uid": link.study_uid,
        "institution": link.institution,
        "actions": sorted(link.actions),
        "created_at": link.created_at,
        "created_by": link.created_by,
        "expires_at": link.expires_at,
        "max_uses": link.max_uses,
        "uses": link.uses,
        "pin": link.has_pin,
        "state": link.state(),
        "last_used_at": link.last_used_at,
    }


async def create_share(request: web.Request) -> web.Response:
    principal = await authorize(request, request.app[TOKEN_VALIDATOR], SHARE)
    try:
        body = CreateShare.model_validate(await request.json())
    except ValueError as exc:  # ValidationError is a ValueError
        raise InvalidInput(f"bad share link request: {exc}") from exc
    service = request.app[SHARE_LINKS]
    catalog = request.app[CATALOG]
    async with _change_refused(
        request, principal, EventType.SHARE_CREATED, body.study_uid, "not reachable"
    ):
        if not await asyncio.to_thread(
            reaches_study, catalog.engine, body.study_uid, principal.institution
        ):
            raise NotFound("no such study")
    expires_in = parse_duration(body.expires or service.gateway.share_default_expiry)
    actions = [Action.VIEW] + ([Action.DOWNLOAD] if body.download else [])
    new = await asyncio.to_thread(
        service.links.create,
        body.study_uid,
        principal.institution,
        principal.subject,
        expires_in=expires_in,
        actions=actions,
        max_uses=body.max_uses,
        pin=body.pin,
    )
    await _audit_change(request, principal, EventType.SHARE_CREATED, body.study_uid, new.link.id)
    answer = _link_json(new.link)
    answer["url"] = new.url(request.app[GATEWAY_VIEW].public_url)  # the only time the secret leaves
    return web.json_response(answer, status=201, headers={"Cache-Control": "no-store"})


async def list_shares(request: web.Request) -> web.Response:
    principal = await authorize(request, request.app[TOKEN_VALIDATOR], SHARE)
    links = await asyncio.to_thread(request.app[SHARE_LINKS].links.list, principal.institution)
    return web.json_response([_link_json(link) for link in links])


async def revoke_share(request: web.Request) -> web.Response:
    principal = await authorize(request, request.app[TOKEN_VALIDATOR], SHARE)
    link_id = request.match_info["id"]
    async with _change_refused(request, principal, EventType.SHARE_REVOKED, None, link_id):
        link = await asyncio.to_thread(
            request.app[SHARE_LINKS].links.revoke,
            link_id,
            principal.subject,
            principal.institution,
        )
    await _audit_change(request, principal, EventType.SHARE_REVOKED, link.study_uid, link_id)
    return web.json_response(_link_json(link))


_CHANGE_ACTION = {
    EventType.SHARE_CREATED: EventAction.CREATE,
    EventType.SHARE_REVOKED: EventAction.DELETE,
}


async def _audit_change(
    request: web.Request,
    principal: Principal,
    event: EventType,
    study_uid: str | None,
    link_id: str,
) -> None:
    """The record of a share link created or revoked."""
    await audit(
        request,
        event=event,
        action=_CHANGE_ACTION[event],
        outcome=EventOutcome.SUCCESS,
        user=principal.subject,
        institution=principal.institution,
        study_uid=study_uid,
        detail={"link": link_id},
    )


def _change_refused(
    request: web.Request,
    principal: Principal,
    event: EventType,
    study_uid: str | None,
    what: str,
) -> AbstractAsyncContextManager[None]:
    """Record a creation or revocation refused in the block (``NotFound``: no such study,
    no such link) with ``what`` was refused, then let the error go on."""
    return audit_refusal(
        request,
        refused=NotFound,
        event=event,
        action=_CHANGE_ACTION[event],
        user=principal.subject,
        institution=principal.institution,
        study_uid=study_uid,
        detail=lambda _exc: {"refused": what},
    )


# -- download -------------------------------------------------------------------------------


async def download_study(request: web.Request) -> web.StreamResponse:
    """The study as a ZIP with a DICOMDIR (PS3.10 media), the stored files unchanged."""
    principal = await authorize(request, request.app[TOKEN_VALIDATOR], EXPORT)
    study_uid = request.match_info["study"]
    ids = await asyncio.to_thread(
        study_orthanc_ids, request.app[CATALOG], study_uid, principal.institution
    )
    if not ids:
        await audit(
            request,
            event=EventType.EXPORT,
            action=EventAction.READ,
            outcome=EventOutcome.MINOR_FAILURE,
            user=principal.subject,
            institution=principal.institution,
            study_uid=study_uid,
            detail={"refused": "not reachable"},
        )
        raise NotFound("no such study")

    def refuse(status: int, _text: str) -> Exception:
        return OrthancError(f"Orthanc could not build the archive ({status})", status)

    # recorded before the bytes go out: a download cut short is still a disclosure
    await audit(
        request,
        event=EventType.EXPORT,
        action=EventAction.READ,
        outcome=EventOutcome.SUCCESS,
        user=principal.subject,
        institution=principal.institution,
        study_uid=study_uid,
        detail={"format": "zip+dicomdir", "instances": str(len(ids))},
    )
    response, sent = await stream_from_orthanc(
        request,
        request.app[ORTHANC_CLIENT],
        "/tools/create-media",
        accept="application/zip",
        refuse=refuse,
        json_body={"Resources": ids, "Synchronous": True},
    )
    request.app[METRICS].bytes_sent.inc(sent)
    return response


def add_share_routes(app: web.Application) -> None:
    app.router.add_get("/share/share.js", share_script)
    app.router.add_get("/share/{id}", share_page_handler)
    app.router.add_post("/share/{id}/open", open_link)
    app.router.add_get("/api/shares", list_shares)
    app.router.add_post("/api/shares", create_share)
    app.router.add_delete("/api/shares/{id}", revoke_share)
    app.router.add_get("/api/studies/{study}/archive", download_study)
