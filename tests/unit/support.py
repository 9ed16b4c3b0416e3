"""What several unit test modules share: a fake of the few parts of Orthanc's SDK the
plugin uses (and what Orthanc does with a C-STORE or a REST upload), a STOW-RS part, a
small OHIF build, and authorization codes for a PKCE verifier."""

from __future__ import annotations

import base64
import hashlib
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydicom

from archive.blobstore import CONTENT_DICOM
from archive.plugin import ArchivePlugin
from dicomweb.stow.store import ReceivedPart
from security.authorization import AuthorizationRequest, AuthorizationStore

# -- Orthanc -------------------------------------------------------------------------------


class FakeSdk:
    """The few parts of the `orthanc` module the plugin uses, recording what it is given."""

    class ChangeType:
        DELETED = 2
        NEW_INSTANCE = 5
        ORTHANC_STARTED = 11
        ORTHANC_STOPPED = 12

    class ResourceType:
        PATIENT = 0
        STUDY = 1
        SERIES = 2
        INSTANCE = 3

    def __init__(self) -> None:
        self.storage: tuple[Callable[..., Any], ...] | None = None
        self.cstore_filter: Callable[..., Any] | None = None
        self.on_stored: Callable[..., Any] | None = None
        self.on_change: Callable[..., Any] | None = None
        self.infos: list[str] = []
        self.warnings: list[str] = []
        self.errors: list[str] = []
        self.rest: dict[str, Any] = {}
        self.rest_calls: list[str] = []
        self.rest_callbacks: dict[str, Callable[..., Any]] = {}

    def RegisterStorageArea(self, create: Any, read: Any, remove: Any) -> None:  # noqa: N802
        self.storage = (create, read, remove)

    def RegisterIncomingCStoreInstanceFilter(self, callback: Any) -> None:  # noqa: N802
        self.cstore_filter = callback

    def RegisterOnStoredInstanceCallback(self, callback: Any) -> None:  # noqa: N802
        self.on_stored = callback

    def RegisterOnChangeCallback(self, callback: Any) -> None:  # noqa: N802
        self.on_change = callback

    def RegisterRestCallback(self, uri: str, callback: Any) -> None:  # noqa: N802
        self.rest_callbacks[uri] = callback

    def LogInfo(self, message: str) -> None:  # noqa: N802
        self.infos.append(message)

    def LogWarning(self, message: str) -> None:  # noqa: N802
        self.warnings.append(message)

    def LogError(self, message: str) -> None:  # noqa: N802
        self.errors.append(message)

    def RestApiGet(self, uri: str) -> bytes:  # noqa: N802
        self.rest_calls.append(uri)
        return json.dumps(self.rest[uri]).encode()

    @property
    def log(self) -> str:
        return "\n".join(self.infos + self.warnings + self.errors)


class FakeInstance:
    """What Orthanc hands to the C-STORE filter and the stored-instance callback."""

    def __init__(self, tags: dict[str, Any], aet: str, size: int = 1234) -> None:
        self.tags = tags
        self.aet = aet
        self.size = size

    def GetInstanceRemoteAet(self) -> str:  # noqa: N802
        return self.aet

    def GetInstanceSimplifiedJson(self) -> str:  # noqa: N802
        return json.dumps(self.tags)

    def GetInstanceData(self) -> bytes:  # noqa: N802
        """The Part 10 file (only the UIDs matter to the plugin's filter)."""
        ds = pydicom.Dataset()
        ds.SOPClassUID = self.tags["SOPClassUID"]
        ds.SOPInstanceUID = self.tags["SOPInstanceUID"]
        ds.PatientID = self.tags.get("PatientID", "")
        ds.file_meta = pydicom.dataset.FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
        buffer = io.BytesIO()
        pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
        return buffer.getvalue()

    def GetInstanceTransferSyntaxUid(self) -> str:  # noqa: N802
        return "1.2.840.10008.1.2.1"

    def GetInstanceSize(self) -> int:  # noqa: N802
        return self.size


TAGS: dict[str, Any] = {
    "SOPInstanceUID": "1.2.826.0.1.3680043.8.498.1",
    "SeriesInstanceUID": "1.2.826.0.1.3680043.8.498.2",
    "StudyInstanceUID": "1.2.826.0.1.3680043.8.498.3",
    "SOPClassUID": "1.2.840.10008.5.1.4.1.1.2",
    "PatientID": "PID-7",
    "PatientName": "Secret^Patient",
    "Modality": "CT",
    "InstanceNumber": "3",
    "SeriesNumber": "2",
    "Rows": "64",
    "Columns": "64",
}


def orthanc_c_store(sdk: FakeSdk, uuid: str, data: bytes, aet: str | None) -> None:
    """What Orthanc does for a C-STORE from ``aet`` (None: a REST upload, no filter)."""
    assert sdk.storage is not None and sdk.cstore_filter is not None
    if aet is not None:
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
        assert (
            sdk.cstore_filter(FakeInstance(dict(TAGS, SOPInstanceUID=ds.SOPInstanceUID), aet)) == 0
        )
    sdk.storage[0](uuid, CONTENT_DICOM, data)


def stow_part(data: bytes, content_type: str | None = "application/dicom") -> ReceivedPart:
    return ReceivedPart(1, content_type, io.BytesIO(data), len(data), len(data))


def rest_store(plugin: ArchivePlugin, uuid: str, data: bytes) -> None:
    """What Orthanc does with a POST /instances: the storage area, no C-STORE filter."""
    plugin.sdk.storage[0](uuid, CONTENT_DICOM, data)


# -- the viewer ------------------------------------------------------------------------------


INDEX = (
    '<!doctype html><html><head><meta name="msapplication-TileImage" '
    'content="/assets/mstile-144x144.png"><script>console.time("scriptToView"),'
    'window.PUBLIC_URL="/"</script><link rel="manifest" href="/manifest.json">'
    '<script rel="preload" as="script" src="/app-config.js"></script>'
    '<script rel="preload" as="script" type="module" src="/init-service-worker.js"></script>'
    "<title>OHIF Viewer</title><script>function browserImportFunction(n){return import(n)}"
    'window.PUBLIC_URL="/"</script><script defer src="/app.bundle.0f6159c501addfe9.js">'
    '</script><link href="/app.bundle.css" rel="stylesheet"></head><body>'
    '<div id="root"></div></body></html>'
)


RUNTIME = b'(() => {\n__webpack_require__.p = "/";\n})();\nimportScripts(__webpack_require__.p);'


def make_dist(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "index.html").write_text(INDEX)
    (root / "app.bundle.0f6159c501addfe9.js").write_bytes(RUNTIME)
    (root / "compute.bundle.0fc3a3ee85296cf2.js").write_bytes(RUNTIME)
    (root / "1180.bundle.762993518ea30ae3.js").write_bytes(b"console.log('chunk');")
    (root / "app.bundle.css").write_bytes(b"@font-face{src:url(/a34f9d1faa5f3315.woff2)}")
    (root / "a34f9d1faa5f3315.woff2").write_bytes(b"wOF2")
    (root / "34b1e6b1deb5828e.wasm").write_bytes(b"\0asm")
    (root / "manifest.json").write_text(
        json.dumps({"start_url": "/", "icons": [{"src": "/assets/a.png"}]})
    )
    (root / "sw.js").write_text("self.addEventListener('fetch', () => {});")
    (root / "assets").mkdir()
    (root / "assets" / "a.png").write_bytes(b"\x89PNG")
    return root


# -- authorization codes ---------------------------------------------------------------------


REDIRECT = "http://localhost:8080/viewer/callback"


def challenge_of(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def request_for(verifier: str) -> AuthorizationRequest:
    return AuthorizationRequest(
        "viewer", REDIRECT, "openid dicom.read", "st", "n0", challenge_of(verifier)
    )


def code_for(store: AuthorizationStore, verifier: str, now: float | None = None) -> str:
    return store.issue_code(
        request_for(verifier),
        user="alice",
        institution="Hospital A",
        scopes=frozenset({"openid", "dicom.read"}),
        auth_time=1000,
        now=now,
    )
