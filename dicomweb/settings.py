"""The gateway's section of the settings: ``[gateway]`` in ``<home>/vna.toml``.

Part of the root model every entry point loads (``compose/settings.py``); pydantic
validates it, as it comes from the operator's file and environment.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, IPvAnyNetwork, model_validator

from archive.api import ArchiveSettings

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
        None, description="Base URL clients use; the embedded issuer's `iss` [https://HOST:PORT]"
    )
    audience: str | None = Field(None, description="`aud` of access tokens [PUBLIC_URL/dicom-web]")
    cors_origins: tuple[str, ...] = ("*",)
    qido_max_results: int = Field(1000, ge=1, le=100_000)
    token_leeway_seconds: int = Field(30, ge=0, le=300)
    external_issuers: tuple[ExternalIssuer, ...] = ()
    # largest request body (STOW-RS, token and form posts) the gateway reads
    max_request_mb: int = Field(2048, ge=1)
    # people logging in to the embedded issuer (authorization code + PKCE)
    login_max_failures: int = Field(5, ge=1, le=100)  # wrong passwords in a row that lock
    login_lockout_seconds: int = Field(900, ge=1)
    refresh_token_seconds: int = Field(8 * 3600, ge=60)  # each rotation starts a new one
    session_max_seconds: int = Field(12 * 3600, ge=60)  # no refresh beyond this after login
    # share links (patients, referring doctors)
    share_token_minutes: int = Field(60, ge=1, le=24 * 60)  # life of a link's viewer token
    share_pin_attempts: int = Field(5, ge=1, le=100)  # wrong PINs that lock a link
    share_default_expiry: str = "7d"
    # failed link openings (unknown id, wrong secret or PIN) an address may make per
    # 10 minutes before it is answered 429
    share_open_failures_per_address: int = Field(20, ge=1)
    # wrong client secrets at the token endpoint an address may send per 10 minutes
    # before it is answered 429 (counted in the catalog, across gateway workers)
    client_secret_failures_per_address: int = Field(20, ge=1)
    # staff sign in to the viewer at an external OIDC provider instead of the embedded
    # issuer (its tokens must be trusted through external_issuers); both or neither
    viewer_oidc_authority: str | None = None
    viewer_oidc_client_id: str | None = None
    viewer_dir: Path | None = Field(
        None, description="unpacked OHIF dist/ served at /viewer [viewer/ohif/dist]"
    )
    # WADO-RS read path (dicomweb/wado/instance_reader.py, dicomweb/wado/metacache.py):
    # plaintexts that passed verification and DICOM JSON per header blob, both keyed by
    # content (never stale); 0 turns a cache off. The blob cache is off by default, like Orthanc's
    # storage cache in the archive: every instance sent is read and verified again.
    blob_cache_mb: int = Field(0, ge=0)
    metadata_cache_mb: int = Field(64, ge=0)
    read_threads: int = Field(2, ge=1, le=64)  # decrypt/decompress/verify workers
    # WADO-RS to a client that sends "Accept-Encoding: zstd" (browsers, urllib3 with zstd):
    # stored parts go out as the zstd frames the archive keeps, checked by AES-GCM but not
    # decompressed and re-hashed here, about a quarter of the bytes for CT. False: every
    # byte sent is decompressed and verified against its keyed hash first
    zstd_transfer: bool = True
    read_ahead_mb: int = Field(4, ge=1)  # per retrieval, read ahead of the socket
    # processes serving the gateway's port together (gunicorn; compose/gateway_workers.py):
    # 0 = min(usable CPUs, 4); 1 = one process, as before
    workers: int = Field(0, ge=0, le=64)
    # HTTPS (docs/security.md): with neither file set, a self-signed pair made under keys/
    # (`vna up` prints its SHA-256 fingerprint); false serves plain HTTP, only for a
    # reverse proxy on the same host that terminates TLS (and for the test suite)
    tls: bool = True
    tls_cert_file: Path | None = None  # PEM, the chain after the certificate
    tls_key_file: Path | None = None
    # peers whose Forwarded / X-Forwarded-For/-Proto/-Host headers are believed (addresses
    # or networks, e.g. "127.0.0.1" or "10.0.8.0/24"): the client address of audit records
    # and throttles; from anyone else those headers are ignored
    trusted_proxies: tuple[IPvAnyNetwork, ...] = ()

    @model_validator(mode="after")
    def _tls_pair(self) -> GatewaySettings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError(
                "set both gateway.tls_cert_file and gateway.tls_key_file, or neither "
                "(a self-signed pair under keys/)"
            )
        return self

    @model_validator(mode="after")
    def _viewer_sign_in_pair(self) -> GatewaySettings:
        if (self.viewer_oidc_authority is None) != (self.viewer_oidc_client_id is None):
            raise ValueError(
                "set both gateway.viewer_oidc_authority and gateway.viewer_oidc_client_id "
                "(an external sign-in for the viewer), or neither (the embedded issuer)"
            )
        return self

    def resolved_public_url(self, settings: ArchiveSettings) -> str:
        scheme = "https" if self.tls else "http"
        return (self.public_url or f"{scheme}://{settings.http_host}:{settings.http_port}").rstrip(
            "/"
        )

    def resolved_audience(self, settings: ArchiveSettings) -> str:
        return self.audience or f"{self.resolved_public_url(settings)}/dicom-web"
