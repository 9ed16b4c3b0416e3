"""Gateway settings: what the root settings model does not hold yet.

``archive.settings.Settings`` forbids unknown keys and is owned by the archive; until it
grows a ``gateway`` section these come from the command line (``python -m dicomweb``)
and default from the root settings (``http_host``, ``http_port``).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from archive.api import Settings

__all__ = ["ExternalIssuer", "GatewaySettings"]


class ExternalIssuer(BaseModel):
    """An external OIDC provider whose access tokens the gateway accepts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    issuer: str
    jwks_uri: str
    audience: str | None = None
    institution_claim: str = "institution"
    require_at_jwt: bool = True


class GatewaySettings(BaseModel):
    """Public face of the gateway (untrusted input: validated by pydantic)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    public_url: str | None = Field(
        None, description="Base URL clients use; the embedded issuer's `iss` [http://HOST:PORT]"
    )
    audience: str | None = Field(None, description="`aud` of access tokens [PUBLIC_URL/dicom-web]")
    cors_origins: tuple[str, ...] = ("*",)
    qido_max_results: int = Field(1000, ge=1, le=100_000)
    token_leeway_seconds: int = Field(30, ge=0, le=300)
    external_issuers: tuple[ExternalIssuer, ...] = ()

    def resolved_public_url(self, settings: Settings) -> str:
        return (self.public_url or f"http://{settings.http_host}:{settings.http_port}").rstrip("/")

    def resolved_audience(self, settings: Settings) -> str:
        return self.audience or f"{self.resolved_public_url(settings)}/dicom-web"
