"""Several gateway processes on one port (``gateway.workers``), run by gunicorn.

The gateway is one Python process per event loop, and WADO-RS retrieval of big studies
saturates one core (bench/RESULTS.md, bench.dicomweb). With ``workers`` > 1 the gateway's
main (``python -m compose.gateway``) becomes a gunicorn arbiter (:class:`GatewayServer`)
running aiohttp's gunicorn worker (``aiohttp.worker.GunicornWebWorker``):

1. the first-start writes happen once, in the arbiter, before any worker exists
   (:func:`prepare_home_once`: the application's whole startup and cleanup, i.e. schemas,
   the audit chain's head row, the issuer's and the audit log's keys, the viewer's public
   client), so workers never race on them;
2. the arbiter binds the port once (a second gateway on the same port fails to bind and
   exits 1) and forks ``workers`` processes that accept on the inherited socket; each
   builds its own application after the fork (its own event loop, catalog connections
   and thread pools: the arbiter holds none of them when it forks);
3. SIGTERM stops the workers gracefully (at most :data:`STOP_GRACE` seconds, then
   SIGKILL); a worker that dies otherwise is replaced under the same number, at most
   :data:`RESTART_LIMIT` times in :data:`RESTART_WINDOW` seconds, beyond which the arbiter
   stops the others and exits 1 (the supervisor sees it). A worker that fails to start
   ends the arbiter at once (gunicorn's boot error, exit 3). Workers get SIGTERM when
   the arbiter ends, however it ends (``compose/lifeline.py``), and stop.

What stays per process: the metadata and blob caches (content-addressed, so only less
shared), the worklist's "opened" memo (the table is the truth). Metrics are merged across
processes (``dicomweb/operations/metrics.py``) from files under ``<home>/run/gateway-<port>``;
the audit chain serialises appenders in the database.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.worker import GunicornWebWorker
from gunicorn import glogging
from gunicorn.app.base import BaseApplication
from gunicorn.errors import HaltServer

from archive.api import ArchiveSettings
from compose.lifeline import die_with_parent
from dicomweb.api import AccessLogger, GatewayMetrics, GatewaySettings, create_app
from security.api import server_context

__all__ = [
    "AUTO_MAX",
    "RESTART_LIMIT",
    "RESTART_WINDOW",
    "STOP_GRACE",
    "GatewayServer",
    "RestartBudget",
    "metrics_dir",
    "prepare_home_once",
    "resolve_workers",
    "usable_cpus",
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
START_TIMEOUT = 120.0
"""Seconds a worker may go without a heartbeat (gunicorn's ``timeout``), its start included."""
KEEPALIVE = 75.0
"""Seconds an idle keep-alive connection stays open: aiohttp's own default, as the
single-process gateway (``web.run_app``) has it, not gunicorn's 2 s."""


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


def metrics_dir(settings: ArchiveSettings, port: int) -> Path:
    """Where the workers on ``port`` keep prometheus_client's multiprocess files."""
    return settings.run_dir / f"gateway-{port}" / "metrics"


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


class _Worker(GunicornWebWorker):
    """aiohttp's gunicorn worker, serving TLS with the archive's server context (TLS 1.2
    and later, as the single-process gateway) rather than one built from gunicorn's
    ``ssl_version``/``ciphers`` settings."""

    @staticmethod
    def _create_ssl_context(cfg: Any) -> ssl.SSLContext:
        return server_context(Path(cfg.certfile), Path(cfg.keyfile))


class _JsonLog(glogging.Logger):  # type: ignore[misc]  # gunicorn has no type hints
    """gunicorn's own lines (start, bind, worker exits) go through the root logger, so
    they are JSON lines like every other line of the gateway's log."""

    def setup(self, cfg: Any) -> None:
        self.cfg = cfg
        self.loglevel = self.LOG_LEVELS.get(cfg.loglevel.lower(), logging.INFO)
        self.error_log.setLevel(self.loglevel)
        self.error_log.propagate = True
        self.access_log.propagate = True


class GatewayServer(BaseApplication):  # type: ignore[misc]  # gunicorn has no type hints
    """The gateway as a gunicorn application: ``count`` aiohttp workers on ``host:port``.

    Parameters
    ----------
    settings, gateway : the resolved settings every worker builds its app from.
    host, port : the one address the arbiter binds.
    count : worker processes.
    tls : (certificate, key) to serve HTTPS with; each worker loads its own context.
    budget : restarts allowed (default :class:`RestartBudget`).
    on_worker : called in each worker right after the fork with its number (1 to
        ``count``; a replacement takes the number of the worker it replaces), e.g. to
        tag its log lines.
    """

    def __init__(
        self,
        settings: ArchiveSettings,
        gateway: GatewaySettings,
        host: str,
        port: int,
        count: int,
        *,
        tls: tuple[Path, Path] | None = None,
        budget: RestartBudget | None = None,
        log_level: str = "info",
        on_worker: Callable[[int], None] | None = None,
    ) -> None:
        self.settings = settings
        self.gateway = gateway
        self.host = host
        self.port = port
        self.count = count
        self.tls = tls
        self.budget = budget or RestartBudget()
        self.log_level = log_level
        self.on_worker = on_worker
        self.metrics_dir = metrics_dir(settings, port)
        self._slot_of_age: dict[int, int] = {}  # gunicorn's worker age -> our number
        self._exited: dict[int, int] = {}  # number -> pid of a worker that exited
        self._slot = 0  # in a worker: its number
        super().__init__(prog="python -m compose.gateway")

    # --- gunicorn's application interface

    def load_config(self) -> None:
        bind = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
        options: dict[str, object] = {
            "bind": [bind],
            "workers": self.count,
            "worker_class": f"{__name__}._Worker",
            "graceful_timeout": int(STOP_GRACE),
            # a worker silent this long is killed and replaced; its start (catalog
            # checks on a busy machine) must fit, as in the supervisor's wait for the port
            "timeout": int(START_TIMEOUT),
            "keepalive": int(KEEPALIVE),
            "loglevel": self.log_level.lower(),
            "logger_class": _JsonLog,
            "accesslog": None,  # each worker's AccessLogger writes dicomweb.access
            "proc_name": "vna-gateway",
            "umask": 0o077,  # its heartbeat files, as everything else: the owner's only
            "control_socket_disable": True,  # no gunicorn.ctl under $HOME or /run/user
            "when_ready": self._when_ready,
            "pre_fork": self._pre_fork,
            "post_fork": self._post_fork,
            "child_exit": self._child_exit,
        }
        if self.tls is not None:
            options["certfile"], options["keyfile"] = (str(p) for p in self.tls)
        for key, value in options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        """Called in each worker after the fork: its application, built there."""

        async def runner() -> web.AppRunner:
            metrics = GatewayMetrics(self._slot, self.metrics_dir)
            return web.AppRunner(
                create_app(self.settings, self.gateway, metrics=metrics),
                handle_signals=False,
                access_log_class=AccessLogger,
                access_log=logging.getLogger("dicomweb.access"),
                keepalive_timeout=KEEPALIVE,
                shutdown_timeout=STOP_GRACE * 0.95,
            )

        return runner

    # --- hooks (gunicorn calls them with the arbiter and the worker)

    def _when_ready(self, _server: Any) -> None:
        # the port is bound (so no other gateway serves it): counters of a previous run
        # would be summed into this one's
        shutil.rmtree(self.metrics_dir, ignore_errors=True)
        self.metrics_dir.mkdir(parents=True, mode=0o700)

    def _pre_fork(self, server: Any, worker: Any) -> None:
        taken = {self._slot_of_age[w.age] for w in server.WORKERS.values()}
        slot = min(set(range(1, self.count + 1)) - taken)
        self._slot_of_age[worker.age] = slot
        self._slot = slot  # what the forked worker reads
        dead = self._exited.pop(slot, None)
        if dead is None:
            return
        if not self.budget.allow(time.monotonic()):
            raise HaltServer(
                f"gateway workers died more than {self.budget.limit} times in "
                f"{self.budget.window:.0f} s, giving up (see the lines above for why)",
                1,
            )
        logger.error("gateway worker %d (pid %d) exited; restarting it", slot, dead)

    def _post_fork(self, server: Any, worker: Any) -> None:
        # SIGTERM (a graceful stop) as soon as the arbiter ends, however it ends; without
        # it a worker would notice only at its next heartbeat, within a second
        die_with_parent(server.pid)
        if self.on_worker is not None:
            self.on_worker(self._slot)
        logger.info("gateway worker %d started (pid %d)", self._slot, worker.pid)

    def _child_exit(self, _server: Any, worker: Any) -> None:
        slot = self._slot_of_age.pop(worker.age, None)
        if slot is not None:
            self._exited[slot] = worker.pid
