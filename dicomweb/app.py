"""The DICOMweb gateway application (aiohttp): QIDO-RS and WADO-RS with bearer tokens.

Routes (PS3.18 names)::

    GET /dicom-web/studies                                      search_for_studies
    GET /worklist/dicom-web/studies (+ series, instances)       search_worklist (worklist.py)
    GET /dicom-web/series, /studies/{study}/series              search_for_series
    GET /dicom-web/instances, /studies/{study}/instances,
        /studies/{study}/series/{series}/instances              search_for_instances
    GET /dicom-web/studies/{study}                              retrieve_study
    GET /dicom-web/studies/{study}/series/{series}              retrieve_series
    GET /dicom-web/studies/{study}/series/{series}/instances/{instance}
                                                                retrieve_instance
    GET .../instances/{instance}/frames/{frames}                 retrieve_frames
    GET .../instances/{instance}/bulkdata/{path}                 retrieve_bulkdata
    GET .../instances/{instance}[/frames/{frame}]/rendered       retrieve_*_rendered
    GET /studies/{study}[/series/{series}[/instances/{instance}[/frames/{frame}]]]/thumbnail
                                                                retrieve_*_thumbnail
    GET /wado?requestType=WADO&...                              wado_uri (PS3.18 9)
    POST /dicom-web/studies, /studies/{study}                   store_instances
    GET|POST /api/grants, DELETE /api/grants/{id}               grants (dicomweb/exchange/grants.py)
    GET /.well-known/jwks.json                                  the embedded issuer's keys
    GET /.well-known/openid-configuration                       OIDC discovery
    GET|POST /oauth/authorize                                   login page (code + PKCE)
    POST /oauth/token, /oauth/revoke; /oauth/userinfo; GET /oauth/logout
    GET /metrics                                                Prometheus
    GET /healthz                                                liveness
    GET /viewer/...                                             OHIF (viewer/routes.py)

Every DICOMweb route needs a token with ``dicom.read`` (STOW-RS: ``dicom.write``); what it
sees is limited to the studies of the token's institution (``sharing.api``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from archive.api import ArchiveSettings, open_store
from dicomweb.appkeys import (
    AUDIT_LOG,
    BLOB_STORE,
    CATALOG,
    EMBEDDED_ISSUER,
    GATEWAY_VIEW,
    GRANTS,
    INSTANCE_READER,
    METADATA_CACHE,
    METRICS,
    OAUTH_CLIENTS,
    OPENED_STUDIES,
    ORTHANC_CLIENT,
    STOW_LIMITS,
    TOKEN_VALIDATOR,
    GatewayView,
)
from dicomweb.exchange.grants import add_grant, list_grants, revoke_grant
from dicomweb.exchange.share import add_share_routes, share_context
from dicomweb.http.auth import authorize
from dicomweb.http.dicomxml import DICOM_JSON, dataset_response, negotiate_dataset_media
from dicomweb.http.middleware import (
    cors,
    error_middleware,
    metrics_middleware,
    nosniff,
    qido_response,
)
from dicomweb.http.orthanc import OrthancClient
from dicomweb.http.transport import forwarded_middleware
from dicomweb.operations.audit_endpoint import read_audit_log
from dicomweb.operations.audit_records import EventAction, EventOutcome, EventType, audit
from dicomweb.operations.delete import delete_series, delete_study
from dicomweb.operations.metrics import GatewayMetrics
from dicomweb.qido.includefield import add_header_fields, needs_headers
from dicomweb.qido.worklist import (
    OPENING,
    OpenedStudies,
    add_worklist_routes,
    note_opened,
    worklist_response,
)
from dicomweb.settings import GatewaySettings
from dicomweb.signin.login import authorize_form, authorize_login
from dicomweb.signin.oauth import (
    end_session,
    issuer_context,
    openid_configuration,
    revoke,
    token,
    userinfo,
)
from dicomweb.stow.store import StowLimits, store_instances_response
from dicomweb.viewer.routes import add_viewer_routes, viewer_ctx
from dicomweb.wado.frames import PIXEL_DATA_PATH, send_bulk_value, send_frames, send_pixel_data
from dicomweb.wado.instance_reader import ContentCache, InstanceReader
from dicomweb.wado.metacache import metadata_body
from dicomweb.wado.pixels import parse_frame_list
from dicomweb.wado.rendered import (
    THUMBNAIL_VIEWPORT,
    negotiate_image,
    negotiate_rendered_many,
    rendered_params,
    representative,
    send_rendered,
    send_rendered_first,
    send_rendered_many,
)
from dicomweb.wado.retrieve import accepts_zstd, negotiate_dicom, stream_instances
from dicomweb.wado.uri import dicom_target, parse_wado_uri, send_converted_file, send_dicom_file
from query.api import Level, StoredInstance, instances_to_retrieve, parse_query, search
from security.api import AuditLog, InvalidInput, NotFound
from security.identity import (
    ClientRegistry,
    EmbeddedIssuer,
    RemoteJwks,
    TokenValidator,
    TrustedIssuer,
)
from sharing.api import Grants
from viewer.api import StaffSignIn

__all__ = ["create_app"]

logger = logging.getLogger(__name__)

READ = "dicom.read"
FORM_BODY_LIMIT = 1024 * 1024
WRITE = "dicom.write"


# -- QIDO-RS -------------------------------------------------------------------------------


async def _search(
    request: web.Request, level: Level, study: str | None, series: str | None
) -> web.Response:
    media = negotiate_dataset_media(request.headers.get("Accept"), "QIDO-RS")
    principal = await authorize(request, request.app[TOKEN_VALIDATOR], READ)
    view = request.app[GATEWAY_VIEW]
    query = parse_query(
        request.query.items(),
        level,
        study_uid=study,
        series_uid=series,
        max_results=view.qido_max_results,
    )
    catalog = request.app[CATALOG]
    results = await asyncio.to_thread(
        search, catalog, query, principal.institution, view.dicomweb_root
    )
    if results and needs_headers(query):
        results = await asyncio.to_thread(
            add_header_fields,
            request.app[BLOB_STORE],
            request.app[METADATA_CACHE],
            query,
            results,
            view.dicomweb_root,
        )
    await audit(
        request,
        event=EventType.QUERY,
        action=EventAction.EXECUTE,
        outcome=EventOutcome.SUCCESS,
        user=principal.subject,
        institution=principal.institution,
        study_uid=study,
        detail={"level": level.name.lower(), "results": str(len(results))},
    )
    return qido_response(results, query.ignored, media)


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


async def search_worklist(request: web.Request) -> web.Response:
    """The reading worklist as a QIDO-RS study search (dicomweb/qido/worklist.py)."""
    principal = await authorize(request, request.app[TOKEN_VALIDATOR], READ)
    view = request.app[GATEWAY_VIEW]
    catalog = request.app[CATALOG]
    return await worklist_response(
        request, principal, catalog, view.dicomweb_root, view.qido_max_results
    )


# -- WADO-RS -------------------------------------------------------------------------------


async def _reachable(
    request: web.Request,
    what: str,
    event: EventType,
    detail: str,
    uids: dict[str, str] | None = None,
) -> tuple[list[StoredInstance], Callable[[], Awaitable[None]]]:
    """Authorise, find the instances the token's institution reaches, and audit.

    Nothing reachable is a 404, whether the resource exists or not, and an audited refusal.
    Returns the instances and a coroutine function that records the success. ``uids``
    (study, series, instance) replace the path's when given (WADO-URI).
    """
    principal = await authorize(request, request.app[TOKEN_VALIDATOR], READ)
    info = request.match_info if uids is None else uids
    items = await asyncio.to_thread(
        instances_to_retrieve,
        request.app[CATALOG],
        principal.institution,
        info["study"],
        info.get("series"),
        info.get("instance"),
    )
    outcome = EventOutcome.SUCCESS if items else EventOutcome.MINOR_FAILURE
    note = {detail: str(len(items))} if items else {"refused": "not reachable"}

    async def record() -> None:
        await audit(
            request,
            event=event,
            action=EventAction.READ,
            outcome=outcome,
            user=principal.subject,
            institution=principal.institution,
            study_uid=info["study"],
            detail=note,
        )

    if not items:
        await record()
        raise NotFound(f"no such {what}")  # the same answer when it exists but is not reachable
    if detail in OPENING:  # a granted study leaves "new" on the reading worklist
        await note_opened(request, request.app[CATALOG], principal, info["study"])
    return items, record


async def _retrieve(request: web.Request, what: str) -> web.StreamResponse:
    accepted = negotiate_dicom(request.headers.get("Accept"))
    items, record = await _reachable(request, what, EventType.INSTANCES_TRANSFERRED, "instances")
    await record()
    zstd = request.app[GATEWAY_VIEW].zstd_transfer and accepts_zstd(
        request.headers.get("Accept-Encoding")
    )
    response, sent = await stream_instances(
        request,
        items,
        request.app[INSTANCE_READER],
        accepted,
        zstd=zstd,
        orthanc=request.app[ORTHANC_CLIENT],
    )
    request.app[METRICS].bytes_sent.inc(sent)
    return response


async def _retrieve_metadata(request: web.Request, what: str) -> web.Response:
    media = negotiate_dataset_media(request.headers.get("Accept"), "WADO-RS metadata")
    items, record = await _reachable(request, what, EventType.INSTANCES_ACCESSED, "metadata")
    root = request.app[GATEWAY_VIEW].dicomweb_root
    body = await asyncio.to_thread(
        metadata_body, request.app[BLOB_STORE], request.app[METADATA_CACHE], items, root
    )
    await record()
    if media != DICOM_JSON:
        # the XML is written from the very JSON the other answer sends (PS3.18 8.7.3)
        return await asyncio.to_thread(dataset_response, json.loads(body), media)
    return web.Response(body=body, content_type=DICOM_JSON)


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
    """WADO-RS study retrieval (PS3.18 10.4), streamed: as stored when the client accepts
    the stored transfer syntax, else converted (Explicit VR Little Endian by default)."""
    return await _retrieve(request, "study")


async def retrieve_series(request: web.Request) -> web.StreamResponse:
    """WADO-RS series retrieval."""
    return await _retrieve(request, "series")


async def retrieve_instance(request: web.Request) -> web.StreamResponse:
    """WADO-RS instance retrieval."""
    return await _retrieve(request, "instance")


# -- WADO-RS frames, bulk data, rendered, thumbnail; WADO-URI (dicomweb/wado/frames.py,
# rendered.py, wado_uri.py) ----------------------------------------------------------------


async def retrieve_frames(request: web.Request) -> web.StreamResponse:
    """WADO-RS frames (PS3.18 10.4.1.1.3): stored frames from the blobs, else via Orthanc."""
    items, record = await _reachable(request, "instance", EventType.INSTANCES_TRANSFERRED, "frames")
    numbers = parse_frame_list(request.match_info["frames"])
    response, sent = await send_frames(
        request,
        request.app[BLOB_STORE],
        request.app[ORTHANC_CLIENT],
        items[0],
        numbers,
        request.app[GATEWAY_VIEW].dicomweb_root,
    )
    await record()
    request.app[METRICS].bytes_sent.inc(sent)
    return response


async def retrieve_bulkdata(request: web.Request) -> web.StreamResponse:
    """WADO-RS bulk data (PS3.18 10.4.1.1.5), the URIs metadata hands out."""
    items, record = await _reachable(
        request, "instance", EventType.INSTANCES_TRANSFERRED, "bulkdata"
    )
    path = request.match_info["path"].upper()
    blobs, orthanc, root = (
        request.app[BLOB_STORE],
        request.app[ORTHANC_CLIENT],
        request.app[GATEWAY_VIEW].dicomweb_root,
    )
    if path == PIXEL_DATA_PATH:
        response, sent = await send_pixel_data(request, blobs, orthanc, items[0], root)
    else:
        response, sent = await send_bulk_value(request, blobs, items[0], path, root)
    await record()
    request.app[METRICS].bytes_sent.inc(sent)
    return response


async def _render(request: web.Request, what: str, thumbnail: bool) -> web.StreamResponse:
    media_type = negotiate_image(request.headers.get("Accept"))
    params = rendered_params(
        request.query, default_viewport=THUMBNAIL_VIEWPORT if thumbnail else None
    )
    items, record = await _reachable(request, what, EventType.INSTANCES_ACCESSED, "rendered")
    frame_text = request.match_info.get("frames")
    frame = None
    if frame_text is not None:
        frames = parse_frame_list(frame_text)
        if len(frames) != 1:
            raise InvalidInput("a rendered or thumbnail frame resource names one frame")
        frame = frames[0]
    item = items[0] if what in ("instance", "frame") else representative(items)
    response, _sent = await send_rendered(
        request,
        request.app[ORTHANC_CLIENT],
        item,
        frame=frame,
        media_type=media_type,
        params=params,
    )
    await record()
    return response


async def _render_many(request: web.Request, what: str) -> web.StreamResponse:
    media_type, multipart = negotiate_rendered_many(request.headers.get("Accept"))
    params = rendered_params(request.query, default_viewport=None)
    items, record = await _reachable(request, what, EventType.INSTANCES_ACCESSED, "rendered")
    send = send_rendered_many if multipart else send_rendered_first
    response, _sent = await send(
        request, request.app[ORTHANC_CLIENT], items, media_type=media_type, params=params
    )
    await record()
    return response


async def retrieve_study_rendered(request: web.Request) -> web.StreamResponse:
    """WADO-RS rendered study (PS3.18 10.4.1.1.4), by Orthanc: one image (the first
    renderable instance) for an image type, every instance for a multipart Accept."""
    return await _render_many(request, "study")


async def retrieve_series_rendered(request: web.Request) -> web.StreamResponse:
    """WADO-RS rendered series."""
    return await _render_many(request, "series")


async def retrieve_instance_rendered(request: web.Request) -> web.StreamResponse:
    """WADO-RS rendered instance (PS3.18 10.4.1.1.4), by Orthanc."""
    return await _render(request, "instance", thumbnail=False)


async def retrieve_frames_rendered(request: web.Request) -> web.StreamResponse:
    """WADO-RS rendered frame."""
    return await _render(request, "frame", thumbnail=False)


async def retrieve_study_thumbnail(request: web.Request) -> web.StreamResponse:
    """WADO-RS study thumbnail (PS3.18 10.4.1.1.6): a small rendering of one instance."""
    return await _render(request, "study", thumbnail=True)


async def retrieve_series_thumbnail(request: web.Request) -> web.StreamResponse:
    """WADO-RS series thumbnail."""
    return await _render(request, "series", thumbnail=True)


async def retrieve_instance_thumbnail(request: web.Request) -> web.StreamResponse:
    """WADO-RS instance thumbnail."""
    return await _render(request, "instance", thumbnail=True)


async def retrieve_frames_thumbnail(request: web.Request) -> web.StreamResponse:
    """WADO-RS frame thumbnail."""
    return await _render(request, "frame", thumbnail=True)


async def wado_uri(request: web.Request) -> web.StreamResponse:
    """WADO-URI (PS3.18 9): the stored file, or a JPEG/PNG rendered by Orthanc."""
    query = parse_wado_uri(request.query)
    uids = {"study": query.study_uid, "series": query.series_uid, "instance": query.object_uid}
    event = (
        EventType.INSTANCES_TRANSFERRED
        if query.content_type == "application/dicom"
        else EventType.INSTANCES_ACCESSED
    )
    items, record = await _reachable(request, "instance", event, "wado-uri", uids)
    item = items[0]
    orthanc = request.app[ORTHANC_CLIENT]
    if query.content_type != "application/dicom":
        response, sent = await send_rendered(
            request,
            orthanc,
            item,
            frame=query.frame,
            media_type=query.content_type,
            params=query.render,
        )
    elif (target := dicom_target(item, query.transfer_syntax)) is None:
        response, sent = await send_dicom_file(request, request.app[BLOB_STORE], item)
    else:
        response, sent = await send_converted_file(
            request, request.app[INSTANCE_READER], orthanc, item, target
        )
    await record()
    request.app[METRICS].bytes_sent.inc(sent)
    return response


# -- STOW-RS -------------------------------------------------------------------------------


async def store_instances(request: web.Request) -> web.Response:
    """STOW-RS (PS3.18 10.5): store the DICOM parts of a multipart/related body."""
    principal = await authorize(request, request.app[TOKEN_VALIDATOR], WRITE)
    return await store_instances_response(
        request,
        principal,
        request.app[CATALOG],
        request.app[ORTHANC_CLIENT],
        request.app[STOW_LIMITS],
        request.app[GATEWAY_VIEW].dicomweb_root,
    )


# -- operations ----------------------------------------------------------------------------


async def jwks(request: web.Request) -> web.Response:
    """The embedded issuer's public keys (RFC 7517), for other resource servers."""
    return web.json_response(request.app[EMBEDDED_ISSUER].jwks())


async def metrics(request: web.Request) -> web.Response:
    """Prometheus exposition (request counts and latency per route template; no data)."""
    body = request.app[METRICS].exposition()
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4"})


async def audit_log(request: web.Request) -> web.Response:
    """The audit log (scope ``audit.read``); reading it is audited."""
    return await read_audit_log(request, request.app[TOKEN_VALIDATOR])


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
    instance = series + "/instances/{instance}"
    app.router.add_get(instance + "/frames/{frames}", retrieve_frames)
    app.router.add_get(instance + "/bulkdata/{path:.+}", retrieve_bulkdata)
    app.router.add_get(study + "/rendered", retrieve_study_rendered)
    app.router.add_get(series + "/rendered", retrieve_series_rendered)
    app.router.add_get(instance + "/rendered", retrieve_instance_rendered)
    app.router.add_get(instance + "/frames/{frames}/rendered", retrieve_frames_rendered)
    app.router.add_get(study + "/thumbnail", retrieve_study_thumbnail)
    app.router.add_get(series + "/thumbnail", retrieve_series_thumbnail)
    app.router.add_get(instance + "/thumbnail", retrieve_instance_thumbnail)
    app.router.add_get(instance + "/frames/{frames}/thumbnail", retrieve_frames_thumbnail)
    app.router.add_get("/wado", wado_uri)
    app.router.add_delete(study, delete_study)
    app.router.add_delete(series, delete_series)
    app.router.add_post(root + "/studies", store_instances)
    app.router.add_post(study, store_instances)
    app.router.add_get("/api/grants", list_grants)
    app.router.add_post("/api/grants", add_grant)
    app.router.add_delete("/api/grants/{id}", revoke_grant)
    app.router.add_get("/.well-known/jwks.json", jwks)
    app.router.add_get("/.well-known/openid-configuration", openid_configuration)
    app.router.add_post("/oauth/token", token)
    app.router.add_get("/api/audit", audit_log)
    app.router.add_get("/oauth/authorize", authorize_form)
    app.router.add_post("/oauth/authorize", authorize_login)
    app.router.add_post("/oauth/revoke", revoke)
    app.router.add_get("/oauth/userinfo", userinfo)
    app.router.add_post("/oauth/userinfo", userinfo)
    app.router.add_get("/oauth/logout", end_session)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    add_viewer_routes(app)  # /viewer: OHIF (dicomweb/viewer/routes.py)
    add_share_routes(app)  # /share, /api/shares, study download (dicomweb/exchange/share.py)
    add_worklist_routes(app.router, search_worklist, search_for_series, search_for_instances)


def create_app(
    settings: ArchiveSettings,
    gateway: GatewaySettings,
    *,
    metrics: GatewayMetrics | None = None,
) -> web.Application:
    """Build the gateway for the archive home of ``settings``.

    The catalog and blob store open in a ``cleanup_ctx`` (on startup, closed on
    shutdown); the embedded issuer's signing key is created on first use. ``metrics``
    replaces the app's own registry (a worker process counts into the shared files,
    ``compose/gateway_workers.py``).
    """
    public_url = gateway.resolved_public_url(settings)
    view = GatewayView(
        public_url,
        gateway.resolved_audience(settings),
        gateway.qido_max_results,
        gateway.zstd_transfer,
    )
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
        # the client behind a trusted reverse proxy is known before any handler runs;
        # after metrics, whose request id the clone it makes then carries; the CORS
        # preflight inside the error middleware, which answers its refusal
        middlewares=[
            metrics_middleware,
            forwarded_middleware(gateway.trusted_proxies),
            error_middleware,
            preflight,
        ],
        # bodies read whole (forms, JSON): small; STOW-RS streams its body and counts it
        # against gateway.max_request_mb itself (aiohttp's limit does not cover streams)
        client_max_size=FORM_BODY_LIMIT,
    )
    app[GATEWAY_VIEW] = view
    app[EMBEDDED_ISSUER] = issuer
    app[TOKEN_VALIDATOR] = TokenValidator(trusted, leeway=gateway.token_leeway_seconds)
    app[METRICS] = metrics or GatewayMetrics()
    app[STOW_LIMITS] = StowLimits(gateway.max_request_mb * 1024 * 1024, settings.run_dir / "stow")
    app[OPENED_STUDIES] = OpenedStudies()
    app.on_response_prepare.append(add_cors_headers)
    app.on_response_prepare.append(nosniff)

    async def archive_ctx(app: web.Application) -> AsyncIterator[None]:
        store = await asyncio.to_thread(open_store, settings)
        app[BLOB_STORE] = store
        app[CATALOG] = store.catalog
        app[GRANTS] = Grants(store.catalog.engine)
        app[OAUTH_CLIENTS] = await asyncio.to_thread(ClientRegistry, store.catalog.engine)
        app[AUDIT_LOG] = await asyncio.to_thread(
            AuditLog.open, store.catalog.engine, settings.keys_dir, settings.audit_syslog
        )
        app[ORTHANC_CLIENT] = OrthancClient(settings)
        app[INSTANCE_READER] = InstanceReader(
            store,
            ContentCache(gateway.blob_cache_mb << 20),
            gateway.read_threads,
            gateway.read_ahead_mb << 20,
        )
        app[METADATA_CACHE] = ContentCache(gateway.metadata_cache_mb << 20)
        logger.info("gateway serving archive %s at %s", settings.home, view.dicomweb_root)
        yield
        await app[ORTHANC_CLIENT].close()
        await asyncio.to_thread(app[INSTANCE_READER].close)
        store.catalog.close()

    app.cleanup_ctx.append(archive_ctx)
    app.cleanup_ctx.append(issuer_context(gateway, lambda app: app[CATALOG].engine))
    sign_in = (
        StaffSignIn(gateway.viewer_oidc_authority, gateway.viewer_oidc_client_id)
        if gateway.viewer_oidc_authority and gateway.viewer_oidc_client_id
        else None
    )
    app.cleanup_ctx.append(viewer_ctx(public_url, gateway.viewer_dir, sign_in))
    app.cleanup_ctx.append(share_context(gateway))
    _routes(app)
    return app
