"""The gateway's worker processes: count, restart budget, parent loop, one-time preparation
(dicomweb/operations/workers.py) and the metrics' multiprocess guard."""

from __future__ import annotations

import fcntl
import sqlite3
import sys
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from compose.gateway import MODULE
from compose.settings import load_settings
from dicomweb.operations.metrics import GatewayMetrics
from dicomweb.operations.workers import (
    AUTO_MAX,
    RestartBudget,
    WorkerPlan,
    plan_for,
    prepare_home_once,
    resolve_workers,
    run_workers,
)
from dicomweb.settings import GatewaySettings
from security.errors import VnaError
from viewer.api import ViewerUrls, viewer_client


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


def test_plan_names_everything_resolved(tmp_path: Path) -> None:
    settings = load_settings(tmp_path, http_port=9999)
    gateway = settings.gateway.model_copy(
        update={"public_url": "https://pacs.example/", "cors_origins": ("https://a", "https://b")}
    )
    plan = plan_for(settings, gateway, "0.0.0.0", 8123, 3, main_module=MODULE)  # noqa: S104
    argv = list(plan.argv)
    assert argv[:3] == [sys.executable, "-m", "compose.gateway"]
    assert argv[argv.index("--home") + 1] == str(settings.home)
    assert argv[argv.index("--port") + 1] == "8123"
    assert argv[argv.index("--host") + 1] == "0.0.0.0"  # noqa: S104
    assert argv[argv.index("--public-url") + 1] == "https://pacs.example"
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "--cors-origin"] == [
        "https://a",
        "https://b",
    ]
    assert plan.state_dir == settings.run_dir / "gateway-8123"
    assert plan.count == 3


def _plan(tmp_path: Path, code: str, count: int = 2) -> WorkerPlan:
    # a stand-in worker: any program taking (and ignoring) --worker K --parent PID
    return WorkerPlan(count, (sys.executable, "-c", code), tmp_path / "state")


def test_workers_that_keep_dying_end_the_parent(tmp_path: Path) -> None:
    started = time.monotonic()
    code = run_workers(_plan(tmp_path, "raise SystemExit(3)"), RestartBudget(limit=3, window=60))
    assert code == 1
    assert time.monotonic() - started < 30
    # the metrics directory was made for the workers
    assert (tmp_path / "state" / "metrics").is_dir()


def test_a_second_parent_on_the_same_port_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    with open(state / "lock", "a+") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(VnaError, match="another gateway serves this port"):
            run_workers(_plan(tmp_path, "pass"))


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
