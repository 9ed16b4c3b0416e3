"""The gateway's worker processes under gunicorn: count, restart budget, the arbiter's
settings, workers that keep dying, one bind per port, one-time preparation
(compose/gateway_workers.py) and the metrics' multiprocess guard."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from compose.gateway import MODULE
from compose.gateway_workers import (
    AUTO_MAX,
    KEEPALIVE,
    START_TIMEOUT,
    STOP_GRACE,
    GatewayServer,
    RestartBudget,
    metrics_dir,
    prepare_home_once,
    resolve_workers,
)
from compose.settings import load_settings
from dicomweb.operations.metrics import GatewayMetrics
from dicomweb.settings import GatewaySettings
from viewer.api import ViewerUrls, viewer_client

PROJECT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("setting", "cpus", "expected"),
    [
        (0, 2, 2),
        (0, 16, AUTO_MAX),
        (0, 1, 1),
        (0, None, 1),  # os.cpu_count() may not know
        (1, 16, 1),
        (6, 2, 6),  # an explicit number is taken as given
    ],
)
def test_resolve_workers(setting: int, cpus: int | None, expected: int) -> None:
    assert resolve_workers(setting, cpus) == expected


def test_resolve_workers_refuses_negative() -> None:
    with pytest.raises(ValueError, match="automatic"):
        resolve_workers(-1, 4)


def test_workers_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings(tmp_path).gateway.workers == 0  # automatic
    monkeypatch.setenv("VNA_GATEWAY__WORKERS", "3")
    assert load_settings(tmp_path).gateway.workers == 3
    for bad in (-1, 65):
        with pytest.raises(ValidationError):
            GatewaySettings(workers=bad)


def test_restart_budget_allows_limit_restarts_per_window() -> None:
    budget = RestartBudget()  # the default: 5 in 5 minutes, like Orthanc's in the supervisor
    assert [budget.allow(t) for t in (0.0, 1.0, 2.0, 3.0, 4.0)] == [True] * 5
    assert budget.allow(5.0) is False  # the sixth within 300 s

    budget = RestartBudget(limit=2, window=10.0)
    assert budget.allow(0.0) is True
    assert budget.allow(5.0) is True
    assert budget.allow(10.5) is True  # the one at 0.0 is older than the window
    assert budget.allow(11.0) is False  # 5.0, 10.5 and 11.0 within 10 s


def test_server_settings_name_everything_resolved(tmp_path: Path) -> None:
    settings = load_settings(tmp_path, http_port=9999)
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    server = GatewayServer(
        settings,
        settings.gateway,
        "0.0.0.0",  # noqa: S104
        8123,
        3,
        tls=(cert, key),  # noqa: S104
    )
    cfg = server.cfg
    assert cfg.bind == ["0.0.0.0:8123"]
    assert cfg.workers == 3
    assert cfg.worker_class_str == "compose.gateway_workers._Worker"
    assert cfg.graceful_timeout == STOP_GRACE
    assert cfg.timeout == START_TIMEOUT
    assert cfg.keepalive == KEEPALIVE  # aiohttp's, not gunicorn's 2 s
    assert (cfg.certfile, cfg.keyfile) == (str(cert), str(key))
    assert cfg.umask == 0o077
    assert cfg.control_socket_disable
    assert server.metrics_dir == settings.run_dir / "gateway-8123" / "metrics"
    assert metrics_dir(settings, 8123) == server.metrics_dir
    ipv6 = GatewayServer(settings, settings.gateway, "::1", 8123, 2)
    assert ipv6.cfg.bind == ["[::1]:8123"]
    assert ipv6.cfg.certfile is None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# a stand-in application whose workers start, then die 0.3 s later, again and again
_DYING = textwrap.dedent(
    """
    import asyncio, os, sys
    from pathlib import Path
    from aiohttp import web
    from compose.gateway_workers import GatewayServer, RestartBudget
    from compose.settings import load_settings

    class Dying(GatewayServer):
        def load(self):
            async def runner():
                async def die(_app):
                    asyncio.get_running_loop().call_later(0.3, os._exit, 7)
                app = web.Application()
                app.on_startup.append(die)
                return web.AppRunner(app)
            return runner

    settings = load_settings(Path(sys.argv[1]))
    budget = RestartBudget(limit=3, window=60)
    Dying(settings, settings.gateway, "127.0.0.1", int(sys.argv[2]), 2, budget=budget).run()
    """
)


def test_workers_that_keep_dying_end_the_parent(tmp_path: Path) -> None:
    started = time.monotonic()
    home = tmp_path / "home"
    run = subprocess.run(
        [sys.executable, "-c", _DYING, str(home), str(_free_port())],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=PROJECT,
        env=dict(os.environ, VNA_HOME=str(home)),
    )
    assert run.returncode == 1, run.stderr
    assert time.monotonic() - started < 30
    assert "restarting it" in run.stderr
    assert "giving up" in run.stderr
    # the metrics directory was made for the workers
    assert (home / "run" / f"gateway-{run.args[-1]}" / "metrics").is_dir()


def test_a_second_gateway_on_the_same_port_is_refused(tmp_path: Path) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = int(held.getsockname()[1])
        run = subprocess.run(
            [sys.executable, "-m", MODULE, "--home", str(tmp_path / "home")]
            + ["--host", "127.0.0.1", "--port", str(port), "--workers", "2"],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=PROJECT,
            env=dict(os.environ, VNA_GATEWAY__TLS="false"),
        )
    assert run.returncode != 0
    assert "in use" in run.stderr, run.stderr


def test_prepare_home_once_does_the_first_start_writes(tmp_path: Path) -> None:
    settings = load_settings(tmp_path / "home")
    settings.run_dir.mkdir(parents=True)
    prepare_home_once(settings, settings.gateway)
    assert (settings.keys_dir / "issuer-signing.pem").exists()
    assert (settings.keys_dir / "audit.key").exists()
    expected = viewer_client(ViewerUrls.for_gateway(settings.gateway.resolved_public_url(settings)))
    with sqlite3.connect(settings.home / "catalog.db") as db:
        clients = [row[0] for row in db.execute("SELECT client_id FROM oauth_clients")]
        head = db.execute("SELECT records FROM audit_head").fetchall()
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
    assert clients == [expected.client_id]
    assert head == [(0,)]
    assert {"grants", "share_links", "users", "oauth_codes"} <= tables


def test_metrics_refuse_a_directory_prometheus_does_not_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    with pytest.raises(RuntimeError, match="PROMETHEUS_MULTIPROC_DIR"):
        GatewayMetrics(1, tmp_path)


def test_single_process_metrics_are_unchanged() -> None:
    metrics = GatewayMetrics()
    metrics.count_request("/healthz", "GET", 200, 0.01)
    text = metrics.exposition().decode()
    assert 'vna_gateway_requests_total{method="GET",route="/healthz",status="200"} 1.0' in text
    assert "vna_gateway_worker_requests" not in text
