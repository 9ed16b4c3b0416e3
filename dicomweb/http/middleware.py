"""The gateway's middlewares: CORS, request ids and metrics, and the one error translation.

Order (outermost first): CORS preflight; metrics and request id; errors, which turns
project errors and bearer-token errors into HTTP answers with a JSON body a person can
read. CORS and request-id headers are added by an ``on_response_prepare`` hook, so
errors and streamed answers carry them too.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.typedefs import Handler, Middleware

from dicomweb.http.dicomxml import DICOM_JSON, dataset_response
from dicomweb.http.orthanc import OrthancError
from dicomweb.operations.auditing import REQUEST_ID, audit
from dicomweb.operations.metrics import GatewayMetrics
from security.errors import (
    Conflict,
    Forbidden,
    IntegrityError,
    InvalidInput,
    NotFound,
    StorageFull,
    TierUnavailable,
    VnaError,
)
from security.tokens import BearerError

__all__ = [
    "METRICS",
    "REQUEST_ID",
    "STREAMING",
    "AccessLogger",
    "cors",
    "error_middleware",
    "metrics_middleware",
    "nosniff",
    "qido_response",
]

logger = logging.getLogger(__name__)

PrepareHook = Callable[[web.Request, web.StreamResponse], Awaitable[None]]

STREAMING: web.RequestKey[bool] = web.RequestKey("vna_streaming", bool)
"""Set on a request once a streamed body has started: an error can no longer be answered."""

METRICS: web.AppKey[GatewayMetrics] = web.AppKey("metrics", GatewayMetrics)

_STATUS: tuple[tuple[type[VnaError], int, str], ...] = (
    (NotFound, 404, "not_found"),
    (Forbidden, 403, "forbidden"),
    (InvalidInput, 400, "invalid_input"),
    (Conflict, 409, "conflict"),
    (StorageFull, 507, "storage_full"),
    (TierUnavailable, 503, "tier_unavailable"),
    (OrthancError, 502, "orthanc_error"),
)
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


def _json_error(status: int, error: str, message: str, request: web.Request) -> web.Response:
    body = {"error": error, "message": message, "request_id": request.get(REQUEST_ID)}
    return web.json_response(body, status=status)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Translate errors into HTTP answers, exactly once for the whole gateway."""
    try:
        return await handler(request)
    except BearerError as exc:
        request.app[METRICS].token_refusals.labels(str(exc.status)).inc()
        await audit(
            request,
            "authentication",
            "E",
            4,
            "unknown",
            detail={"refused": exc.error or "invalid_token", "path": request.path},
        )
        response = _json_error(exc.status, exc.error or "invalid_token", exc.description, request)
        response.headers["WWW-Authenticate"] = exc.www_authenticate()
        return response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = _json_error(
            exc.status, exc.reason.lower().replace(" ", "_"), exc.text or exc.reason, request
        )
        for name in ("Allow", "WWW-Authenticate"):
            if name in exc.headers:
                response.headers[name] = exc.headers[name]
        return response
    except IntegrityError:
        if request.get(STREAMING):
            raise
        logger.exception("stored data failed verification (request %s)", request.get(REQUEST_ID))
        return _json_error(500, "integrity_error", "stored data failed verification", request)
    except VnaError as exc:
        if request.get(STREAMING):
            raise
        for cls, status, code in _STATUS:
            if isinstance(exc, cls):
                return _json_error(status, code, str(exc), request)
        logger.exception("unclassified error (request %s)", request.get(REQUEST_ID))
        return _json_error(500, "internal_error", "internal error", request)
    except Exception:
        if request.get(STREAMING):
            raise
        logger.exception("unexpected error (request %s)", request.get(REQUEST_ID))
        return _json_error(500, "internal_error", "internal error; see the gateway log", request)


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
    ``Access-Control-Request-Method``, before routing and authentication) and the
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
            return web.Response(status=403, text="origin not allowed")
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
