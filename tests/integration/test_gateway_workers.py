"""The gateway with two worker processes on one port (gateway.workers, gunicorn's aiohttp
worker, compose/gateway_workers.py): requests spread over both and all succeed, /metrics
counts for the whole gateway, the audit chain stays intact, a killed worker is replaced,
SIGTERM and `vna down` leave no process, nor does a supervisor killed with SIGKILL."""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from compose.gateway_workers import STOP_GRACE
from security.issuer import EmbeddedIssuer
from synthetic import StudySpec, write_study
from tests.integration.harness import (
    INSTITUTIONS,
    Archive,
    GatewayProcess,
    start_gateway,
    wait_until,
)

SPEC = StudySpec(series=2, slices=3, rows=64, columns=64, patient_id="WK0001", seed=47)
N_INSTANCES = SPEC.series * SPEC.slices
DICOM_ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'


def children(pid: int) -> set[int]:
    """Live child processes of ``pid`` (from /proc, zombies excluded)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # exited meanwhile
            continue
        # "pid (comm) state ppid ...": comm may hold spaces, so split after its ")"
        state, ppid = text.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == pid and state != "Z":
            found.add(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def listening(pid: int, port: int) -> bool:
    """Whether process ``pid`` holds a socket listening on TCP ``port`` (from /proc)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                local, state, inode = fields[1], fields[3], fields[9]
                if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                    inodes.add(f"socket:[{inode}]")
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False
    held = set()
    for fd in fds:
        with contextlib.suppress(OSError):
            held.add(os.readlink(fd))
    return bool(inodes & held)


def serving(gateway: GatewayProcess, count: int) -> bool:
    """``count`` workers, every one of them listening (a worker still importing would
    leave every connection to the others)."""
    pids = children(gateway.proc.pid)
    port = int(gateway.url.rsplit(":", 1)[1])
    return len(pids) == count and all(listening(pid, port) for pid in pids)


def metric_samples(url: str, name: str) -> list[tuple[dict[str, str], float]]:
    text = requests.get(f"{url}/metrics", timeout=10).text
    return [
        (dict(sample.labels), sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]


class Workers:
    def __init__(self, gateway: GatewayProcess, archive: Archive, study_uid: str) -> None:
        self.gateway = gateway
        self.url = gateway.url
        self.study_uid = study_uid
        issuer = EmbeddedIssuer.open_or_create(
            archive.home / "keys", gateway.url, f"{gateway.url}/dicom-web"
        )
        token = issuer.mint(subject="ris-a", institution="Hospital A", scopes=["dicom.read"])
        self.headers = {"Authorization": f"Bearer {token}"}

    def qido(self) -> requests.Response:
        # a new connection per request: whichever worker accepts it serves it
        return requests.get(
            f"{self.url}/dicom-web/studies",
            params={"PatientID": SPEC.patient_id},
            headers=self.headers,
            timeout=60,
        )

    def wado(self) -> requests.Response:
        return requests.get(
            f"{self.url}/dicom-web/studies/{self.study_uid}",
            headers={**self.headers, "Accept": DICOM_ACCEPT},
            timeout=60,
        )


@pytest.fixture(scope="module")
def workers(archive: Archive, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workers]:
    files = write_study(SPEC, tmp_path_factory.mktemp("workers-study"))
    sent = archive.storescu("HOSPA", *files)
    assert sent.returncode == 0, sent.stderr
    study_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    with start_gateway(archive, "workers", workers=2) as gateway:
        wait_until(lambda: serving(gateway, 2), "two gateway workers listening")
        gw = Workers(gateway, archive, study_uid)

        def indexed() -> bool:
            answer = gw.qido()
            return answer.ok and len(answer.json()) == 1

        wait_until(indexed, "the catalog to index the study")
        yield gw


def _audited_request_ids(home: Path) -> list[str]:
    with sqlite3.connect(home / "catalog.db") as db:
        bodies = [row[0] for row in db.execute("SELECT body FROM audit_events")]
    return [json.loads(body).get("request_id") for body in bodies]


def test_concurrent_requests_use_both_workers_and_keep_the_audit_chain(
    workers: Workers, archive: Archive
) -> None:
    before = {
        labels["worker"]: value
        for labels, value in metric_samples(workers.url, "vna_gateway_worker_requests_total")
    }
    searches_before = sum(
        value
        for labels, value in metric_samples(workers.url, "vna_gateway_requests_total")
        if labels["route"] == "/dicom-web/studies" and labels["status"] == "200"
    )
    calls = [workers.qido, workers.wado] * 40
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda call: call(), calls))

    assert [a.status_code for a in answers] == [200] * len(calls)
    for answer in answers[0::2]:
        assert [s["0020000D"]["Value"][0] for s in answer.json()] == [workers.study_uid]
    for answer in answers[1::2]:
        assert answer.content.count(b"DICM") == N_INSTANCES

    # served by both processes: each worker counts its own requests, and /metrics (from
    # whichever worker answers it) merges every worker's counts
    after = {
        labels["worker"]: value
        for labels, value in metric_samples(workers.url, "vna_gateway_worker_requests_total")
    }
    assert set(after) == {"1", "2"}
    for worker in ("1", "2"):
        assert after[worker] > before.get(worker, 0.0), after
    searches = sum(
        value
        for labels, value in metric_samples(workers.url, "vna_gateway_requests_total")
        if labels["route"] == "/dicom-web/studies" and labels["status"] == "200"
    )
    assert searches - searches_before == len(calls) // 2

    # every request was audited exactly once, by whichever process served it, and the
    # chain the processes appended to concurrently verifies
    audited = _audited_request_ids(archive.home)
    for answer in answers:
        assert audited.count(answer.headers["X-Request-Id"]) == 1
    verified = archive.vna("audit", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_a_killed_worker_is_replaced(workers: Workers) -> None:
    parent = workers.gateway.proc.pid
    before = children(parent)
    assert len(before) == 2
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    wait_until(
        lambda: victim not in children(parent) and serving(workers.gateway, 2),
        "a replacement worker listening",
        deadline=60,
    )
    assert workers.gateway.proc.poll() is None
    answers = [workers.qido() for _ in range(20)]
    assert [a.status_code for a in answers] == [200] * 20
    log = workers.gateway.log.read_text()
    assert f"(pid {victim}) exited; restarting it" in log
    assert f"Worker (pid:{victim}) was sent SIGKILL" in log


def test_sigterm_stops_every_worker(archive: Archive) -> None:
    with start_gateway(archive, "workers-stop", workers=2) as gateway:
        wait_until(lambda: serving(gateway, 2), "two gateway workers listening")
        pids = children(gateway.proc.pid)
        started = time.monotonic()
        gateway.proc.send_signal(signal.SIGTERM)
        assert gateway.proc.wait(timeout=STOP_GRACE + 20) == 0
        assert time.monotonic() - started < STOP_GRACE
        assert [pid for pid in pids if alive(pid)] == []
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{gateway.url}/healthz", timeout=5)


def test_one_worker_is_one_process(archive: Archive) -> None:
    with start_gateway(archive, "workers-one", workers=1) as gateway:
        assert children(gateway.proc.pid) == set()
        text = requests.get(f"{gateway.url}/metrics", timeout=10).text
        assert "vna_gateway_requests_total" in text
        assert "vna_gateway_worker_requests" not in text
        assert not (archive.home / "run" / f"gateway-{gateway.url.rsplit(':', 1)[1]}").exists()


def test_vna_down_stops_the_gateway_workers(tmp_path: Path) -> None:
    arch = Archive(tmp_path / "home", gateway_workers=2)
    arch.write_config(INSTITUTIONS)
    arch.up()
    try:
        supervisor = int((arch.home / "run" / "vna.pid").read_text())

        def gateway_parent() -> int | None:
            for pid in children(supervisor):
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                if b"compose.gateway" in cmdline:
                    return pid
            return None

        wait_until(
            lambda: (p := gateway_parent()) is not None and len(children(p)) == 2,
            "the supervised gateway's two workers",
        )
        parent = gateway_parent()
        assert parent is not None
        pids = {parent, *children(parent)}
        url = f"http://127.0.0.1:{arch.http_port}/healthz"
        wait_until(lambda: requests.get(url, timeout=5).ok, "the supervised gateway")
    finally:
        arch.down()
    assert [pid for pid in pids if alive(pid)] == []


def test_a_killed_supervisor_takes_the_indexer_and_the_gateway_along(tmp_path: Path) -> None:
    arch = Archive(tmp_path / "home", gateway_workers=2)
    arch.write_config(INSTITUTIONS)
    arch.up()
    supervisor = int((arch.home / "run" / "vna.pid").read_text())
    orthanc = int(json.loads((arch.home / "run" / "ready").read_text())["pid"])

    def helper(module: bytes) -> int | None:
        for pid in children(supervisor):
            if module in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0"):
                return pid
        return None

    try:
        wait_until(
            lambda: (p := helper(b"compose.gateway")) is not None and len(children(p)) == 2,
            "the supervised gateway's two workers",
        )
        gateway, indexer = helper(b"compose.gateway"), helper(b"compose.indexer")
        assert gateway is not None and indexer is not None
        pids = {gateway, indexer, *children(gateway)}
        os.kill(supervisor, signal.SIGKILL)
        wait_until(
            lambda: [pid for pid in pids if alive(pid)] == [],
            "the indexer, the gateway and its workers to end with the supervisor",
            deadline=15,
        )
    finally:
        # Orthanc is not tied to the supervisor (vna up recovers after it): stop it here
        with contextlib.suppress(ProcessLookupError):
            os.kill(orthanc, signal.SIGTERM)
        with contextlib.suppress(AssertionError):
            wait_until(lambda: not alive(orthanc), "Orthanc to stop", deadline=60)
        with contextlib.suppress(ProcessLookupError):
            os.kill(orthanc, signal.SIGKILL)
        arch.down()
