"""What an archive exposes: file modes under the home, Orthanc's internal HTTP port, the
gateway's HTTPS and forwarded headers, the audit chain's anchor, response headers."""

from __future__ import annotations

import base64
import http.client
import json
import os
import sqlite3
import stat
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
from sqlalchemy import create_engine

from security.audit import AuditLog
from synthetic import StudySpec, write_study
from tests.integration.harness import INSTITUTIONS, Archive, start_gateway, wait_until


@contextmanager
def running(arch: Archive) -> Iterator[Archive]:
    arch.up()
    try:
        yield arch
    finally:
        arch.down()


@contextmanager
def umask(mask: int) -> Iterator[None]:
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def open_to_others(home: Path) -> list[str]:
    """Every path under ``home`` (itself included) that group or others may use."""
    found = []
    for root, dirs, files in os.walk(home):
        for path in [Path(root), *(Path(root, n) for n in dirs + files)]:
            info = path.lstat()
            if not stat.S_ISLNK(info.st_mode) and info.st_mode & 0o077:
                found.append(f"{path} {stat.S_IMODE(info.st_mode):o}")
    return sorted(set(found))


# --- item 10: every file under the home 0600/0700 whatever the umask --------------------


def test_home_is_private_whatever_the_umask(tmp_path: Path) -> None:
    arch = Archive(tmp_path / "home")
    with umask(0o022):  # what an operator's shell usually has
        arch.write_config(INSTITUTIONS)
        (arch.home / "log").mkdir(mode=0o755)  # as older versions left a home
        (arch.home / "notes.txt").write_text("left by hand")
        os.chmod(arch.home, 0o755)  # noqa: S103 - loosened on purpose
        assert open_to_others(arch.home)  # the test starts from a loose home
        study = write_study(StudySpec(series=1, slices=2, seed=3), tmp_path / "dcm")
        with running(arch):
            sent = arch.storescu("HOSPA", *study)
            assert sent.returncode == 0, sent.stderr
            arch.stats()  # stored, digested and indexed: the catalog, blobs, Orthanc's index
            assert (arch.home / "catalog.db").exists()
            assert open_to_others(arch.home) == []
            assert "EXPOSED" not in arch.vna("status").stdout

            os.chmod(arch.home / "catalog.db", 0o644)
            os.chmod(arch.home / "log", 0o755)  # noqa: S103 - loosened on purpose
            assert "EXPOSED" in arch.vna("status").stdout
            state = json.loads(arch.vna("status", "--json").stdout)
            assert sorted(state["exposed"]) == [
                f"{arch.home / 'catalog.db'} is 0644 (want 0600)",
                f"{arch.home / 'log'} is 0755 (want 0700)",
            ]
        fsck = arch.vna("fsck", "--json", check=False)
        assert fsck.returncode == 1
        report = json.loads(fsck.stdout)
        assert report["ok"] is False
        named = {line.split(" is ")[0] for line in report["exposed_paths"]}
        # SQLite gives a new WAL and shared-memory file the database file's mode
        wal = {str(arch.home / "catalog.db-wal"), str(arch.home / "catalog.db-shm")}
        assert named - wal == {str(arch.home / "catalog.db"), str(arch.home / "log")}
        with running(arch):  # `vna up` makes a loosened home private again
            assert open_to_others(arch.home) == []
        assert arch.vna("fsck").returncode == 0


# --- item 11: Orthanc's HTTP port answers 127.0.0.1 only ---------------------------------


def _local_addresses() -> list[str]:
    """This machine's non-loopback IPv4 addresses (``hostname -I``), if any."""
    out = subprocess.run(["hostname", "-I"], capture_output=True, text=True, check=False).stdout
    return [a for a in out.split() if ":" not in a and not a.startswith("127.")]


def _get_from(source: str, target: str, port: int, auth: tuple[str, str] | None) -> int:
    """GET /system from the local address ``source``; the status Orthanc answers."""
    conn = http.client.HTTPConnection(target, port, timeout=30, source_address=(source, 0))
    headers = {}
    if auth is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(":".join(auth).encode()).decode()
    try:
        conn.request("GET", "/system", headers=headers)
        return conn.getresponse().status
    finally:
        conn.close()


@pytest.mark.parametrize("source", ["127.0.0.9", *_local_addresses()])
def test_orthanc_http_refuses_every_client_but_127_0_0_1(archive: Archive, source: str) -> None:
    # what the README says: it listens on every interface (Orthanc 1.10/1.12 ignore
    # HttpBindAddresses), answers 401 to any client other than 127.0.0.1 before
    # authentication, even with the right credentials, and 127.0.0.1 needs them
    target = "127.0.0.1" if source.startswith("127.") else source
    assert _get_from(source, target, archive.orthanc_port, archive.auth) == 401
    assert _get_from("127.0.0.1", "127.0.0.1", archive.orthanc_port, None) == 401
    assert _get_from("127.0.0.1", "127.0.0.1", archive.orthanc_port, archive.auth) == 200


# --- item 12: HTTPS by default; forwarded headers from trusted proxies only ---------------


def test_gateway_serves_https_with_a_generated_certificate(tmp_path: Path) -> None:
    arch = Archive(tmp_path / "home", gateway_tls=True, gateway_workers=2)
    arch.write_config(INSTITUTIONS)
    started = arch.vna("up", "--detach", timeout=180)
    try:
        cert = arch.home / "keys" / "gateway-tls.crt"
        key = arch.home / "keys" / "gateway-tls.key"
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        # the fingerprint printed is the certificate's, as openssl computes it
        openssl = subprocess.run(
            ["openssl", "x509", "-in", str(cert), "-noout", "-fingerprint", "-sha256"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert openssl.strip().split("=", 1)[1] in started.stdout
        base = f"https://127.0.0.1:{arch.http_port}"
        # both workers serve TLS, verified against the generated certificate alone
        wait_until(lambda: requests.get(f"{base}/healthz", verify=cert, timeout=5).ok, "gateway")
        for _ in range(8):
            assert requests.get(f"{base}/healthz", verify=cert, timeout=10).ok
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(f"{base}/healthz", timeout=10)  # not trusted without the certificate
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(f"http://127.0.0.1:{arch.http_port}/healthz", timeout=10)
        discovery = requests.get(
            f"{base}/.well-known/openid-configuration", verify=cert, timeout=10
        ).json()
        assert discovery["issuer"] == base
        assert discovery["token_endpoint"] == f"{base}/oauth/token"
        config = requests.get(f"{base}/viewer/app-config.js", verify=cert, timeout=10)
        assert f"{base}/dicom-web" in config.text and "http://" not in config.text
    finally:
        arch.down()


def _refusal_addresses(arch: Archive, request_ids: set[str]) -> dict[str, str | None]:
    log = AuditLog.open(create_engine(f"sqlite:///{arch.home / 'catalog.db'}"), arch.home / "keys")
    return {
        str(event.request_id): event.network_address
        for _seq, event in log.records()
        if event.request_id in request_ids
    }


def _refused_from(source: str, port: int, headers: dict[str, str]) -> str:
    """A refused token from the local address ``source``; the answer's request id."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30, source_address=(source, 0))
    try:
        conn.request(
            "GET", "/dicom-web/studies", headers={"Authorization": "Bearer nope", **headers}
        )
        answer = conn.getresponse()
        assert answer.status == 401
        return str(answer.getheader("X-Request-Id"))
    finally:
        conn.close()


def test_forwarded_headers_are_believed_from_trusted_proxies_only(archive: Archive) -> None:
    env = {"VNA_GATEWAY__TRUSTED_PROXIES": '["127.0.0.1/32"]'}
    with start_gateway(archive, "proxied", env) as gateway:
        port = int(gateway.url.rsplit(":", 1)[1])
        xff = {"X-Forwarded-For": "198.51.100.1, 203.0.113.7"}
        rfc = {"Forwarded": 'for=198.51.100.2, for="[2001:db8::7]:4711";proto=https'}
        ids = {
            "trusted-xff": _refused_from("127.0.0.1", port, xff),
            "trusted-rfc7239": _refused_from("127.0.0.1", port, rfc),
            "untrusted-xff": _refused_from("127.0.0.9", port, xff),
            "untrusted-rfc7239": _refused_from("127.0.0.9", port, rfc),
        }
    seen = _refusal_addresses(archive, set(ids.values()))
    # the nearest untrusted hop: what the trusted proxy saw, not what the client claimed
    assert seen[ids["trusted-xff"]] == "203.0.113.7"
    assert seen[ids["trusted-rfc7239"]] == "2001:db8::7"
    # from a peer that is no trusted proxy the headers change nothing
    assert seen[ids["untrusted-xff"]] == "127.0.0.9"
    assert seen[ids["untrusted-rfc7239"]] == "127.0.0.9"


# --- item 13: a cut audit tail is named, even with the head rewritten --------------------


def test_audit_verify_names_a_cut_tail(tmp_path: Path) -> None:
    arch = Archive(tmp_path / "home")
    arch.write_config(INSTITUTIONS)
    with running(arch):
        for name in ("Clinic C", "Clinic D", "Clinic E"):  # audited changes, from the CLI
            arch.vna("institution", "add", name)
    assert "intact" in arch.vna("audit", "verify").stdout
    db = sqlite3.connect(arch.home / "catalog.db")
    with db:
        rows = db.execute("SELECT seq, mac FROM audit_events ORDER BY seq").fetchall()
        last_seq, last_mac = rows[-1]
        keep_seq, keep_mac = rows[-3]
        # delete the last rows and rewind the head to match: the chain alone is consistent
        db.execute("DELETE FROM audit_events WHERE seq > ?", (keep_seq,))
        db.execute("UPDATE audit_head SET records = ?, mac = ?", (keep_seq, keep_mac))
    cut = arch.vna("audit", "verify", check=False)
    assert cut.returncode == 1
    said = " ".join(cut.stdout.split())  # the console wraps long lines
    assert f"at least {last_seq} records" in said and f"has {keep_seq}" in said
    assert bytes(last_mac).hex() in said
    with db:  # empty the log and reset the head to genesis
        db.execute("DELETE FROM audit_events")
        db.execute("UPDATE audit_head SET records = 0, mac = ?", (b"\0" * 32,))
    db.close()
    emptied = arch.vna("audit", "verify", check=False)
    assert emptied.returncode == 1
    said = " ".join(emptied.stdout.split())
    assert f"at least {last_seq} records" in said and "the log has 0" in said


# --- item 14: nosniff on every answer ------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/oauth/logout", "/healthz", "/dicom-web/studies", "/no/such/route"]
)
def test_every_answer_says_nosniff(archive: Archive, path: str) -> None:
    answer = requests.get(
        f"http://127.0.0.1:{archive.http_port}{path}", timeout=30, allow_redirects=False
    )
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
