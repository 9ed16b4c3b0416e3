"""The hash-chained audit log: appends verify; any edit or deletion is found at its row."""

from __future__ import annotations

import json
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest
from sqlalchemy import create_engine, text

from security.audit import AuditEvent, AuditLog, ChainBreak, dicom_xml, fhir_audit_event


@pytest.fixture
def log(tmp_path: Path) -> AuditLog:
    audit = AuditLog(create_engine(f"sqlite:///{tmp_path / 'a.db'}"), b"k" * 32)
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
