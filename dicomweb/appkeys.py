"""The gateway's typed state: every ``web.AppKey``, and the request id's ``web.RequestKey``
(set by the metrics middleware, read by the audit records; the error middleware's own
request keys, ``STREAMING`` and ``ERROR_RENDERER``, stay beside it).

``dicomweb.app`` fills the keys in ``create_app`` and the ``cleanup_ctx`` generators of
the rooms (the issuer's registries, the viewer's bundle, the share links); handlers read
them from here, so no handler module imports another room for its state.

The modules that define most of these types read their own keys from here, so the types
are imported for the type checker only: no import cycle, and an ``AppKey`` needs its type
only to print it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from archive.api import BlobStore, Catalog
    from dicomweb.exchange.share import ShareService
    from dicomweb.http.orthanc import OrthancClient
    from dicomweb.operations.metrics import GatewayMetrics
    from dicomweb.qido.worklist import OpenedStudies
    from dicomweb.stow.store import StowLimits
    from dicomweb.viewer.routes import ViewerState
    from dicomweb.wado.instance_reader import ContentCache, InstanceReader
    from security.api import AuditLog, FailureThrottle
    from security.identity import (
        AuthorizationStore,
        ClientRegistry,
        EmbeddedIssuer,
        TokenValidator,
        UserRegistry,
    )
    from sharing.api import Grants

__all__ = [
    "AUDIT_LOG",
    "AUTHORIZATION_FLOW",
    "BLOB_STORE",
    "CATALOG",
    "CLIENT_SECRET_FAILURES",
    "EMBEDDED_ISSUER",
    "GATEWAY_VIEW",
    "GRANTS",
    "INSTANCE_READER",
    "METADATA_CACHE",
    "METRICS",
    "OAUTH_CLIENTS",
    "OPENED_STUDIES",
    "ORTHANC_CLIENT",
    "OWN_TOKEN_VALIDATOR",
    "REQUEST_ID",
    "SHARE_LINKS",
    "STOW_LIMITS",
    "TOKEN_VALIDATOR",
    "USERS",
    "VIEWER_STATE",
    "GatewayView",
]


@dataclass(frozen=True, slots=True)
class GatewayView:
    """Resolved public identity of the gateway."""

    public_url: str
    audience: str
    qido_max_results: int
    zstd_transfer: bool = True  # gateway.zstd_transfer

    @property
    def dicomweb_root(self) -> str:
        return f"{self.public_url}/dicom-web"


# -- the archive and Orthanc -----------------------------------------------------------------

BLOB_STORE: web.AppKey[BlobStore] = web.AppKey("blob_store")
"""Reads of stored parts (frames, bulk data, headers); its catalog is :data:`CATALOG`."""
CATALOG: web.AppKey[Catalog] = web.AppKey("catalog")
"""The catalog the queries, grants, share links and the issuer's registries run on."""
ORTHANC_CLIENT: web.AppKey[OrthancClient] = web.AppKey("orthanc_client")
INSTANCE_READER: web.AppKey[InstanceReader] = web.AppKey("instance_reader")
METADATA_CACHE: web.AppKey[ContentCache] = web.AppKey("metadata_cache")
STOW_LIMITS: web.AppKey[StowLimits] = web.AppKey("stow_limits")
OPENED_STUDIES: web.AppKey[OpenedStudies] = web.AppKey("opened_studies")
"""Granted studies this process already marked opened on the reading worklist."""

# -- who asks: tokens, the embedded issuer and sign-in ----------------------------------------

GATEWAY_VIEW: web.AppKey[GatewayView] = web.AppKey("gateway_view")
TOKEN_VALIDATOR: web.AppKey[TokenValidator] = web.AppKey("token_validator")
EMBEDDED_ISSUER: web.AppKey[EmbeddedIssuer] = web.AppKey("embedded_issuer")
OWN_TOKEN_VALIDATOR: web.AppKey[TokenValidator] = web.AppKey("own_token_validator")
"""Validates only the embedded issuer's own access tokens (userinfo)."""
OAUTH_CLIENTS: web.AppKey[ClientRegistry] = web.AppKey("oauth_clients")
USERS: web.AppKey[UserRegistry] = web.AppKey("users")
AUTHORIZATION_FLOW: web.AppKey[AuthorizationStore] = web.AppKey("authorization_flow")
"""Login forms, one-time codes and refresh tokens of the authorization code flow."""
CLIENT_SECRET_FAILURES: web.AppKey[FailureThrottle] = web.AppKey("client_secret_failures")
"""Wrong client secrets per address (in the catalog: every gateway worker counts them)."""

# -- exchange, viewer, operations --------------------------------------------------------------

GRANTS: web.AppKey[Grants] = web.AppKey("grants")
SHARE_LINKS: web.AppKey[ShareService] = web.AppKey("share_links")
VIEWER_STATE: web.AppKey[ViewerState] = web.AppKey("viewer_state")
METRICS: web.AppKey[GatewayMetrics] = web.AppKey("metrics")
AUDIT_LOG: web.AppKey[AuditLog] = web.AppKey("audit_log")

REQUEST_ID: web.RequestKey[str] = web.RequestKey("vna_request_id", str)
"""The request id the metrics middleware gives each request (audit records carry it)."""
