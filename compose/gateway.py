"""Run the gateway: ``python -m compose.gateway --home DIR [--host H] [--port P] [--workers N]``.

The gateway's composition root: the entry the supervisor (``deploy/supervisor.py``)
starts as a second supervised process next to Orthanc. :func:`main` takes an argument
list and returns an exit code; :func:`serve` runs a built application until
SIGINT/SIGTERM. With more than one worker (``gateway.workers``, ``--workers``) this
process becomes the parent of ``python -m compose.gateway --worker K`` processes sharing
the port (``dicomweb/operations/workers.py``).
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

from compose.settings import load_settings
from dicomweb.api import (
    MULTIPROC_ENV,
    AccessLogger,
    GatewayMetrics,
    create_app,
    die_with_parent,
    resolve_workers,
    tls_files,
    usable_cpus,
    workers_cli,
)
from security.errors import VnaError
from security.homefiles import restrict_umask
from security.tls import server_context

__all__ = ["MODULE", "main", "serve"]

MODULE = "compose.gateway"
"""This module's name, as ``python -m`` runs it (the supervisor, each worker)."""


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
    reuse_port: bool = False,
    tls: tuple[Path, Path] | None = None,
) -> None:
    """Serve ``app`` until SIGINT or SIGTERM (aiohttp handles both).

    ``reuse_port``: bind with SO_REUSEPORT, for worker processes sharing the port.
    ``tls``: (certificate, key) to serve HTTPS with; each process loads its own context.
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
        reuse_port=reuse_port or None,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, build the gateway for an archive home, serve it."""
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
    # internal: a worker process started by the parent (dicomweb/operations/workers.py)
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--parent", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.workers is not None and not 0 <= args.workers <= 64:
        parser.error("--workers is 0 (automatic) to 64")
    restrict_umask()  # STOW spool files, metrics files, a generated key: the owner's only
    settings = load_settings(args.home)
    _configure_logging(settings.log_level, args.worker)
    host = args.host or settings.http_host
    port = args.port or settings.http_port
    overrides: dict[str, object] = {}
    if args.public_url or not settings.gateway.public_url:
        scheme = "https" if settings.gateway.tls else "http"
        overrides["public_url"] = args.public_url or f"{scheme}://{host}:{port}"
    if args.cors_origin:
        overrides["cors_origins"] = tuple(args.cors_origin)
    gateway = settings.gateway.model_copy(update=overrides)
    # made here, in the parent, before any worker: the workers only read the pair
    tls = tls_files(settings, gateway, host)
    if args.worker is not None:
        die_with_parent(args.parent if args.parent is not None else os.getppid())
        metrics = GatewayMetrics(args.worker, Path(os.environ[MULTIPROC_ENV]))
        serve(create_app(settings, gateway, metrics=metrics), host, port, reuse_port=True, tls=tls)
        return 0
    count = resolve_workers(
        gateway.workers if args.workers is None else args.workers, usable_cpus()
    )
    if count > 1:
        try:
            return workers_cli(settings, gateway, host, port, count, main_module=MODULE)
        except VnaError as exc:
            logging.getLogger(__name__).error("%s", exc)
            return 1
    serve(create_app(settings, gateway), host, port, tls=tls)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
