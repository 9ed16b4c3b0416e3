"""The hash-chained audit log: appends verify; any edit or deletion is found at its row."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest
from sqlalchemy import create_engine, text

from security.audit import (
    EVENTS,
    AuditEvent,
    AuditLog,
    ChainBreak,
    EventAction,
    EventOutcome,
    EventType,
    SyslogForwarder,
    dicom_xml,
    fhir_audit_event,
    syslog_message,
)
from tests.catalogdb import migrated


@pytest.fixture
def log(tmp_path: Path) -> AuditLog:
    audit = AuditLog(create_engine(migrated(f"sqlite:///{tmp_path / 'a.db'}")), b"k" * 32)
    for i in range(5):
        audit.append(
            AuditEvent(
                "query", "E", 0, f"client-{i}", "Hospital A", "10.0.0.1", study_uid=f"1.2.{i}"
            )
        )
    return audit


def test_an_intact_log_verifies(log: AuditLog) -> None:
    assert log.verify() is None
    assert [seq for seq, _ in log.records()] == [1, 2, 3, 4, 5]


def test_an_edited_row_breaks_the_chain_there(log: AuditLog) -> None:
    with log.engine.begin() as conn:
        body = json.loads(
            conn.execute(text("SELECT body FROM audit_events WHERE seq = 3")).scalar_one()
        )
        body["user"] = "somebody-else"
        conn.execute(
            text("UPDATE audit_events SET body = :b WHERE seq = 3"),
            {"b": json.dumps(body, sort_keys=True, separators=(",", ":"))},
        )
    assert log.verify() == ChainBreak(3, "record altered or chain broken here")


@pytest.mark.parametrize("seq", [1, 3])
def test_a_deleted_row_is_found(log: AuditLog, seq: int) -> None:
    with log.engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_events WHERE seq = :s"), {"s": seq})
    broken = log.verify()
    assert broken is not None and broken.seq == seq


def test_deleting_the_last_rows_is_found(log: AuditLog) -> None:
    with log.engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_events WHERE seq >= 4"))
    broken = log.verify()
    assert broken is not None and "end" in broken.reason


def test_another_key_does_not_verify(log: AuditLog) -> None:
    assert AuditLog(log.engine, b"x" * 32).verify() == ChainBreak(
        1, "record altered or chain broken here"
    )


def test_unknown_events_are_refused(log: AuditLog) -> None:
    with pytest.raises(ValueError, match="unknown audit event"):
        log.append(AuditEvent("coffee", "E", 0, "me"))


def test_exports() -> None:
    event = AuditEvent(
        "instances-transferred",
        "R",
        0,
        "client-1",
        "Hospital A",
        "10.0.0.2",
        study_uid="1.2.3",
        patient="P1",
    )
    root = ET.fromstring(dicom_xml(event))  # noqa: S314 - our own output
    assert root.tag == "AuditMessage"
    assert root.find("EventIdentification/EventID").get("csd-code") == "110104"  # type: ignore[union-attr]
    ids = [p.get("ParticipantObjectID") for p in root.findall("ParticipantObjectIdentification")]
    assert ids == ["1.2.3", "P1"]
    fhir = fhir_audit_event(7, event)
    assert fhir["resourceType"] == "AuditEvent" and fhir["action"] == "R"
    assert fhir["type"]["code"] == "110104"  # type: ignore[index]


def test_records_page_after_a_sequence_number(log: AuditLog) -> None:
    assert [seq for seq, _ in log.records(after=2, limit=2)] == [3, 4]
    assert list(log.records(after=5)) == []


def test_syslog_message_is_rfc5424_with_the_dicom_audit_message() -> None:
    event = AuditEvent("query", "E", 4, "client-a", "Hospital A", "10.0.0.9", time=0.0)
    message = syslog_message(7, event, "vna-host")
    head, _, body = message.partition(b"\xef\xbb\xbf")
    # PRI = facility 10 (authpriv) * 8 + severity 4 (a failure is a warning)
    assert head == (
        b'<84>1 1970-01-01T00:00:00.000Z vna-host vna - DICOM+RFC3881 [vna@32473 seq="7"] '
    )
    root = ET.fromstring(body)  # noqa: S314 - our own output
    assert root.tag == "AuditMessage"
    assert root.find("EventIdentification/EventID").get("csd-code") == "110112"  # type: ignore[union-attr]


def test_forwarder_sends_each_record_over_udp(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as collector:
        collector.bind(("127.0.0.1", 0))
        collector.settimeout(10)
        port = collector.getsockname()[1]
        audit = AuditLog(
            create_engine(migrated(f"sqlite:///{tmp_path / 'a.db'}")),
            b"k" * 32,
            SyslogForwarder(f"udp://127.0.0.1:{port}"),
        )
        audit.append(AuditEvent("query", "E", 0, "client-a", study_uid="1.2.3"))
        datagram, _ = collector.recvfrom(65536)
    assert datagram.startswith(b"<85>1 ") and b"1.2.3" in datagram
    assert audit.verify() is None


def test_forwarder_over_tcp_uses_octet_counting(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        forwarder = SyslogForwarder(f"tcp://127.0.0.1:{port}")
        forwarder.send(1, AuditEvent("query", "E", 0, "client-a"))
        conn, _ = server.accept()
        with conn:
            conn.settimeout(10)
            data = b""
            while (
                b" " not in data
                or len(data) < int(data.split(b" ", 1)[0]) + len(data.split(b" ", 1)[0]) + 1
            ):
                chunk = conn.recv(65536)
                assert chunk
                data += chunk
    length, _, message = data.partition(b" ")
    assert int(length) == len(message) and message.startswith(b"<85>1 ")


def test_unreachable_collector_never_fails_the_append(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
    # nobody listens on ``port`` now: the record is kept, the failure only logged
    audit = AuditLog(
        create_engine(migrated(f"sqlite:///{tmp_path / 'a.db'}")),
        b"k" * 32,
        SyslogForwarder(f"tcp://127.0.0.1:{port}"),
    )
    assert audit.append(AuditEvent("query", "E", 0, "client-a")) == 1
    assert audit.verify() is None


@pytest.mark.parametrize("url", ["http://collector:514", "udp://", "collector:514"])
def test_forwarder_rejects_unusable_targets(url: str) -> None:
    with pytest.raises(ValueError, match="udp://HOST:PORT"):
        SyslogForwarder(url)


def test_every_event_type_has_its_dcm_code() -> None:
    assert {event.value for event in EventType} == set(EVENTS)


def test_typed_records_are_the_plain_records() -> None:
    """The enums write exactly what the strings and numbers wrote: the chain's MACs of
    records written before them still verify."""
    typed = AuditEvent(
        event=EventType.QUERY.value,
        action=EventAction.EXECUTE.value,
        outcome=EventOutcome.MINOR_FAILURE.value,
        user="client-a",
        time=0.0,
    )
    assert typed.canonical() == AuditEvent("query", "E", 4, "client-a", time=0.0).canonical()
    assert '"outcome":4' in typed.canonical() and '"action":"E"' in typed.canonical()
