"""Start, supervise and stop the archive's processes for one home directory.

``vna up`` runs :func:`serve` in the foreground (or detached, in its own session). It
prepares the home (keys, credentials, catalog, Orthanc configuration), recovers from an
unclean stop, starts Orthanc and restarts it if it dies, and stops it cleanly on SIGTERM.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import requests

from archive.api import Catalog, OrthancCredentials, credentials, open_store, recover
from compose.api import Settings
from deploy.dimse_access import RefusalAuditor
from deploy.orthanc_config import write_orthanc_config
from dicomweb.api import tls_files
from security.api import (
    SELF_SIGNED_CERT,
    AuditLog,
    VnaError,
    ensure_server_pki,
    exposed,
    fingerprint,
    restrict_umask,
    tighten,
)

__all__ = ["Endpoints", "prepare_home", "serve", "start_detached", "stop", "status"]

logger = logging.getLogger(__name__)

_RESTART_LIMIT = 5
_RESTART_WINDOW = 300.0


@dataclass(frozen=True, slots=True)
class Endpoints:
    dicom: str
    gateway: str
    orthanc: str
    public_url: str = ""
    dicom_services: str = "C-STORE/C-FIND/C-MOVE/C-GET"
    tls: str = ""  # what clients check the gateway's certificate against

    def lines(self) -> list[str]:
        return [
            f"DICOM ({self.dicom_services}): {self.dicom}",
            f"Orthanc HTTP (internal; refuses all but 127.0.0.1): {self.orthanc}",
            f"DICOMweb gateway (OAuth2 bearer tokens):  {self.gateway}",
            f"Viewer (OHIF, staff sign-in):  {self.public_url}/viewer/",
            f"OpenID discovery:  {self.public_url}/.well-known/openid-configuration",
        ] + ([f"TLS certificate: {self.tls}"] if self.tls else [])


def _tls_line(settings: Settings) -> str:
    """The gateway's certificate and its SHA-256 fingerprint, once it exists."""
    gateway = settings.gateway
    if not gateway.tls:
        return ""
    cert = gateway.tls_cert_file or settings.keys_dir / SELF_SIGNED_CERT
    try:
        print_ = fingerprint(cert)
    except (OSError, ValueError):
        return f"{cert} (not readable yet)"
    kind = "" if gateway.tls_cert_file else "self-signed, "
    return f"{cert} ({kind}SHA-256 {print_})"


def endpoints(settings: Settings) -> Endpoints:
    public_url = settings.gateway.resolved_public_url(settings)
    return Endpoints(
        dicom=f"{settings.dicom_aet}@{settings.http_host}:{settings.dicom_port}",
        gateway=f"{public_url}/dicom-web",
        orthanc=f"http://127.0.0.1:{settings.orthanc_http_port}",
        public_url=public_url,
        dicom_services="C-STORE/C-FIND/C-MOVE"
        + ("/C-GET" if settings.dicom_allow_get else "; C-GET off")
        + ("; DICOM TLS only" if settings.dicom.tls else ""),
        tls=_tls_line(settings),
    )


def _pid_file(settings: Settings) -> Path:
    return settings.run_dir / "vna.pid"


def _dirty_file(settings: Settings) -> Path:
    return settings.run_dir / "dirty"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def running_pid(settings: Settings) -> int | None:
    """The supervisor's pid if one runs for this home."""
    try:
        pid = int(_pid_file(settings).read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    return pid if _alive(pid) else None


def prepare_home(settings: Settings) -> tuple[OrthancCredentials, Path]:
    """Create what a first start needs and reconcile after an unclean stop."""
    home = settings.home
    # Orthanc, the gateway and the indexer inherit it: their files (the catalog and its
    # WAL, Orthanc's index and logs) are created 0600 whatever the caller's umask
    restrict_umask()
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    changed = tighten(home)  # a home made by an older version, by hand, or loosened since
    if changed:
        logger.warning(
            "made %d paths under %s private (group or others had access), e.g. %s",
            len(changed),
            home,
            changed[0].describe(),
        )
    for sub in ("run", "log", "secrets", "keys"):
        (home / sub).mkdir(exist_ok=True, mode=0o700)
    creds = credentials(settings)
    # the gateway's self-signed pair, made before it starts so `vna up` prints its fingerprint
    tls_files(settings, settings.gateway, settings.http_host)
    store = open_store(settings)
    try:
        catalog: Catalog = store.catalog
        for inst in settings.institutions:
            catalog.add_institution(inst.name)
            for ae in inst.ae_titles:
                catalog.add_institution(inst.name, ae, inst.host, inst.port)
        dirty = _dirty_file(settings)
        if dirty.exists():
            since = float(dirty.read_text().strip() or 0)
            logger.warning("the archive did not stop cleanly last time; recovering")
            recover(store, settings.home / "orthanc" / "index" / "index", since)
        if not settings.dicom.check_host:
            logger.warning(
                "dicom.check_host is off: any address may use a registered AE title "
                "(docs/dimse-security.md)"
            )
        # DICOM TLS: the archive's CA and Orthanc's certificate, made on first use
        tls = ensure_server_pki(home / "tls", [settings.http_host]) if settings.dicom.tls else None
        config = write_orthanc_config(settings, creds, catalog.list_institutions(), tls)
    finally:
        store.catalog.close()
    return creds, config


def orthanc_ready(settings: Settings, creds: OrthancCredentials) -> bool:
    try:
        answer = requests.get(
            f"http://127.0.0.1:{settings.orthanc_http_port}/system",
            auth=(creds.username, creds.password),
            timeout=2,
        )
    except requests.RequestException:
        return False
    return answer.ok and bool(answer.json().get("StorageAreaPlugin"))


class _Stop(Exception):
    pass


@contextlib.contextmanager
def _signals() -> Iterator[None]:
    def handler(signum: int, _frame: FrameType | None) -> None:
        raise _Stop(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _start_orthanc(settings: Settings, config: Path) -> subprocess.Popen[bytes]:
    log = open(settings.home / "log" / "orthanc.log", "ab")  # noqa: SIM115 - child owns it
    env = dict(os.environ, VNA_HOME=str(settings.home))
    # dcmtk (Orthanc's DICOM stack) leaves Nagle's algorithm on unless told: every C-STORE
    # would then wait ~40 ms for a delayed ACK, capping a sender at ~20 instances/s
    env.setdefault("TCP_NODELAY", "1")
    return subprocess.Popen(
        [settings.orthanc_executable, str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )


# the processes that run beside Orthanc: name -> python module
HELPERS = {"indexer": "compose.indexer", "gateway": "compose.gateway"}


def _start_helper(settings: Settings, name: str) -> subprocess.Popen[bytes]:
    log = open(settings.home / "log" / f"{name}.log", "ab")  # noqa: SIM115 - child owns it
    # --parent: the helper stops when this process ends, even killed (compose/lifeline.py);
    # it is started from the main thread, the one the kernel watches for that
    return subprocess.Popen(
        [sys.executable, "-m", HELPERS[name], "--home", str(settings.home)]
        + ["--parent", str(os.getpid())],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=dict(os.environ, VNA_HOME=str(settings.home)),
        start_new_session=True,
        cwd=str(Path(__file__).resolve().parent.parent),
    )


def _launch(settings: Settings, config: Path, creds: OrthancCredentials) -> subprocess.Popen[bytes]:
    """Start Orthanc, wait until its storage area answers, and record it as ready."""
    (settings.run_dir / "ready").unlink(missing_ok=True)
    # from now until a clean stop, a crash leaves work for recovery (see archive.recovery)
    _dirty_file(settings).write_text(f"{time.time()}\n")
    proc = _start_orthanc(settings, config)
    log = settings.home / "log" / "orthanc.log"
    deadline = time.monotonic() + 120
    try:
        while not orthanc_ready(settings, creds):
            if proc.poll() is not None:
                raise VnaError(
                    f"Orthanc exited with code {proc.returncode} during start; see {log}"
                )
            if time.monotonic() > deadline:
                raise VnaError(f"Orthanc did not become ready within 120 s; see {log}")
            time.sleep(0.2)
    except BaseException:
        _terminate(proc)  # never leave an Orthanc behind, whatever interrupted the start
        raise
    return proc


def _mark_ready(settings: Settings, proc: subprocess.Popen[bytes]) -> None:
    """Say the archive answers (``vna up --detach`` waits for this file); names Orthanc's pid."""
    (settings.run_dir / "ready").write_text(json.dumps({"pid": proc.pid}))


def _gateway_listening(settings: Settings) -> bool:
    host = "127.0.0.1" if settings.http_host in ("0.0.0.0", "") else settings.http_host  # noqa: S104
    try:
        with socket.create_connection((host, settings.http_port), timeout=2):
            return True
    except OSError:
        return False


def _wait_for_gateway(settings: Settings, gateway: subprocess.Popen[bytes]) -> None:
    """Wait until the gateway accepts connections: "up" means every front answers, so a
    script's first request after ``vna up --detach`` is not refused."""
    log = settings.home / "log" / "gateway.log"
    deadline = time.monotonic() + 120
    while not _gateway_listening(settings):
        if gateway.poll() is not None:
            raise VnaError(
                f"the gateway exited with code {gateway.returncode} during start; see {log}"
            )
        if time.monotonic() > deadline:
            raise VnaError(f"the gateway did not listen within 120 s; see {log}")
        time.sleep(0.2)


def _terminate(proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        logger.error("Orthanc did not stop within %.0f s; killing it", timeout)
        proc.kill()
        proc.wait()


def _terminate_all(procs: list[subprocess.Popen[bytes]], timeout: float = 60.0) -> None:
    """SIGTERM every process at once, then wait for each, so their stops overlap (Orthanc's
    takes ~3 s, the gateway's ~1.5 s) instead of adding up."""
    running = [proc for proc in procs if proc.poll() is None]
    for proc in running:
        proc.terminate()
    deadline = time.monotonic() + timeout
    for proc in running:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            logger.error("process %s did not stop within %.0f s; killing it", proc.pid, timeout)
            proc.kill()
            proc.wait()


def serve(
    settings: Settings, *, ready_message: bool = True, on_ready: Callable[[], None] | None = None
) -> int:
    """Run the archive in the foreground until SIGTERM/SIGINT; returns an exit code."""
    other = running_pid(settings)
    if other is not None and other != os.getpid():
        raise VnaError(
            f"the archive in {settings.home} already runs (pid {other}); stop it with `vna down`"
        )
    creds, config = prepare_home(settings)
    _pid_file(settings).write_text(f"{os.getpid()}\n")
    # Orthanc's own DIMSE refusals reach only its log: audit them from there
    audit_store = open_store(settings)
    refusals = RefusalAuditor(
        settings.home / "log" / "orthanc.log",
        AuditLog.open(audit_store.catalog.engine, settings.keys_dir, settings.audit_syslog),
    )
    restarts: list[float] = []
    proc: subprocess.Popen[bytes] | None = None
    helpers: dict[str, subprocess.Popen[bytes]] = {}
    clean = False
    try:
        with _signals():
            proc = _launch(settings, config, creds)
            for name in HELPERS:
                helpers[name] = _start_helper(settings, name)
            _wait_for_gateway(settings, helpers["gateway"])
            _mark_ready(settings, proc)
            if ready_message:
                print("VNA archive is up", flush=True)
                for line in endpoints(settings).lines():
                    print("  " + line, flush=True)
                print(
                    f"  home: {settings.home}   stop with: vna down --home {settings.home}",
                    flush=True,
                )
            if on_ready is not None:
                on_ready()
            while True:
                time.sleep(0.5)
                try:
                    refusals.poll()
                except Exception:
                    logger.exception("auditing Orthanc's DICOM refusals failed; will retry")
                for name, helper in helpers.items():
                    if helper.poll() is not None:
                        logger.error(
                            "the %s exited with code %s (see %s); restarting it",
                            name,
                            helper.returncode,
                            settings.home / "log" / f"{name}.log",
                        )
                        time.sleep(1.0)
                        helpers[name] = _start_helper(settings, name)
                code = proc.poll()
                if code is None:
                    continue
                now = time.monotonic()
                restarts = [t for t in restarts if now - t < _RESTART_WINDOW] + [now]
                if len(restarts) > _RESTART_LIMIT:
                    logger.error(
                        "Orthanc keeps dying (%d times in %.0f s); giving up",
                        len(restarts),
                        _RESTART_WINDOW,
                    )
                    return 1
                logger.error("Orthanc exited with code %s; recovering and restarting", code)
                print(f"Orthanc exited with code {code}; restarting", file=sys.stderr, flush=True)
                creds, config = prepare_home(settings)
                proc = _launch(settings, config, creds)
                _mark_ready(settings, proc)
    except _Stop:
        if proc is not None:
            _terminate_all([proc, *helpers.values()])
            clean = proc.returncode == 0
        return 0
    finally:
        if proc is not None and proc.poll() is None:
            _terminate(proc)
            clean = proc.returncode == 0
        for helper in helpers.values():
            _terminate(helper)
        with contextlib.suppress(Exception):
            refusals.poll()  # what Orthanc refused just before it stopped
        audit_store.catalog.close()
        if clean:
            _dirty_file(settings).unlink(missing_ok=True)
        (settings.run_dir / "ready").unlink(missing_ok=True)
        _pid_file(settings).unlink(missing_ok=True)


def start_detached(settings: Settings, timeout: float = 120.0) -> int:
    """Start ``vna up`` in its own session and wait until it is ready; returns its pid."""
    other = running_pid(settings)
    if other is not None:
        raise VnaError(f"the archive in {settings.home} already runs (pid {other})")
    restrict_umask()
    settings.home.mkdir(parents=True, exist_ok=True, mode=0o700)
    (settings.home / "log").mkdir(exist_ok=True, mode=0o700)
    log = open(settings.home / "log" / "vna.log", "ab")  # noqa: SIM115 - child owns it
    proc = subprocess.Popen(
        [sys.executable, "-m", "deploy.cli", "up", "--home", str(settings.home)],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        env=dict(os.environ, VNA_HOME=str(settings.home)),
    )
    deadline = time.monotonic() + timeout
    while not (settings.run_dir / "ready").exists():
        if proc.poll() is not None:
            raise VnaError(
                f"the archive failed to start (exit {proc.returncode}); see "
                f"{settings.home / 'log' / 'vna.log'}"
            )
        if time.monotonic() > deadline:
            raise VnaError(
                f"the archive did not start within {timeout:.0f} s; see "
                f"{settings.home / 'log' / 'vna.log'}"
            )
        time.sleep(0.2)
    return proc.pid


def stop(settings: Settings, timeout: float = 90.0) -> bool:
    """Stop the supervisor of this home; returns False if none was running."""
    pid = running_pid(settings)
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            raise VnaError(f"the archive (pid {pid}) did not stop within {timeout:.0f} s")
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.2)
    return True


def status(settings: Settings) -> dict[str, object]:
    pid = running_pid(settings)
    creds = credentials(settings) if (settings.home / "secrets").exists() else None
    ready = bool(pid) and creds is not None and orthanc_ready(settings, creds)
    return {
        "home": str(settings.home),
        "running": pid is not None,
        "pid": pid,
        "orthanc_ready": ready,
        "endpoints": endpoints(settings).lines(),
        # paths under the home that group or others may use (vna fsck fails on them)
        "exposed": [item.describe() for item in exposed(settings.home)],
    }
