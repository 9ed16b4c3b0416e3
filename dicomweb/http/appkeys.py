"""The gateway's typed application state, importable by every handler module.

``dicomweb.app`` fills these in ``create_app`` and its ``cleanup_ctx``; feature modules
(grants, share links, STOW, ...) read them without importing ``dicomweb.app``.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from archive.api import BlobStore
from dicomweb.http.orthanc import OrthancClient
from security.tokens import TokenValidator

__all__ = ["BLOBS", "ORTHANC", "VALIDATOR", "VIEW", "GatewayView"]


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


BLOBS: web.AppKey[BlobStore] = web.AppKey("blobs", BlobStore)
ORTHANC: web.AppKey[OrthancClient] = web.AppKey("orthanc", OrthancClient)
VALIDATOR: web.AppKey[TokenValidator] = web.AppKey("validator", TokenValidator)
VIEW: web.AppKey[GatewayView] = web.AppKey("view", GatewayView)
