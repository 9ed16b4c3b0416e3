"""One typed settings object for every entry point: ``<home>/vna.toml`` plus ``VNA_*``.

Precedence, highest first: explicit arguments, environment (``VNA_DICOM_PORT``,
``VNA_STORAGE__ZSTD_LEVEL`` for nested fields), the TOML file, the embedded defaults.
"""

from __future__ import annotations

import os
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    IPvAnyNetwork,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

__all__ = [
    "DicomCharset",
    "DicomSecurity",
    "ExternalIssuer",
    "GatewaySettings",
    "InstitutionConfig",
    "Settings",
    "StorageSettings",
    "load_settings",
]

# the TOML file of the settings being built; a context variable keeps load_settings reentrant
_toml_file: ContextVar[Path | None] = ContextVar("vna_toml_file", default=None)


class StorageSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # the keyed hash that names blobs in a new home (an existing home keeps its own,
    # recorded in keys/mac-algorithm): BLAKE3, or BLAKE2b-256 as homes made before it
    blob_mac: Literal["blake3", "blake2b"] = "blake3"
    # level 1: ~4x on CT at twice the speed of level 3 (bench/RESULTS.md)
    zstd_level: int = Field(1, ge=1, le=22)
    fsync: bool = True
    # compressed output must save at least this fraction, else the part is stored raw
    min_compression_gain: float = Field(0.03, ge=0.0, lt=1.0)
    gc_grace_seconds: int = Field(3600, ge=0)
    # sealed payloads up to this size live in the catalog row instead of a file
    inline_max_bytes: int = Field(4096, ge=0, le=65536)
    # FULL: every catalog commit waits for the disk (survives power loss at ~1 fsync per
    # attachment); NORMAL (WAL): survives any process crash, and on power loss may lose
    # the last commits, which recovery reconciles with Orthanc's index (whose own commits
    # are not synced either)
    durable_catalog: bool = False
    # acknowledge a DICOM file once it is journaled (encrypted, on disk) and split,
    # deduplicate and compress it on a background thread. Off by default: on a 2-core
    # machine the background work competes with Orthanc and ingest is slower (bench/);
    # meant for machines with cores to spare, where it shortens each C-STORE
    write_behind: bool = False
    write_behind_min_bytes: int = Field(65536, ge=0)
    # a lone store (one association) uses a second core for its pixel data: half of the
    # compression (BLAKE3 homes) or the hash (BLAKE2b homes); archive/blobstore.py
    # _name_parts
    overlap_hash_and_compress: bool = True


class InstitutionConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    ae_titles: list[str] = Field(default_factory=list)
    host: str | None = None
    port: int | None = None


DicomCharset = Literal[
    "ISO_IR 192",
    "ISO_IR 100",
    "ISO_IR 101",
    "ISO_IR 109",
    "ISO_IR 110",
    "ISO_IR 148",
    "ISO_IR 144",
    "ISO_IR 126",
    "ISO_IR 127",
    "ISO_IR 138",
    "ISO_IR 166",
    "GB18030",
]
"""Specific Character Set terms (PS3.3 C.12.1.1.2) the archive can answer C-FIND in: those
Orthanc converts to without code extensions."""


class DicomSecurity(BaseModel):
    """Who may speak DICOM to the archive (docs/dimse-security.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # every association's peer address must equal its AE's registered host (resolved to an
    # address); an AE registered without a host is then refused on every service
    check_host: bool = True
    # the called AE title must be the archive's (dicom_aet)
    check_called_aet: bool = True
    # DICOM TLS (PS3.15 B.1) on the whole DICOM port: peers need a client certificate the
    # archive issued (`vna institution add NAME --tls`, `vna institution cert NAME`)
    tls: bool = False


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
    # WADO-RS read path (dicomweb/blobcache.py, dicomweb/metacache.py): plaintexts that
    # passed verification and DICOM JSON per header blob, both keyed by content (never
    # stale); 0 turns a cache off. The blob cache is off by default, like Orthanc's
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
    # processes serving the gateway's port together (SO_REUSEPORT; dicomweb/workers.py):
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

    def resolved_public_url(self, settings: Settings) -> str:
        scheme = "https" if self.tls else "http"
        return (self.public_url or f"{scheme}://{settings.http_host}:{settings.http_port}").rstrip(
            "/"
        )

    def resolved_audience(self, settings: Settings) -> str:
        return self.audience or f"{self.resolved_public_url(settings)}/dicom-web"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="VNA_", env_nested_delimiter="__", extra="forbid", toml_file=None
    )

    home: Path = Path("var")
    dicom_aet: str = "VNA"
    dicom_port: int = 4242
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    orthanc_http_port: int = 8042
    catalog_url: str | None = None
    orthanc_executable: str = "Orthanc"
    orthanc_plugin_dir: Path = Path("/usr/share/orthanc/plugins")
    dicom_threads: int = 4
    # C-GET cannot be limited per institution on Orthanc 1.10 (plugins get no C-GET hook),
    # so it is off: registered AEs retrieve with C-MOVE or WADO-RS, which the archive
    # limits to what their institution may see. True lets every registered AE C-GET any
    # stored instance.
    dicom_allow_get: bool = False
    # the character set of every C-FIND answer (Orthanc converts each answer to one for the
    # whole process): UTF-8 carries every name; a single-byte set, for workstations that
    # cannot read ISO_IR 192, drops the characters it lacks
    dicom_answer_charset: DicomCharset = "ISO_IR 192"
    dicom: DicomSecurity = DicomSecurity()
    # 0: every read is verified by the archive; raise it to trade that for speed
    orthanc_storage_cache_mb: int = Field(0, ge=0)
    log_level: str = "info"
    storage: StorageSettings = StorageSettings()
    institutions: list[InstitutionConfig] = Field(default_factory=list)
    gateway: GatewaySettings = GatewaySettings()
    # forward every audit record as RFC 5424 syslog (udp://HOST:PORT or tcp://HOST:PORT)
    audit_syslog: str | None = None

    @field_validator("dicom_aet")
    @classmethod
    def _aet(cls, value: str) -> str:
        if not 0 < len(value) <= 16:
            raise ValueError("an AE title has 1 to 16 characters")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = _toml_file.get()
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml))
        return tuple(sources)

    @property
    def resolved_catalog_url(self) -> str:
        return self.catalog_url or f"sqlite:///{self.home / 'catalog.db'}"

    @property
    def keys_dir(self) -> Path:
        return self.home / "keys"

    @property
    def blob_dir(self) -> Path:
        return self.home / "blobs"

    @property
    def run_dir(self) -> Path:
        return self.home / "run"


def load_settings(home: Path | str | None = None, **overrides: Any) -> Settings:
    """Load settings for the archive home ``home`` (else ``VNA_HOME``, else ``./var``)."""
    resolved = Path(home or os.environ.get("VNA_HOME") or "var").absolute()
    toml = Path(os.environ.get("VNA_CONFIG") or resolved / "vna.toml")
    token = _toml_file.set(toml if toml.exists() else None)
    try:
        return Settings(home=resolved, **overrides)
    finally:
        _toml_file.reset(token)
