"""Start a real archive (Orthanc + plugin) in a temporary home and talk to it."""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes
from email.policy import HTTP
from pathlib import Path
from typing import Any

import requests
import tomli_w

ROOT = Path(__file__).resolve().parents[2]
VNA = [sys.executable, "-m", "deploy.cli"]
# the institutions of the tests' archives, each with the AE title its clients call from
INSTITUTIONS = {"Hospital A": ["HOSPA"], "Hospital B": ["HOSPB"]}


_issued: set[int] = set()


def _ephemeral_low() -> int:
    """The first port the kernel hands out for outgoing connections (32768 by default)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A free TCP port, below the kernel's ephemeral range, never one this run handed out.

    A port the kernel offers for bind(0) lies in the ephemeral range, where any outgoing
    connection (a client, the gateway's connections to Orthanc, Chromium) may take it as its
    local port before the server that was meant to listen there starts ("port already in
    use" seen in a full run). Below that range only listeners take ports; remembering the
    ones handed out keeps two archives of one run apart.
    """
    high = min(_ephemeral_low(), 65536)
    low = max(1024, high - 16384)
    while True:
        port = random.randrange(low, high)  # noqa: S311 - a port number, not a secret
        if port in _issued:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("0.0.0.0", port))  # noqa: S104 - Orthanc's HTTP binds all addresses
            except OSError:
                continue
        _issued.add(port)
        return port


@dataclass
class Archive:
    home: Path
    dicom_port: int = field(default_factory=free_port)
    orthanc_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    aet: str = "VNA"
    # one gateway process unless a test asks for more (tests/integration/test_gateway_workers)
    gateway_workers: int = 1
    # the suite talks plain HTTP to the gateway (its URLs, dicomweb-client and Chromium);
    # HTTPS, the default, is tested with gateway_tls=True (tests/integration/test_exposure.py)
    gateway_tls: bool = False

    def env(self) -> dict[str, str]:
        return dict(
            os.environ,
            VNA_HOME=str(self.home),
            VNA_DICOM_PORT=str(self.dicom_port),
            VNA_ORTHANC_HTTP_PORT=str(self.orthanc_port),
            VNA_HTTP_PORT=str(self.http_port),
            VNA_GATEWAY__WORKERS=str(self.gateway_workers),
            VNA_GATEWAY__TLS=str(self.gateway_tls).lower(),
        )

    def write_config(self, institutions: dict[str, list[str]], **settings: Any) -> None:
        """``vna.toml`` with ``institutions`` (name -> AE titles, each bound to 127.0.0.1,
        where the tests' clients connect from) and any other settings."""
        self.home.mkdir(parents=True, exist_ok=True)
        doc = {
            **settings,
            "institutions": [
                {"name": name, "ae_titles": aes, "host": "127.0.0.1"}
                for name, aes in institutions.items()
            ],
            "storage": {"gc_grace_seconds": 3600},
        }
        (self.home / "vna.toml").write_text(tomli_w.dumps(doc))

    def vna(
        self, *args: str, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [*VNA, *args], cwd=ROOT, env=self.env(), capture_output=True, text=True, timeout=timeout
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"vna {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
            )
        return proc

    def up(self) -> None:
        self.vna("up", "--detach", timeout=180)

    def down(self) -> None:
        self.vna("down", check=False, timeout=180)

    @property
    def auth(self) -> tuple[str, str]:
        data = json.loads((self.home / "secrets" / "orthanc-credentials.json").read_text())
        return data["username"], data["password"]

    @property
    def orthanc_url(self) -> str:
        return f"http://127.0.0.1:{self.orthanc_port}"

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return requests.get(self.orthanc_url + path, auth=self.auth, timeout=60, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return requests.post(self.orthanc_url + path, auth=self.auth, timeout=60, **kwargs)

    def stats(self, settled: bool = True) -> dict[str, Any]:
        """`vna stats --json`; by default once everything is digested and indexed."""
        deadline = time.monotonic() + 120
        while True:
            data = dict(json.loads(self.vna("stats", "--json").stdout))
            idle = data["pending"] == 0 and data["index_backlog"] == 0
            if not settled or idle or time.monotonic() > deadline:
                return data
            time.sleep(0.2)

    def orthanc_pid(self) -> int:
        return int(json.loads((self.home / "run" / "ready").read_text())["pid"])

    def lookup(self, sop_uid: str) -> str | None:
        answer = self.post("/tools/lookup", data=sop_uid).json()
        for item in answer:
            if item["Type"] == "Instance":
                return str(item["ID"])
        return None

    def storescu(
        self, aet: str, *paths: Path | str, extra: tuple[str, ...] = ()
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                "storescu",
                "-aet",
                aet,
                "-aec",
                self.aet,
                *extra,
                "127.0.0.1",
                str(self.dicom_port),
                *map(str, paths),
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )


def wait_until(check: Callable[[], Any], what: str, deadline: float = 120.0) -> None:
    """Poll ``check()`` until it is true: a readiness wait, not a timing assertion.

    A connection error counts as "not yet" (a server still starting refuses connections).
    """
    end = time.monotonic() + deadline
    while True:
        try:
            if check():
                return
        except requests.RequestException:
            pass
        if time.monotonic() > end:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.2)


class _FromAddress(requests.adapters.HTTPAdapter):
    def __init__(self, address: str) -> None:
        self.address = address
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["source_address"] = (self.address, 0)
        super().init_poolmanager(*args, **kwargs)


def session_from(address: str) -> requests.Session:
    """A session whose connections come from ``address``, another loopback address such as
    127.0.0.9: what one test makes a server count per address touches no other test."""
    session = requests.Session()
    adapter = _FromAddress(address)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


@dataclass
class GatewayProcess:
    """A running ``python -m compose.gateway`` (with several workers: their parent)."""

    proc: subprocess.Popen[bytes]
    url: str
    log: Path


@contextmanager
def start_gateway(
    archive: Archive, name: str, env: Mapping[str, str] | None = None, *, workers: int = 1
) -> Iterator[GatewayProcess]:
    """A gateway of its own on ``archive`` (``python -m compose.gateway --workers N``) at a free
    loopback port, its public URL the one clients use (the issuer and the viewer's
    configuration name it); yields it once /healthz answers and stops it on leaving.

    ``env`` adds to or overrides the archive's environment (``VNA_*`` settings); the log is
    ``log/gateway-<name>.log`` in the archive home.
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = archive.home / "log" / f"gateway-{name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "compose.gateway", "--home", str(archive.home)]
            + ["--host", "127.0.0.1", "--port", str(port), "--public-url", url]
            + ["--workers", str(workers)],
            cwd=ROOT,
            env={**archive.env(), **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until(lambda: requests.get(f"{url}/healthz", timeout=5).ok, "the gateway")
            yield GatewayProcess(proc, url, log_path)
        finally:
            proc.terminate()
            proc.wait(timeout=60)


@contextmanager
def gateway_process(
    archive: Archive, name: str, env: Mapping[str, str] | None = None
) -> Iterator[tuple[str, Path]]:
    """:func:`start_gateway` with one process; yields (url, log)."""
    with start_gateway(archive, name, env) as gateway:
        yield gateway.url, gateway.log


def multipart_parts(body: bytes, content_type: str) -> list[bytes]:
    """The parts of a multipart body (WADO-RS answers), in order."""
    message = message_from_bytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body, policy=HTTP
    )
    return [part.get_payload(decode=True) for part in message.iter_parts()]
