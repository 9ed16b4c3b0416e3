"""The OHIF viewer served by the gateway at ``/viewer`` (files from ``viewer.api``).

Routes::

    GET /viewer, /viewer/{route}            the staff viewer (OIDC login)
    GET /viewer/app-config.js               its generated configuration
    GET /viewer/share/{route}               the share-link viewer (token from sessionStorage)
    GET /viewer/share/app-config.js         its generated configuration
    GET /viewer/{file}                      OHIF's files (dist/), rewritten where they name "/"
    GET /viewer/signed-out                  a static page after a staff sign-out (not OHIF)

A path under ``/viewer/`` that is no file is a route of the single-page app and answers
``index.html`` (the SPA fallback), except names with a file extension: a missing script
is a 404, not a page that would fail to parse as JavaScript. Every answer carries the
viewer's CSP and ``Referrer-Policy: no-referrer``. No route needs a token: the viewer's
files hold no data; the data it asks for is authorised by the DICOMweb routes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path, PurePosixPath

from aiohttp import web

from dicomweb.appkeys import OAUTH_CLIENTS, VIEWER_STATE
from dicomweb.http.middleware import ERROR_RENDERER, ErrorAnswer
from security.api import NotFound, ServiceUnavailable
from security.identity import SCOPES
from viewer.api import (
    SIGNED_OUT_CSP,
    SIGNED_OUT_ROUTE,
    Asset,
    Bundle,
    BundleError,
    StaffSignIn,
    ViewerMode,
    ViewerUrls,
    app_config_js,
    default_bundle_dir,
    security_headers,
    signed_out_page,
    viewer_client,
)

__all__ = ["ViewerState", "add_viewer_routes", "viewer_ctx"]

logger = logging.getLogger(__name__)

MOUNT = "/viewer"


class ViewerState:
    """The prepared bundle (None when OHIF is not installed) and the two configurations."""

    def __init__(
        self,
        urls: ViewerUrls,
        bundle: Bundle | None,
        problem: str = "",
        sign_in: StaffSignIn | None = None,
    ) -> None:
        self.urls = urls
        self.bundle = bundle
        self.problem = problem
        self.configs = {mode: app_config_js(urls, mode, sign_in).encode() for mode in ViewerMode}
        self.signed_out = signed_out_page(urls)


def viewer_ctx(
    public_url: str, bundle_dir: Path | None, sign_in: StaffSignIn | None = None
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A ``cleanup_ctx`` that prepares the bundle off the event loop at startup.

    A missing bundle does not stop the gateway (DICOMweb does not need it): /viewer then
    answers 503 saying how to install it.
    """
    urls = ViewerUrls.for_gateway(public_url, MOUNT)
    root = bundle_dir or default_bundle_dir()

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        try:
            bundle = await asyncio.to_thread(Bundle.load, root, urls)
        except (BundleError, OSError, ValueError) as exc:
            logger.warning("viewer not available: %s", exc)
            app[VIEWER_STATE] = ViewerState(urls, None, str(exc), sign_in)
        else:
            app[VIEWER_STATE] = ViewerState(urls, bundle, sign_in=sign_in)
            logger.info("serving the OHIF viewer from %s at %s", root, urls.viewer_url)
        # the staff variant signs people in as this public client (PKCE, no secret)
        registry = app.get(OAUTH_CLIENTS)
        if registry is not None:
            client = viewer_client(urls)
            await asyncio.to_thread(
                registry.ensure_public_client,
                client.client_id,
                client.redirect_uris,
                # openid/profile are asked per sign-in; a client registers archive scopes
                [scope for scope in client.scopes if scope in SCOPES],
            )
        yield

    return ctx


def _respond(request: web.Request, asset: Asset, csp: str) -> web.StreamResponse:
    headers = security_headers(csp)
    headers["Cache-Control"] = asset.cache_control
    if asset.path is not None:
        # FileResponse answers Range and If-Modified-Since, and sends a .gz/.br sibling
        headers["Content-Type"] = asset.content_type
        return web.FileResponse(asset.path, headers=headers)
    if asset.etag:
        headers["ETag"] = asset.etag
        if asset.etag in request.headers.get("If-None-Match", ""):
            return web.Response(status=304, headers=headers)
    headers["Content-Type"] = asset.content_type
    return web.Response(body=asset.body, headers=headers)


def _plain_errors(request: web.Request, headers: dict[str, str]) -> None:
    """Errors of the viewer's files are plain text with the viewer's headers."""

    def render(_request: web.Request, answer: ErrorAnswer) -> web.Response:
        return web.Response(status=answer.status, text=f"{answer.message}\n", headers=headers)

    request[ERROR_RENDERER] = render


def _unavailable(request: web.Request, state: ViewerState) -> ServiceUnavailable:
    _plain_errors(request, {"Referrer-Policy": "no-referrer"})
    return ServiceUnavailable(
        "The OHIF viewer is not installed on this server: run `make install` "
        f"(or `python -m viewer.fetch`).\n\n{state.problem}"
    )


def _serve(request: web.Request, mode: ViewerMode, tail: str) -> web.StreamResponse:
    state = request.app[VIEWER_STATE]
    tail = tail.lstrip("/")
    if mode is ViewerMode.STAFF and tail == SIGNED_OUT_ROUTE:
        headers = security_headers(SIGNED_OUT_CSP)
        headers["Cache-Control"] = "no-cache"
        return web.Response(
            body=state.signed_out, content_type="text/html", charset="utf-8", headers=headers
        )
    if state.bundle is None:
        raise _unavailable(request, state)
    if tail == "app-config.js":
        asset = Asset("text/javascript; charset=utf-8", "no-cache", state.configs[mode])
        return _respond(request, asset, state.bundle.csp)
    found = state.bundle.asset(tail) if tail else None
    if found is not None:
        return _respond(request, found, state.bundle.csp)
    if PurePosixPath(tail).suffix:  # a file name that is not there: no HTML in its place
        _plain_errors(request, security_headers(state.bundle.csp))
        raise NotFound("no such viewer file")
    return _respond(request, state.bundle.page(mode), state.bundle.csp)


async def staff_viewer(request: web.Request) -> web.StreamResponse:
    """The viewer for people who log in (OIDC), and OHIF's files."""
    return _serve(request, ViewerMode.STAFF, request.match_info.get("tail", ""))


async def share_viewer(request: web.Request) -> web.StreamResponse:
    """The viewer for share-link visitors: its token comes from the share page."""
    return _serve(request, ViewerMode.SHARE, request.match_info.get("tail", ""))


def add_viewer_routes(app: web.Application) -> None:
    """The viewer's routes (more specific first: aiohttp matches in order)."""
    app.router.add_get(MOUNT + "/share", share_viewer)
    app.router.add_get(MOUNT + "/share/{tail:.*}", share_viewer)
    app.router.add_get(MOUNT, staff_viewer)
    app.router.add_get(MOUNT + "/{tail:.*}", staff_viewer)
