"""Run the gateway: ``python -m compose.gateway --home DIR [--host H] [--port P] [--workers N]``.

The gateway's composition root: the entry the supervisor (``deploy/supervisor.py``)
starts as a second supervised process next to Orthanc. :func:`main` takes an argument
list and returns an exit code; :func:`serve` runs a built application until
SIGINT/SIGTERM. With more than one worker (``gateway.workers``, ``--workers``) this
process becomes a gunicorn arbiter whose aiohttp workers share the port
(``compose/gateway_workers.py``). ``--parent PID`` (the supervisor passes its own) stops
it when that process ends, however it ends (``compose/lifeline.py``).
Logs are JSON lines on stderr; no token, Authorization header or query string is ever
logged.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web

from compose.gateway_workers import (
    GatewayServer,
    metrics_dir,
    prepare_home_once,
    resolve_workers,
    usable_cpus,
)
from compose.lifeline import die_with_parent
from compose.settings import load_settings
from dicomweb.api import MULTIPROC_ENV, AccessLogger, create_app, tls_files
from security.api import VnaError, restrict_umask, server_context

__all__ = ["MODULE", "main", "serve"]

MODULE = "compose.gateway"
"""This module's name, as ``python -m`` runs it (the supervisor, the tests, bench)."""

logger = logging.getLogger(__name__)


class _JsonLines(logging.Formatter):
    def __init__(self, worker: int | None = None) -> None:
        super().__init__()
        self.worker = worker

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": self.formatTime(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if self.worker is not None:  # several processes write the same log
            entry["worker"] = self.worker
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def _configure_logging(level: str, worker: int | None = None) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonLines(worker))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def serve(
    app: web.Application,
    host: str,
    port: int,
    *,
    tls: tuple[Path, Path] | None = None,
) -> None:
    """Serve ``app`` in this one process until SIGINT or SIGTERM (aiohttp handles both).

    ``tls``: (certificate, key) to serve HTTPS with.
    """
    web.run_app(
        app,
        host=host,
        port=port,
        ssl_context=server_context(*tls) if tls else None,
        access_log_class=AccessLogger,
        access_log=logging.getLogger("dicomweb.access"),
        print=None,
        handle_signals=True,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, build the gateway for an archive home, serve it."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__)
    parser.add_argument("--home", type=Path, default=None, help="archive home [VNA_HOME, ./var]")
    parser.add_argument("--host", default=None, help="listen address [settings.http_host]")
    parser.add_argument("--port", type=int, default=None, help="listen port [settings.http_port]")
    parser.add_argument("--public-url", default=None, help="base URL clients use; token issuer")
    parser.add_argument(
        "--cors-origin", action="append", default=None, help="allowed origin (repeat) [*]"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="processes sharing the port; 0: min(CPUs, 4) [gateway.workers]",
    )
    parser.add_argument(
        "--parent", type=int, default=None, help="stop when the process with this pid ends"
    )
    args = parser.parse_args(argv)
    if args.workers is not None and not 0 <= args.workers <= 64:
        parser.error("--workers is 0 (automatic) to 64")
    if args.parent is not None:
        die_with_parent(args.parent)
    restrict_umask()  # STOW spool files, metrics files, a generated key: the owner's only
    settings = load_settings(args.home)
    _configure_logging(settings.log_level)
    host = args.host or settings.http_host
    port = args.port or settings.http_port
    count = resolve_workers(
        settings.gateway.workers if args.workers is None else args.workers, usable_cpus()
    )
    shared_metrics = str(metrics_dir(settings, port))
    if count > 1 and os.environ.get(MULTIPROC_ENV) != shared_metrics:
        # prometheus_client chooses multiprocess mode when it is first imported, and this
        # module has imported it: run again (same pid) with the variable set, so the
        # arbiter and the workers it forks count into the files /metrics merges
        env = dict(os.environ, **{MULTIPROC_ENV: shared_metrics})
        os.execve(sys.executable, [sys.executable, "-m", MODULE, *argv], env)  # noqa: S606
    overrides: dict[str, object] = {}
    if args.public_url or not settings.gateway.public_url:
        scheme = "https" if settings.gateway.tls else "http"
        overrides["public_url"] = args.public_url or f"{scheme}://{host}:{port}"
    if args.cors_origin:
        overrides["cors_origins"] = tuple(args.cors_origin)
    gateway = settings.gateway.model_copy(update=overrides)
    # made here, before any worker: the workers only read the pair
    tls = tls_files(settings, gateway, host)
    if count == 1:
        serve(create_app(settings, gateway), host, port, tls=tls)
        return 0
    # prometheus_client writes this process's (zero) counters there at once
    Path(shared_metrics).mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        logger.info("preparing the archive home before starting %d gateway workers", count)
        prepare_home_once(settings, gateway)
    except VnaError as exc:
        logger.error("%s", exc)
        return 1
    server = GatewayServer(
        settings,
        gateway,
        host,
        port,
        count,
        tls=tls,
        log_level=settings.log_level,
        on_worker=lambda number: _configure_logging(settings.log_level, number),
    )
    server.run()  # gunicorn's arbiter ends the process with its exit code
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
