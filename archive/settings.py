"""The archive's section of the settings: the top-level keys of ``<home>/vna.toml``.

The root model that every entry point loads (``compose/settings.py``) is this section plus
the other packages' (``[gateway]``, ``dicomweb/settings.py``); the archive only ever sees
:class:`ArchiveSettings`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "ArchiveSettings",
    "DicomCharset",
    "DicomSecurity",
    "InstitutionConfig",
    "StorageSettings",
]


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


class ArchiveSettings(BaseModel):
    """The archive's settings (Orthanc, DICOM, storage, catalog, institutions, the home's
    layout), at the top level of ``vna.toml``; the root model adds the other sections."""

    model_config = ConfigDict(extra="forbid")

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
    # forward every audit record as RFC 5424 syslog (udp://HOST:PORT or tcp://HOST:PORT)
    audit_syslog: str | None = None

    @field_validator("dicom_aet")
    @classmethod
    def _aet(cls, value: str) -> str:
        if not 0 < len(value) <= 16:
            raise ValueError("an AE title has 1 to 16 characters")
        return value

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
