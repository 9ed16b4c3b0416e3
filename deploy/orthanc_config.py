"""Generate Orthanc's JSON configuration from the archive's settings."""

from __future__ import annotations

import json
import site
from pathlib import Path
from typing import Any

from archive.api import DicomCharset, Institution, OrthancCredentials, modality_entries
from compose.api import Settings
from security.api import TlsFiles

__all__ = ["orthanc_config", "write_orthanc_config"]

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ENTRY_SCRIPT = PROJECT_ROOT / "compose" / "orthanc_entry.py"


# Specific Character Set term -> Orthanc's name of the encoding
_ORTHANC_ENCODINGS: dict[DicomCharset, str] = {
    "ISO_IR 192": "Utf8",
    "ISO_IR 100": "Latin1",
    "ISO_IR 101": "Latin2",
    "ISO_IR 109": "Latin3",
    "ISO_IR 110": "Latin4",
    "ISO_IR 148": "Latin5",
    "ISO_IR 144": "Cyrillic",
    "ISO_IR 126": "Greek",
    "ISO_IR 127": "Arabic",
    "ISO_IR 138": "Hebrew",
    "ISO_IR 166": "Thai",
    "GB18030": "Chinese",
}


def _python_paths() -> tuple[list[str], list[str]]:
    site_packages = [p for p in site.getsitepackages() if Path(p).is_dir()]
    return site_packages, [str(PROJECT_ROOT)]


def _dicom_tls(tls: TlsFiles | None) -> dict[str, Any]:
    """DICOM TLS on the whole DICOM port: only peers with a certificate the archive's CA
    issued are admitted (docs/dimse-security.md)."""
    if tls is None:
        return {"DicomTlsEnabled": False}
    return {
        "DicomTlsEnabled": True,
        "DicomTlsCertificate": str(tls.certificate),
        "DicomTlsPrivateKey": str(tls.private_key),
        "DicomTlsTrustedCertificates": str(tls.ca),
        "DicomTlsRemoteCertificateRequired": True,
    }


def orthanc_config(
    settings: Settings,
    creds: OrthancCredentials,
    institutions: list[Institution],
    tls: TlsFiles | None = None,
) -> dict[str, Any]:
    """The configuration document for the archive's Orthanc process (``tls``: the server
    certificate when ``dicom.tls`` is on)."""
    orthanc_dir = settings.home / "orthanc"
    plugins = settings.orthanc_plugin_dir
    modalities = modality_entries(
        [ae for inst in institutions for ae in inst.ae_titles],
        allow_get=settings.dicom_allow_get,
        check_host=settings.dicom.check_host,
        tls=settings.dicom.tls,
    )
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
        "DicomCheckCalledAet": settings.dicom.check_called_aet,
        "DicomThreadsCount": settings.dicom_threads,
        # every request but C-ECHO comes from a listed AE (the catalog's, kept in step by the
        # plugin without a restart) and, with dicom.check_host, from its registered address;
        # then the archive's filter and handlers decide per institution. C-ECHO stays open:
        # it reveals only that the archive answers, and it lets Orthanc log each refused
        # request with AE and address, which the supervisor audits (deploy/dimse_refusals.py)
        "DicomCheckModalityHost": settings.dicom.check_host,
        "DicomAlwaysAllowStore": False,
        "DicomAlwaysAllowEcho": True,
        # AE titles compare exactly: with a case-insensitive match, "hospa" and "HOSPA"
        # would be two modalities for one AE, and Orthanc skips the address check then
        "StrictAetComparison": True,
        # C-FIND and C-MOVE: only registered AEs, answered by the archive (archive/scp.py, dimse/);
        # C-GET per modality "AllowGet" (setting dicom_allow_get)
        "DicomAlwaysAllowFind": False,
        "DicomAlwaysAllowGet": False,
        "DicomAlwaysAllowMove": False,
        "DicomModalities": modalities,
        "DicomModalitiesInDatabase": False,
        # Orthanc converts every C-FIND answer a plugin gives it into this encoding (1.10
        # and 1.12 alike), whatever the query or the answer's own Specific Character Set:
        # its default, Latin1, turned Greek, Cyrillic and CJK names into nothing. UTF-8
        # (ISO_IR 192), the archive's default, carries every name (PS3.4 C.4.1.1.3.2 lets
        # an SCP answer in another character set than the query's). It is also how Orthanc
        # reads a query without Specific Character Set, which PS3.5 limits to ASCII anyway.
        "DefaultEncoding": _ORTHANC_ENCODINGS[settings.dicom_answer_charset],
        **_dicom_tls(tls),
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
    settings: Settings,
    creds: OrthancCredentials,
    institutions: list[Institution],
    tls: TlsFiles | None = None,
) -> Path:
    """Write ``<home>/run/orthanc.json`` (0600: it holds the generated password)."""
    run = settings.run_dir
    run.mkdir(parents=True, exist_ok=True, mode=0o700)
    for sub in ("storage", "index", "tmp"):
        (settings.home / "orthanc" / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
    path = run / "orthanc.json"
    tmp = run / "orthanc.json.tmp"
    tmp.touch(mode=0o600)
    tmp.write_text(json.dumps(orthanc_config(settings, creds, institutions, tls), indent=2))
    tmp.replace(path)
    return path
