"""The audit chain's anchor outside the database: a cut tail is found even when the head
row was rewound to match, and appenders in several processes keep it consistent."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from security.audit import ANCHOR_FILE, AuditEvent, AuditLog, read_anchor, syslog_message
from tests.catalogdb import migrated


def _engine(path: Path) -> Engine:
    return create_engine(migrated(f"sqlite:///{path}"), connect_args={"timeout": 60})


def _event(i: int) -> AuditEvent:
    return AuditEvent("query", "E", 0, f"client-{i}", "Hospital A", "10.0.0.1", study_uid=f"1.{i}")


@pytest.fixture
def log(tmp_path: Path) -> AuditLog:
    audit = AuditLog.open(_engine(tmp_path / "catalog.db"), tmp_path / "keys")
    for i in range(6):
        audit.append(_event(i))
    return audit


def _macs(log: AuditLog) -> dict[int, bytes]:
    with log.engine.connect() as conn:
        return {
            int(seq): bytes(mac)
            for seq, mac in conn.execute(text("SELECT seq, mac FROM audit_events"))
        }


def test_every_append_is_anchored_outside_the_database(log: AuditLog) -> None:
    assert log.anchor == log.anchor.parent / ANCHOR_FILE
    assert read_anchor(log.anchor) == _macs(log)
    assert log.anchor.stat().st_mode & 0o777 == 0o600
    assert log.verify() is None


def test_cut_tail_with_the_head_rewritten_is_named(log: AuditLog) -> None:
    macs = _macs(log)
    with log.engine.begin() as conn:  # what someone with write access to the catalog can do
        conn.execute(text("DELETE FROM audit_events WHERE seq > 4"))
        conn.execute(text("UPDATE audit_head SET records = 4, mac = :m"), {"m": macs[4]})
    # the chain alone is consistent again: only the anchor tells
    assert AuditLog(log.engine, log.key).verify() is None
    broken = log.verify()
    assert broken is not None and broken.seq == 5
    assert "at least 6 records" in broken.reason and "the log has 4" in broken.reason
    assert macs[6].hex() in broken.reason


def test_emptied_log_reset_to_genesis_is_named(log: AuditLog) -> None:
    last = _macs(log)[6]
    with log.engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_events"))
        conn.execute(text("UPDATE audit_head SET records = 0, mac = :m"), {"m": b"\0" * 32})
    assert AuditLog(log.engine, log.key).verify() is None
    broken = log.verify()
    assert broken is not None and broken.seq == 1
    assert "at least 6 records" in broken.reason and "the log has 0" in broken.reason
    assert last.hex() in broken.reason


def test_a_tail_rewritten_with_the_key_differs_from_the_anchor(log: AuditLog) -> None:
    # even the key holder cannot replace anchored records without the anchor noticing
    macs = _macs(log)
    with log.engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_events WHERE seq > 4"))
        conn.execute(text("UPDATE audit_head SET records = 4, mac = :m"), {"m": macs[4]})
    forger = AuditLog(log.engine, log.key)
    forger.append(_event(100))
    forger.append(_event(101))
    broken = log.verify()
    assert broken is not None and broken.seq == 5 and "differs from the anchor" in broken.reason


def _append_many(db: str, keys: str, worker: int, count: int) -> None:
    audit = AuditLog.open(_engine(Path(db)), Path(keys))
    for i in range(count):
        audit.append(_event(worker * 1000 + i))


def test_concurrent_appenders_in_several_processes_verify(tmp_path: Path) -> None:
    db, keys = tmp_path / "catalog.db", tmp_path / "keys"
    AuditLog.open(_engine(db), keys)  # the head row and key, as the gateway's parent does
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_append_many, args=(str(db), str(keys), w, 40)) for w in range(4)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(300)
        assert proc.exitcode == 0
    log = AuditLog.open(_engine(db), keys)
    assert log.verify() is None
    anchored = read_anchor(log.anchor)  # type: ignore[arg-type]
    assert sorted(anchored) == list(range(1, 161))
    assert anchored == _macs(log)


def test_syslog_copy_carries_the_chain_mac() -> None:
    mac = bytes(range(32))
    message = syslog_message(7, _event(7), "vna-host", mac=mac)
    assert f'[vna@32473 seq="7" mac="{mac.hex()}"]'.encode() in message
