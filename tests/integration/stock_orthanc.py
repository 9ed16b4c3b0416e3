"""A stock Orthanc (Debian's package, DICOMweb plugin only) as a hospital's PACS peer.

The most common PACS that pushes to and pulls from the archive is an Orthanc of its own:
this one runs the same Debian binary with nothing of ours (no Python plugin, no storage
area), in a temporary directory, on free ports. Tests use it as a DIMSE peer (C-STORE to
the archive, C-MOVE destination, C-FIND SCU through ``/modalities/{name}/query``) and as a
DICOMweb client (``/dicom-web/servers/{name}/stow`` and ``/retrieve``) and server (the
reference answers of the conformance comparison).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from tests.integration.harness import free_port, wait_until

PLUGIN_DIRS = (Path("/usr/share/orthanc/plugins"), Path("/usr/lib/orthanc/plugins"))
USER, PASSWORD = "peer", "peer-password"  # noqa: S105 - a throwaway test server's login


def dicomweb_plugin() -> Path:
    for folder in PLUGIN_DIRS:
        plugin = folder / "libOrthancDicomWeb.so"
        if plugin.exists():
            return plugin
    raise AssertionError(
        "Orthanc's DICOMweb plugin is missing: `make install` installs orthanc-dicomweb"
    )


@dataclass
class StockOrthanc:
    """A running stock Orthanc; ``url`` is its REST API (basic auth ``auth``)."""

    root: Path
    aet: str = "STOCK"
    dicom_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def auth(self) -> tuple[str, str]:
        return USER, PASSWORD

    @property
    def log(self) -> Path:
        return self.root / "orthanc.log"

    def config(self, extra: Mapping[str, Any]) -> dict[str, Any]:
        base: dict[str, Any] = {
            "Name": "stock-peer",
            "StorageDirectory": str(self.root / "storage"),
            "IndexDirectory": str(self.root / "storage"),
            "Plugins": [str(dicomweb_plugin())],
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": self.aet,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": True,
            "RegisteredUsers": {USER: PASSWORD},
            "DicomModalities": {},
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "Servers": {}},
            "StableAge": 1,
        }
        for key, value in extra.items():
            if isinstance(value, dict) and isinstance(base.get(key), dict):
                base[key] = {**base[key], **value}
            else:
                base[key] = value
        return base

    def start(self, extra: Mapping[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / "orthanc.json"
        path.write_text(json.dumps(self.config(extra), indent=2))
        binary = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
        with self.log.open("w") as log:
            self.proc = subprocess.Popen(
                [binary, str(path)],
                cwd=self.root,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_until(lambda: self.get("/system").ok, "the stock Orthanc peer", deadline=60)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
            self.proc = None

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return requests.get(self.url + path, auth=self.auth, timeout=120, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return requests.post(self.url + path, auth=self.auth, timeout=600, **kwargs)

    def put(self, path: str, **kwargs: Any) -> requests.Response:
        return requests.put(self.url + path, auth=self.auth, timeout=120, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> requests.Response:
        return requests.delete(self.url + path, auth=self.auth, timeout=120, **kwargs)

    def upload(self, *files: Path) -> list[str]:
        """Store files through the REST API; the Orthanc IDs of the instances."""
        ids = []
        for path in files:
            answer = self.post("/instances", data=path.read_bytes())
            answer.raise_for_status()
            ids.append(str(answer.json()["ID"]))
        return ids

    def add_modality(self, name: str, aet: str, port: int, host: str = "127.0.0.1") -> None:
        """Register a DICOM peer at run time (Orthanc's ``PUT /modalities/{name}``)."""
        answer = self.put(f"/modalities/{name}", json={"AET": aet, "Host": host, "Port": port})
        answer.raise_for_status()

    def add_dicomweb_server(
        self, name: str, url: str, headers: Mapping[str, str] | None = None
    ) -> None:
        """Register a DICOMweb server at run time (the plugin's ``PUT /dicom-web/servers``);
        ``headers`` carries e.g. ``Authorization: Bearer ...`` for the gateway."""
        body: dict[str, Any] = {"Url": url}
        if headers:
            body["HttpHeaders"] = dict(headers)
        answer = self.put(f"/dicom-web/servers/{name}", json=body)
        answer.raise_for_status()


@contextmanager
def stock_orthanc(root: Path, **extra: Any) -> Iterator[StockOrthanc]:
    """A stock Orthanc in ``root``; ``extra`` is merged into its configuration
    (dictionaries such as ``DicomModalities`` one level deep)."""
    peer = StockOrthanc(root)
    try:
        peer.start(extra)
        yield peer
    finally:
        peer.stop()
