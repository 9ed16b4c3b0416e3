"""The gateway's middlewares: CORS, request ids and metrics, and the one error translation.

Order (outermost first): CORS preflight; metrics and request id; errors, which turns
project errors, bearer-token errors and OAuth errors into HTTP answers with a JSON body a
person can read (the OAuth endpoints' in RFC 6749's shape). A handler whose answers are
pages for a browser sets :data:`ERROR_RENDERER` to render them its way. CORS and
request-id headers are added by an ``on_response_prepare`` hook, so errors and streamed
answers carry them too.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.typedefs import Handler, Middleware
from authlib.oauth2 import OAuth2Error

from dicomweb.appkeys import METRICS, REQUEST_ID
from dicomweb.http.dicomxml import DICOM_JSON, dataset_response
from dicomweb.http.orthanc import OrthancError
from dicomweb.operations.audit_records import EventAction, EventOutcome, EventType, audit
from security.api import (
    Conflict,
    Forbidden,
    IntegrityError,
    InvalidInput,
    NotAcceptable,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    StorageFull,
    TierUnavailable,
    TooManyAttempts,
    UnsupportedMediaType,
    VnaError,
)
from security.identity import BEARER_ERRORS
from sharing.api import LinkGone, LinkLocked, PinRequired, WrongPin

__all__ = [
    "ERROR_RENDERER",
    "STREAMING",
    "AccessLogger",
    "ErrorAnswer",
    "cors",
    "error_middleware",
    "error_status",
    "metrics_middleware",
    "nosniff",
    "qido_response",
]

logger = logging.getLogger(__name__)

PrepareHook = Callable[[web.Request, web.StreamResponse], Awaitable[None]]

STREAMING: web.RequestKey[bool] = web.RequestKey("vna_streaming", bool)
"""Set on a request once a streamed body has started: an error can no longer be answered."""


# the first matching class wins: subclasses before their bases
_STATUS: tuple[tuple[type[VnaError], int, str], ...] = (
    (PinRequired, 401, "pin_required"),
    (WrongPin, 401, "wrong_pin"),
    (LinkLocked, 423, "locked"),
    (LinkGone, 410, "gone"),
    (NotFound, 404, "not_found"),
    (Forbidden, 403, "forbidden"),
    (InvalidInput, 400, "invalid_input"),
    (Conflict, 409, "conflict"),
    (NotAcceptable, 406, "not_acceptable"),
    (UnsupportedMediaType, 415, "unsupported_media_type"),
    (PayloadTooLarge, 413, "request_entity_too_large"),
    (TooManyAttempts, 429, "too_many_attempts"),
    (StorageFull, 507, "storage_full"),
    (TierUnavailable, 503, "tier_unavailable"),
    (ServiceUnavailable, 503, "service_unavailable"),
    (OrthancError, 502, "orthanc_error"),
)
_OAUTH_HEADERS = {"Cache-Control": "no-store", "Pragma": "no-cache"}


@dataclass(frozen=True, slots=True)
class ErrorAnswer:
    """What an error answer says, before it is rendered."""

    status: int
    error: str
    message: str
    details: Mapping[str, object] = field(default_factory=dict)


ErrorRenderer = Callable[[web.Request, ErrorAnswer], web.Response]

ERROR_RENDERER: web.RequestKey[ErrorRenderer] = web.RequestKey(
    "vna_error_renderer",
    ErrorRenderer,  # type: ignore[arg-type]
)
"""Set by a handler whose errors a browser shows (the sign-in page): renders them its way
instead of as JSON."""


def error_status(exc: BaseException) -> int | None:
    """The HTTP status the middleware answers ``exc`` with; ``None`` when it is not a
    classified error (an unexpected one is a 500)."""
    if isinstance(exc, web.HTTPException):
        return exc.status
    if isinstance(exc, OAuth2Error):
        return int(exc.status_code)
    for cls, status, _code in _STATUS:
        if isinstance(exc, cls):
            return status
    return None


_EXPOSED = "Content-Type, Content-Location, Warning, X-Request-Id, WWW-Authenticate"


def qido_response(
    results: Any, ignored: Sequence[str] = (), media: str = DICOM_JSON
) -> web.Response:
    """A QIDO-RS answer in ``media`` (DICOM JSON, or multipart XML: dicomweb/http/dicomxml.py);
    matching keys and return attributes the query could not use are named in a Warning
    (PS3.18: a 299 warning rather than an error)."""
    response = dataset_response(results, media)
    if ignored:
        names = ", ".join(sorted(set(ignored)))
        response.headers["Warning"] = f'299 vna "not supported, ignored: {names}"'
    return response


def _json_error(request: web.Request, answer: ErrorAnswer) -> web.Response:
    body = {
        "error": answer.error,
        "message": answer.message,
        **answer.details,
        "request_id": request.get(REQUEST_ID),
    }
    return web.json_response(body, status=answer.status)


def _render(request: web.Request, answer: ErrorAnswer) -> web.Response:
    renderer: ErrorRenderer = request.get(ERROR_RENDERER, _json_error)
    return renderer(request, answer)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Translate errors into HTTP answers, exactly once for the whole gateway."""
    try:
        return await handler(request)
    except BEARER_ERRORS as exc:
        status = int(exc.status_code)
        request.app[METRICS].token_refusals.labels(str(status)).inc()
        await audit(
            request,
            event=EventType.AUTHENTICATION,
            action=EventAction.EXECUTE,
            outcome=EventOutcome.MINOR_FAILURE,
            user="unknown",
            detail={"refused": str(exc.error), "path": request.path},
        )
        response = _render(request, ErrorAnswer(status, str(exc.error), str(exc.description)))
        response.headers.update(exc.get_headers())
        return response
    except OAuth2Error as exc:
        # the authorization server's endpoints: RFC 6749 section 5.2's body, never cached
        headers = dict(_OAUTH_HEADERS)
        headers.update({k: v for k, v in exc.get_headers() if k.lower() != "content-type"})
        return web.json_response(dict(exc.get_body()), status=int(exc.status_code), headers=headers)
    except web.HTTPException as exc:
        # aiohttp's own: no route (404), wrong method (405, with Allow), body too large
        if exc.status < 400:
            raise
        code = exc.reason.lower().replace(" ", "_")
        response = _render(request, ErrorAnswer(exc.status, code, exc.text or exc.reason))
        for name in ("Allow", "WWW-Authenticate"):
            if name in exc.headers:
                response.headers[name] = exc.headers[name]
        return response
    except IntegrityError:
        if request.get(STREAMING):
            raise
        logger.exception("stored data failed verification (request %s)", request.get(REQUEST_ID))
        answer = ErrorAnswer(500, "integrity_error", "stored data failed verification")
        return _render(request, answer)
    except VnaError as exc:
        if request.get(STREAMING):
            raise
        for cls, status, code in _STATUS:
            if isinstance(exc, cls):
                answer = ErrorAnswer(status, exc.code or code, str(exc), exc.details)
                return _render(request, answer)
        logger.exception("unclassified error (request %s)", request.get(REQUEST_ID))
        return _render(request, ErrorAnswer(500, "internal_error", "internal error"))
    except Exception:
        if request.get(STREAMING):
            raise
        logger.exception("unexpected error (request %s)", request.get(REQUEST_ID))
        answer = ErrorAnswer(500, "internal_error", "internal error; see the gateway log")
        return _render(request, answer)


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Give the request an id (``X-Request-Id``) and count it by route template."""
    request[REQUEST_ID] = uuid.uuid4().hex
    route = _route_name(request)
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    finally:
        seconds = time.perf_counter() - started
        request.app[METRICS].count_request(route, request.method, status, seconds)


def _route_name(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


async def nosniff(_request: web.Request, response: web.StreamResponse) -> None:
    """``X-Content-Type-Options: nosniff`` on every answer (an ``on_response_prepare``
    hook, so errors, redirects and streamed answers carry it too): a browser must never
    guess a type for a DICOM part, a JSON error or an HTML page."""
    response.headers.setdefault("X-Content-Type-Options", "nosniff")


def cors(origins: Sequence[str]) -> tuple[Middleware, PrepareHook]:
    """CORS for browser viewers on another origin (bearer tokens, no cookies).

    Returns the middleware answering preflight requests (``OPTIONS`` with
    ``Access-Control-Request-Method``, before the handler and its authentication; it goes
    after :func:`error_middleware`, which answers its refusal like any other) and the
    ``on_response_prepare`` hook that adds the headers to every other answer, streamed
    ones included (their headers are sent before the handler returns).
    """
    allow_any = "*" in origins
    allowed = frozenset(origins)

    def permitted(request: web.BaseRequest) -> str | None:
        origin = request.headers.get("Origin")
        return origin if origin is not None and (allow_any or origin in allowed) else None

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method != "OPTIONS" or "Access-Control-Request-Method" not in request.headers:
            return await handler(request)
        if permitted(request) is None:
            raise Forbidden("this origin is not allowed: add it to gateway.cors_origins")
        return web.Response(
            status=204,
            headers={
                "Access-Control-Allow-Methods": "GET, POST, DELETE, OPTIONS",
                "Access-Control-Allow-Headers": "Authorization, Accept, Content-Type",
                "Access-Control-Max-Age": "600",
            },
        )

    async def on_prepare(request: web.Request, response: web.StreamResponse) -> None:
        if REQUEST_ID in request:
            response.headers.setdefault("X-Request-Id", request[REQUEST_ID])
        origin = permitted(request)
        if origin is None:
            return
        response.headers["Access-Control-Allow-Origin"] = "*" if allow_any else origin
        response.headers["Access-Control-Expose-Headers"] = _EXPOSED
        if not allow_any:
            response.headers["Vary"] = "Origin"

    return middleware, on_prepare


class AccessLogger(AbstractAccessLogger):
    """One line per request: method, path without the query string, status, time, id.

    aiohttp's default format logs the request line with its query string, where a
    misplaced token would land; this one never logs queries or headers.
    """

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            "%s %s %d %.1fms id=%s",
            request.method,
            request.path,
            response.status,
            time * 1000,
            request.get(REQUEST_ID, "-"),
        )
