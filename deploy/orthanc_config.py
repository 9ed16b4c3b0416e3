"""Generate Orthanc's JSON configuration from the archive's settings."""

from __future__ import annotations

import json
import site
from pathlib import Path
from typing import Any

from archive.catalog import Institution
from archive.credentials import OrthancCredentials
from archive.dimse import modality_entry
from archive.settings import Settings

__all__ = ["orthanc_config", "write_orthanc_config"]

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ENTRY_SCRIPT = PROJECT_ROOT / "archive" / "orthanc_entry.py"


def _python_paths() -> tuple[list[str], list[str]]:
    site_packages = [p for p in site.getsitepackages() if Path(p).is_dir()]
    return site_packages, [str(PROJECT_ROOT)]


def orthanc_config(
    settings: Settings, creds: OrthancCredentials, institutions: list[Institution]
) -> dict[str, Any]:
    """The configuration document for the archive's Orthanc process."""
    orthanc_dir = settings.home / "orthanc"
    plugins = settings.orthanc_plugin_dir
    modalities: dict[str, Any] = {}
    for inst in institutions:
        for ae, host, port in inst.ae_titles:
            modalities[ae] = modality_entry(ae, host, port, settings.dicom_allow_get)
    site_packages, python_path = _python_paths()
    return {
        "Name": f"VNA {settings.dicom_aet}",
        "StorageDirectory": str(orthanc_dir / "storage"),
        "IndexDirectory": str(orthanc_dir / "index"),
        "TemporaryDirectory": str(orthanc_dir / "tmp"),
        "StorageCompression": False,
        # the archive names and verifies every part with a keyed hash and AES-GCM; Orthanc's
        # MD5 of each attachment would be a second full pass on the C-STORE path
        "StoreMD5ForAttachments": False,
        "MaximumStorageSize": 0,
        # Orthanc's own read cache would serve bytes without the archive verifying them
        "MaximumStorageCacheSize": settings.orthanc_storage_cache_mb,
        "HttpPort": settings.orthanc_http_port,
        "HttpServerEnabled": True,
        # refuse non-loopback clients (every version) and bind to loopback (Orthanc >= 1.12.10
        # understands HttpBindAddresses; older versions ignore it)
        "RemoteAccessAllowed": False,
        "HttpBindAddresses": ["127.0.0.1"],
        "AuthenticationEnabled": True,
        "RegisteredUsers": {creds.username: creds.password},
        "HttpCompressionEnabled": False,
        "KeepAlive": True,
        "DicomServerEnabled": True,
        "DicomAet": settings.dicom_aet,
        "DicomPort": settings.dicom_port,
        "DicomCheckCalledAet": False,
        "DicomThreadsCount": settings.dicom_threads,
        # C-STORE admission is decided by the archive's filter (institution AEs)
        "DicomAlwaysAllowStore": True,
        "DicomAlwaysAllowEcho": True,
        # C-FIND and C-MOVE: only registered AEs, answered by the archive (archive/dimse.py);
        # C-GET per modality "AllowGet" (setting dicom_allow_get)
        "DicomAlwaysAllowFind": False,
        "DicomAlwaysAllowGet": False,
        "DicomAlwaysAllowMove": False,
        "DicomModalities": modalities,
        "DicomModalitiesInDatabase": False,
        "OverwriteInstances": False,
        "StableAge": 60,
        "SaveJobs": False,
        "Plugins": [str(plugins / "libOrthancPython.so"), str(plugins / "libOrthancDicomWeb.so")],
        "PythonScript": str(ENTRY_SCRIPT),
        "PythonVerbose": False,
        "DicomWeb": {
            "Enable": True,
            "Root": "/dicom-web/",
            "EnableWado": True,
            "WadoRoot": "/wado",
            "Ssl": False,
            "StudiesMetadata": "Full",
            "SeriesMetadata": "Full",
        },
        "VNA": {
            "Home": str(settings.home),
            "SitePackages": site_packages,
            "PythonPath": python_path,
        },
    }


def write_orthanc_config(
    settings: Settings, creds: OrthancCredentials, institutions: list[Institution]
) -> Path:
    """Write ``<home>/run/orthanc.json`` (0600: it holds the generated password)."""
    run = settings.run_dir
    run.mkdir(parents=True, exist_ok=True, mode=0o700)
    for sub in ("storage", "index", "tmp"):
        (settings.home / "orthanc" / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
    path = run / "orthanc.json"
    tmp = run / "orthanc.json.tmp"
    tmp.touch(mode=0o600)
    tmp.write_text(json.dumps(orthanc_config(settings, creds, institutions), indent=2))
    tmp.replace(path)
    return path
