"""The DICOMweb gateway application (aiohttp): QIDO-RS and WADO-RS with bearer tokens.

Routes (PS3.18 names)::

    GET /dicom-web/studies                                      search_for_studies
    GET /dicom-web/series, /studies/{study}/series              search_for_series
    GET /dicom-web/instances, /studies/{study}/instances,
        /studies/{study}/series/{series}/instances              search_for_instances
    GET /dicom-web/studies/{study}                              retrieve_study
    GET /dicom-web/studies/{study}/series/{series}              retrieve_series
    GET /dicom-web/studies/{study}/series/{series}/instances/{instance}
                                                                retrieve_instance
    GET /.well-known/jwks.json                                  the embedded issuer's keys
    GET /metrics                                                Prometheus
    GET /healthz                                                liveness
    GET /viewer/...                                             OHIF (viewer_routes.py)

Every DICOMweb route needs a token with ``dicom.read``; what it sees is limited to the
studies of the token's institution (``sharing.api``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from archive.api import BlobStore, GatewaySettings, Settings, open_store
from dicomweb.attributes import Level
from dicomweb.auditing import AUDIT, audit
from dicomweb.auth import authorize
from dicomweb.metadata import metadata_of
from dicomweb.metrics import GatewayMetrics
from dicomweb.middleware import METRICS, cors, error_middleware, metrics_middleware
from dicomweb.oauth import CLIENTS, ISSUER, openid_configuration, token
from dicomweb.orthanc import OrthancClient
from dicomweb.query import parse_query
from dicomweb.search import StoredInstance, instances_to_retrieve, search
from dicomweb.viewer_routes import add_viewer_routes, viewer_ctx
from dicomweb.wado import negotiate_dicom, stream_instances
from security.audit import AuditLog
from security.clients import ClientRegistry
from security.errors import NotFound
from security.issuer import EmbeddedIssuer
from security.tokens import RemoteJwks, TokenValidator, TrustedIssuer

__all__ = ["BLOBS", "ISSUER", "ORTHANC", "VALIDATOR", "VIEW", "GatewayView", "create_app"]

logger = logging.getLogger(__name__)

READ = "dicom.read"


@dataclass(frozen=True, slots=True)
class GatewayView:
    """Resolved public identity of the gateway."""

    public_url: str
    audience: str
    qido_max_results: int

    @property
    def dicomweb_root(self) -> str:
        return f"{self.public_url}/dicom-web"


BLOBS: web.AppKey[BlobStore] = web.AppKey("blobs", BlobStore)
ORTHANC: web.AppKey[OrthancClient] = web.AppKey("orthanc", OrthancClient)
VALIDATOR: web.AppKey[TokenValidator] = web.AppKey("validator", TokenValidator)
VIEW: web.AppKey[GatewayView] = web.AppKey("view", GatewayView)


# -- QIDO-RS -------------------------------------------------------------------------------


async def _search(
    request: web.Request, level: Level, study: str | None, series: str | None
) -> web.Response:
    principal = await authorize(request, request.app[VALIDATOR], READ)
    view = request.app[VIEW]
    query = parse_query(
        request.query.items(),
        level,
        study_uid=study,
        series_uid=series,
        max_results=view.qido_max_results,
    )
    catalog = request.app[BLOBS].catalog
    results = await asyncio.to_thread(
        search, catalog, query, principal.institution, view.dicomweb_root
    )
    await audit(
        request,
        "query",
        "E",
        0,
        principal.subject,
        principal.institution,
        study,
        {"level": level.name.lower(), "results": str(len(results))},
    )
    response = web.json_response(results, content_type="application/dicom+json")
    if query.ignored:
        names = ", ".join(sorted(set(query.ignored)))
        response.headers["Warning"] = f'299 vna "not supported, ignored: {names}"'
    return response


async def search_for_studies(request: web.Request) -> web.Response:
    """QIDO-RS study search (PS3.18 10.6)."""
    return await _search(request, Level.STUDY, None, None)


async def search_for_series(request: web.Request) -> web.Response:
    """QIDO-RS series search, in one study or across studies."""
    return await _search(request, Level.SERIES, request.match_info.get("study"), None)


async def search_for_instances(request: web.Request) -> web.Response:
    """QIDO-RS instance search, in a series, a study, or everywhere."""
    info = request.match_info
    return await _search(request, Level.INSTANCE, info.get("study"), info.get("series"))


# -- WADO-RS -------------------------------------------------------------------------------


async def _reachable(
    request: web.Request, what: str, event: str, detail: str
) -> tuple[list[StoredInstance], Callable[[], Awaitable[None]]]:
    """Authorise, find the instances the token's institution reaches, and audit.

    Nothing reachable is a 404, whether the resource exists or not, and an audited refusal.
    Returns the instances and a coroutine function that records the success.
    """
    principal = await authorize(request, request.app[VALIDATOR], READ)
    info = request.match_info
    items = await asyncio.to_thread(
        instances_to_retrieve,
        request.app[BLOBS].catalog,
        principal.institution,
        info["study"],
        info.get("series"),
        info.get("instance"),
    )
    outcome = 0 if items else 4
    note = {detail: str(len(items))} if items else {"refused": "not reachable"}

    async def record() -> None:
        await audit(
            request,
            event,
            "R",
            outcome,
            principal.subject,
            principal.institution,
            info["study"],
            note,
        )

    if not items:
        await record()
        raise NotFound(f"no such {what}")  # the same answer when it exists but is not reachable
    return items, record


async def _retrieve(request: web.Request, what: str) -> web.StreamResponse:
    accepted = negotiate_dicom(request.headers.get("Accept"))
    items, record = await _reachable(request, what, "instances-transferred", "instances")
    await record()
    response, sent = await stream_instances(request, items, request.app[BLOBS], accepted)
    request.app[METRICS].bytes_sent.inc(sent)
    return response


async def _retrieve_metadata(request: web.Request, what: str) -> web.Response:
    items, record = await _reachable(request, what, "instances-accessed", "metadata")
    documents = await asyncio.to_thread(metadata_of, request.app[BLOBS], items)
    await record()
    return web.json_response(documents, content_type="application/dicom+json")


async def retrieve_study_metadata(request: web.Request) -> web.Response:
    """WADO-RS study metadata, from the header blobs."""
    return await _retrieve_metadata(request, "study")


async def retrieve_series_metadata(request: web.Request) -> web.Response:
    """WADO-RS series metadata."""
    return await _retrieve_metadata(request, "series")


async def retrieve_instance_metadata(request: web.Request) -> web.Response:
    """WADO-RS instance metadata."""
    return await _retrieve_metadata(request, "instance")


async def retrieve_study(request: web.Request) -> web.StreamResponse:
    """WADO-RS study retrieval (PS3.18 10.4), stored transfer syntax, streamed."""
    return await _retrieve(request, "study")


async def retrieve_series(request: web.Request) -> web.StreamResponse:
    """WADO-RS series retrieval."""
    return await _retrieve(request, "series")


async def retrieve_instance(request: web.Request) -> web.StreamResponse:
    """WADO-RS instance retrieval."""
    return await _retrieve(request, "instance")


# -- operations ----------------------------------------------------------------------------


async def jwks(request: web.Request) -> web.Response:
    """The embedded issuer's public keys (RFC 7517), for other resource servers."""
    return web.json_response(request.app[ISSUER].jwks())


async def metrics(request: web.Request) -> web.Response:
    """Prometheus exposition (request counts and latency per route template; no data)."""
    body = request.app[METRICS].exposition()
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4"})


async def healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def _routes(app: web.Application) -> None:
    root = "/dicom-web"
    study = root + "/studies/{study}"
    series = study + "/series/{series}"
    app.router.add_get(root + "/studies", search_for_studies)
    app.router.add_get(root + "/series", search_for_series)
    app.router.add_get(study + "/series", search_for_series)
    app.router.add_get(root + "/instances", search_for_instances)
    app.router.add_get(study + "/instances", search_for_instances)
    app.router.add_get(series + "/instances", search_for_instances)
    app.router.add_get(study + "/metadata", retrieve_study_metadata)
    app.router.add_get(series + "/metadata", retrieve_series_metadata)
    app.router.add_get(series + "/instances/{instance}/metadata", retrieve_instance_metadata)
    app.router.add_get(study, retrieve_study)
    app.router.add_get(series, retrieve_series)
    app.router.add_get(series + "/instances/{instance}", retrieve_instance)
    app.router.add_get("/.well-known/jwks.json", jwks)
    app.router.add_get("/.well-known/openid-configuration", openid_configuration)
    app.router.add_post("/oauth/token", token)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    add_viewer_routes(app)  # /viewer: OHIF (dicomweb/viewer_routes.py)


def create_app(settings: Settings, gateway: GatewaySettings | None = None) -> web.Application:
    """Build the gateway for the archive home of ``settings``.

    The catalog and blob store open in a ``cleanup_ctx`` (on startup, closed on
    shutdown); the embedded issuer's signing key is created on first use.
    """
    gateway = gateway or settings.gateway
    public_url = gateway.resolved_public_url(settings)
    view = GatewayView(public_url, gateway.resolved_audience(settings), gateway.qido_max_results)
    issuer = EmbeddedIssuer.open_or_create(settings.keys_dir, public_url, view.audience)
    trusted: list[TrustedIssuer] = [issuer.trusted()]
    for ext in gateway.external_issuers:
        trusted.append(
            TrustedIssuer(
                issuer=ext.issuer,
                jwks=RemoteJwks(ext.jwks_uri),
                audience=ext.audience or view.audience,
                institution_claim=ext.institution_claim,
                require_at_jwt=ext.require_at_jwt,
            )
        )
    preflight, add_cors_headers = cors(gateway.cors_origins)
    app = web.Application(
        middlewares=[preflight, metrics_middleware, error_middleware],
        client_max_size=gateway.max_request_mb * 1024 * 1024,
    )
    app[VIEW] = view
    app[ISSUER] = issuer
    app[VALIDATOR] = TokenValidator(trusted, leeway=gateway.token_leeway_seconds)
    app[METRICS] = GatewayMetrics()
    app.on_response_prepare.append(add_cors_headers)

    async def archive_ctx(app: web.Application) -> AsyncIterator[None]:
        store = await asyncio.to_thread(open_store, settings)
        app[BLOBS] = store
        app[CLIENTS] = await asyncio.to_thread(ClientRegistry, store.catalog.engine)
        app[AUDIT] = await asyncio.to_thread(AuditLog.open, store.catalog.engine, settings.keys_dir)
        app[ORTHANC] = OrthancClient(settings)
        logger.info("gateway serving archive %s at %s", settings.home, view.dicomweb_root)
        yield
        await app[ORTHANC].close()
        store.catalog.close()

    app.cleanup_ctx.append(archive_ctx)
    app.cleanup_ctx.append(viewer_ctx(public_url, gateway.viewer_dir))
    _routes(app)
    return app
