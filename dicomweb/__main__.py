"""Run the gateway: ``python -m dicomweb --home DIR [--host H] [--port P]``.

This is the entry the supervisor (``deploy/supervisor.py``) can start as a second
supervised process next to Orthanc: :func:`main` takes an argument list and returns an
exit code; :func:`serve` runs a built application until SIGINT/SIGTERM. Logs are JSON
lines on stderr; no token, Authorization header or query string is ever logged.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web

from archive.api import load_settings
from dicomweb.app import create_app
from dicomweb.middleware import AccessLogger

__all__ = ["main", "serve"]


class _JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def _configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonLines())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def serve(app: web.Application, host: str, port: int) -> None:
    """Serve ``app`` until SIGINT or SIGTERM (aiohttp handles both)."""
    web.run_app(
        app,
        host=host,
        port=port,
        access_log_class=AccessLogger,
        access_log=logging.getLogger("dicomweb.access"),
        print=None,
        handle_signals=True,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, build the gateway for an archive home, serve it."""
    parser = argparse.ArgumentParser(prog="python -m dicomweb", description=__doc__)
    parser.add_argument("--home", type=Path, default=None, help="archive home [VNA_HOME, ./var]")
    parser.add_argument("--host", default=None, help="listen address [settings.http_host]")
    parser.add_argument("--port", type=int, default=None, help="listen port [settings.http_port]")
    parser.add_argument("--public-url", default=None, help="base URL clients use; token issuer")
    parser.add_argument(
        "--cors-origin", action="append", default=None, help="allowed origin (repeat) [*]"
    )
    args = parser.parse_args(argv)
    settings = load_settings(args.home)
    _configure_logging(settings.log_level)
    host = args.host or settings.http_host
    port = args.port or settings.http_port
    overrides: dict[str, object] = {}
    if args.public_url or not settings.gateway.public_url:
        overrides["public_url"] = args.public_url or f"http://{host}:{port}"
    if args.cors_origin:
        overrides["cors_origins"] = tuple(args.cors_origin)
    gateway = settings.gateway.model_copy(update=overrides)
    serve(create_app(settings, gateway), host, port)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
