"""Several gateway processes on one port (``gateway.workers``), and the parent that runs them.

The gateway is one Python process per event loop, and WADO-RS retrieval of big studies
saturates one core (bench/RESULTS.md, bench.dicomweb). With ``workers`` > 1,
the gateway's main (``python -m compose.gateway``) becomes a small parent that:

1. does the first-start writes once (:func:`prepare_home_once`: the application's whole
   startup and cleanup, i.e. schemas, the audit chain's head row, the issuer's and the
   audit log's keys, the viewer's public client), so workers never race on them;
2. starts ``workers`` processes ``python -m compose.gateway --worker K`` (fork + exec, so no
   thread, event loop or SQLite connection of the parent is inherited), each serving the
   app on the same host and port with ``SO_REUSEPORT``: the kernel spreads connections
   over them;
3. forwards SIGTERM/SIGINT to the workers, waits for them (at most
   :data:`STOP_GRACE` seconds, then kills) and exits; a worker that dies otherwise is
   logged and replaced, at most :data:`RESTART_LIMIT` times in :data:`RESTART_WINDOW`
   seconds, beyond which the parent stops the others and exits 1 (the supervisor sees it).

What stays per process: the metadata and blob caches (content-addressed, so only less
shared), the worklist's "opened" memo (the table is the truth), the share-link failure
counter (an address may get up to ``workers`` times the limit). Metrics are merged across
processes (``dicomweb/operations/metrics.py``); the audit chain serialises appenders in the
database.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from aiohttp import web

from archive.api import ArchiveSettings
from dicomweb.app import create_app
from dicomweb.operations.metrics import MULTIPROC_ENV
from dicomweb.settings import GatewaySettings
from security.errors import VnaError

__all__ = [
    "AUTO_MAX",
    "RESTART_LIMIT",
    "RESTART_WINDOW",
    "STOP_GRACE",
    "RestartBudget",
    "WorkerPlan",
    "die_with_parent",
    "plan_for",
    "prepare_home_once",
    "resolve_workers",
    "run_workers",
    "usable_cpus",
    "worker_argv",
    "workers_cli",
]

logger = logging.getLogger(__name__)

AUTO_MAX = 4
"""``workers = 0`` means one per CPU up to this many: beyond it the catalog and the
tiers, not Python, are what a retrieval waits for."""
RESTART_LIMIT = 5
RESTART_WINDOW = 300.0
STOP_GRACE = 10.0
"""Seconds the workers get to finish after SIGTERM (aiohttp closes idle connections at
once and waits for running handlers); ``vna down`` must not wait on a long download."""
_POLL = 0.2
_PR_SET_PDEATHSIG = 1


def usable_cpus() -> int | None:
    """CPUs this process may run on (its affinity mask, e.g. under ``taskset`` or a
    cpuset), else the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count()


def resolve_workers(setting: int, cpu_count: int | None) -> int:
    """The number of gateway processes: ``setting``, or for 0 the CPUs up to
    :data:`AUTO_MAX` (one when the CPU count is unknown)."""
    if setting < 0:
        raise ValueError("gateway.workers is 0 (automatic) or a positive number")
    if setting:
        return setting
    return max(1, min(cpu_count or 1, AUTO_MAX))


@dataclass
class RestartBudget:
    """At most ``limit`` restarts in any ``window`` seconds (like the supervisor's for
    Orthanc): a worker that keeps dying is a fault to report, not to hide."""

    limit: int = RESTART_LIMIT
    window: float = RESTART_WINDOW
    _times: list[float] = field(default_factory=list)

    def allow(self, now: float) -> bool:
        """Record a restart wanted at ``now`` (monotonic seconds); False once over budget."""
        self._times = [t for t in self._times if now - t < self.window] + [now]
        return len(self._times) <= self.limit


@dataclass(frozen=True, slots=True)
class WorkerPlan:
    """How to start worker ``k`` and where the parent keeps its per-port state."""

    count: int
    argv: tuple[str, ...]
    """``python -m <main module>`` with the resolved home, host, port, public URL and CORS
    origins; ``--worker K --parent PID`` is appended per worker."""
    state_dir: Path
    """``<home>/run/gateway-<port>``: the lock that keeps a second parent off the port
    (SO_REUSEPORT would otherwise let it share the port silently) and the metrics files."""
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))

    @property
    def metrics_dir(self) -> Path:
        return self.state_dir / "metrics"


def die_with_parent(parent: int) -> None:
    """Have the kernel send SIGTERM to this worker when its parent dies (Linux), so a
    parent killed with SIGKILL leaves no worker holding the port; exit if it is gone."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
            logger.warning("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
    except (OSError, AttributeError):
        logger.warning("cannot ask to be stopped with the parent (not Linux?)")
    if os.getppid() != parent:  # died before prctl took effect
        raise SystemExit(0)


def prepare_home_once(settings: ArchiveSettings, gateway: GatewaySettings) -> None:
    """Run the application's startup and cleanup once, without serving.

    Everything ``create_app``'s contexts write on a first start (tables, the audit head,
    keys, the ``vna-viewer`` client) is then in place before any worker starts; in the
    workers the same steps find it there and only read.
    """

    async def once() -> None:
        runner = web.AppRunner(create_app(settings, gateway), handle_signals=False)
        await runner.setup()
        await runner.cleanup()

    asyncio.run(once())


@contextlib.contextmanager
def _port_lock(state_dir: Path) -> Iterator[None]:
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(state_dir / "lock", "a+") as lock:
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise VnaError(
                f"another gateway serves this port (lock {state_dir / 'lock'}); stop it or "
                "choose another port (--port, http_port)"
            ) from None
        yield


@contextlib.contextmanager
def _stop_signals() -> Iterator[list[int]]:
    received: list[int] = []

    def note(signum: int, _frame: FrameType | None) -> None:
        received.append(signum)

    previous = {sig: signal.signal(sig, note) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield received
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _start(plan: WorkerPlan, index: int) -> subprocess.Popen[bytes]:
    env = dict(plan.env)
    env[MULTIPROC_ENV] = str(plan.metrics_dir)
    argv = [*plan.argv, "--worker", str(index), "--parent", str(os.getpid())]
    # a process group of their own: Ctrl-C reaches the parent only, which stops them once;
    # stdout and stderr are the parent's (the supervisor's log file, opened for appending)
    proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, process_group=0)
    logger.info("gateway worker %d started (pid %d)", index, proc.pid)
    return proc


def _stop_all(workers: dict[int, subprocess.Popen[bytes]], grace: float) -> None:
    for proc in workers.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for index, proc in workers.items():
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            logger.error("gateway worker %d (pid %d) did not stop; killing it", index, proc.pid)
            proc.kill()
            proc.wait()


def run_workers(
    plan: WorkerPlan,
    budget: RestartBudget | None = None,
    *,
    stop_grace: float = STOP_GRACE,
) -> int:
    """Start ``plan.count`` workers and keep them running until SIGTERM/SIGINT.

    Returns 0 after a requested stop, 1 when workers died more often than ``budget``
    allows (the others are stopped first).
    """
    budget = budget or RestartBudget()
    workers: dict[int, subprocess.Popen[bytes]] = {}
    with _port_lock(plan.state_dir), _stop_signals() as received:
        # counters of a previous run would be summed into this one's
        shutil.rmtree(plan.metrics_dir, ignore_errors=True)
        plan.metrics_dir.mkdir(mode=0o700)
        try:
            for index in range(1, plan.count + 1):
                workers[index] = _start(plan, index)
            while not received:
                time.sleep(_POLL)
                for index, proc in list(workers.items()):
                    code = proc.poll()
                    if code is None or received:
                        continue
                    how = f"signal {-code}" if code < 0 else f"code {code}"
                    if not budget.allow(time.monotonic()):
                        logger.error(
                            "gateway worker %d exited with %s; workers died more than %d "
                            "times in %.0f s, giving up (see the lines above for why)",
                            index,
                            how,
                            budget.limit,
                            budget.window,
                        )
                        return 1
                    logger.error("gateway worker %d exited with %s; restarting it", index, how)
                    workers[index] = _start(plan, index)
            logger.info("stopping %d gateway workers (signal %d)", len(workers), received[0])
            return 0
        finally:
            _stop_all(workers, stop_grace)


def worker_argv(
    settings: ArchiveSettings, gateway: GatewaySettings, host: str, port: int, *, main_module: str
) -> tuple[str, ...]:
    """``python -m <main_module>`` (the gateway's main, given by the composition layer)
    naming everything the parent resolved, so every worker serves the same address with
    the same public URL whatever its environment."""
    argv = [sys.executable, "-m", main_module, "--home", str(settings.home)]
    argv += ["--host", host, "--port", str(port)]
    argv += ["--public-url", gateway.resolved_public_url(settings)]
    for origin in gateway.cors_origins:
        argv += ["--cors-origin", origin]
    return tuple(argv)


def plan_for(
    settings: ArchiveSettings,
    gateway: GatewaySettings,
    host: str,
    port: int,
    count: int,
    *,
    main_module: str,
) -> WorkerPlan:
    """The plan of ``count`` workers on ``host:port`` for this home, each started as
    ``python -m <main_module>``."""
    return WorkerPlan(
        count=count,
        argv=worker_argv(settings, gateway, host, port, main_module=main_module),
        state_dir=settings.run_dir / f"gateway-{port}",
    )


def workers_cli(
    settings: ArchiveSettings,
    gateway: GatewaySettings,
    host: str,
    port: int,
    count: int,
    *,
    main_module: str,
) -> int:
    """The parent's whole life: prepare once, run the workers (``python -m <main_module>``),
    return the exit code."""
    logger.info("preparing the archive home before starting %d gateway workers", count)
    prepare_home_once(settings, gateway)
    return run_workers(plan_for(settings, gateway, host, port, count, main_module=main_module))
