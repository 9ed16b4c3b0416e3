"""Append-only, hash-chained audit log with the fields of a DICOM audit message.

Each record carries what PS3.15 A.5 asks of an audit message: event id (a DCM code such as
110112 Query), action, date/time, outcome, the active participant (user, institution,
network address) and participant objects (study, patient). Records are chained: each
holds an HMAC-SHA256, keyed by ``keys/audit.key``, over the previous record's MAC and its
own canonical content, so an edited, inserted or deleted row breaks the chain at that row
and cannot be re-chained without the key. Nothing secret (tokens, secrets, Authorization
headers) is ever part of a record.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from xml.etree import ElementTree as ET

from sqlalchemy import Column, Float, Integer, LargeBinary, MetaData, Table, Text, select
from sqlalchemy.engine import Engine

from security.keys import write_secret_file

__all__ = ["EVENTS", "AuditEvent", "AuditLog", "ChainBreak", "dicom_xml", "fhir_audit_event"]

metadata = MetaData()

audit_events = Table(
    "audit_events",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("body", Text, nullable=False),
    Column("mac", LargeBinary(32), nullable=False),
)

# one row: the MAC of the last record, updated in the same transaction as every append;
# updating it first also serialises appenders across processes
audit_head = Table(
    "audit_head",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("records", Integer, nullable=False),
    Column("mac", LargeBinary(32), nullable=False),
    Column("updated", Float, nullable=False),
)

GENESIS = b"\0" * 32

# DCM codes (PS3.16 CID 400) for the events the archive records
EVENTS: dict[str, tuple[str, str]] = {
    "query": ("110112", "Query"),
    "instances-accessed": ("110103", "DICOM Instances Accessed"),
    "instances-transferred": ("110104", "DICOM Instances Transferred"),
    "authentication": ("110114", "User Authentication"),
    "security-alert": ("110113", "Security Alert"),
    "audit-log-used": ("110101", "Audit Log Used"),
    # a grant changes who may see a study (PS3.15 event type 110135, object security
    # attributes changed, under Security Alert)
    "grant-added": ("110113", "Security Alert"),
    "grant-revoked": ("110113", "Security Alert"),
}


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One audit record (PS3.15 A.5.1 fields)."""

    event: str  # a key of EVENTS
    action: str  # C, R, U, D or E
    outcome: int  # 0 success, 4 minor failure, 8 serious failure, 12 major failure
    user: str
    institution: str | None = None
    network_address: str | None = None
    request_id: str | None = None
    study_uid: str | None = None
    patient: str | None = None
    detail: dict[str, str] = field(default_factory=dict)
    time: float = field(default_factory=time.time)

    def canonical(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class ChainBreak:
    seq: int
    reason: str


class AuditLog:
    """The audit log in a SQL database (the catalog's, by default)."""

    def __init__(self, engine: Engine, key: bytes) -> None:
        self.engine = engine
        self.key = key
        self._lock = threading.Lock()
        metadata.create_all(engine)
        with engine.begin() as conn:
            if conn.execute(select(audit_head.c.id)).first() is None:
                conn.execute(
                    audit_head.insert().values(id=1, records=0, mac=GENESIS, updated=time.time())
                )

    @classmethod
    def open(cls, engine: Engine, keys_dir: Path) -> AuditLog:
        """The audit log of an archive home; its MAC key is created on first use (0600)."""
        key_file = keys_dir / "audit.key"
        if not key_file.exists():
            with contextlib.suppress(FileExistsError):  # a concurrent first start made it
                write_secret_file(key_file, secrets.token_bytes(32))
        return cls(engine, key_file.read_bytes())

    def _mac(self, previous: bytes, body: str) -> bytes:
        return hmac.new(self.key, previous + body.encode(), hashlib.sha256).digest()

    def append(self, event: AuditEvent) -> int:
        """Append one record; returns its sequence number."""
        if event.event not in EVENTS:
            raise ValueError(f"unknown audit event {event.event!r}")
        body = event.canonical()
        with self._lock, self.engine.begin() as conn:
            conn.execute(audit_head.update().values(records=audit_head.c.records + 1))
            previous = bytes(conn.execute(select(audit_head.c.mac)).scalar_one())
            mac = self._mac(previous, body)
            seq = conn.execute(
                audit_events.insert().values(body=body, mac=mac)
            ).inserted_primary_key
            conn.execute(audit_head.update().values(mac=mac, updated=time.time()))
        return int(seq[0]) if seq else 0

    def records(self) -> Iterator[tuple[int, AuditEvent]]:
        with self.engine.connect() as conn:
            for row in conn.execute(select(audit_events).order_by(audit_events.c.seq)):
                yield int(row.seq), AuditEvent(**json.loads(row.body))

    def verify(self) -> ChainBreak | None:
        """The first broken link, or None when every record is intact and none is missing."""
        previous = GENESIS
        expected_seq = 1  # sequence numbers start at 1 and have no gaps
        count = 0
        with self.engine.connect() as conn:
            head = conn.execute(select(audit_head)).one()
            for row in conn.execute(select(audit_events).order_by(audit_events.c.seq)):
                count += 1
                if row.seq != expected_seq:
                    return ChainBreak(expected_seq, "record missing (deleted)")
                if not hmac.compare_digest(self._mac(previous, row.body), bytes(row.mac)):
                    return ChainBreak(int(row.seq), "record altered or chain broken here")
                previous = bytes(row.mac)
                expected_seq = int(row.seq) + 1
        if count != head.records or not hmac.compare_digest(previous, bytes(head.mac)):
            return ChainBreak(expected_seq, "records missing at the end (deleted)")
        return None


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def dicom_xml(event: AuditEvent, source_id: str = "VNA") -> str:
    """The record as a DICOM audit message (PS3.15 A.5, RFC 3881 schema)."""
    code, name = EVENTS[event.event]
    root = ET.Element("AuditMessage")
    ident = ET.SubElement(
        root,
        "EventIdentification",
        EventActionCode=event.action,
        EventDateTime=_iso(event.time),
        EventOutcomeIndicator=str(event.outcome),
    )
    ET.SubElement(
        ident, "EventID", {"csd-code": code, "codeSystemName": "DCM", "originalText": name}
    )
    participant = {"UserID": event.user, "UserIsRequestor": "true"}
    if event.network_address:
        participant.update(
            NetworkAccessPointID=event.network_address, NetworkAccessPointTypeCode="2"
        )
    active = ET.SubElement(root, "ActiveParticipant", participant)
    if event.institution:
        ET.SubElement(
            active,
            "RoleIDCode",
            {"csd-code": "110153", "codeSystemName": "DCM", "originalText": event.institution},
        )
    ET.SubElement(root, "AuditSourceIdentification", AuditSourceID=source_id)
    if event.study_uid:
        study = ET.SubElement(
            root,
            "ParticipantObjectIdentification",
            ParticipantObjectID=event.study_uid,
            ParticipantObjectTypeCode="2",
            ParticipantObjectTypeCodeRole="3",
        )
        ET.SubElement(
            study,
            "ParticipantObjectIDTypeCode",
            {"csd-code": "110180", "codeSystemName": "DCM", "originalText": "Study Instance UID"},
        )
    if event.patient:
        ET.SubElement(
            root,
            "ParticipantObjectIdentification",
            ParticipantObjectID=event.patient,
            ParticipantObjectTypeCode="1",
            ParticipantObjectTypeCodeRole="1",
        )
    return ET.tostring(root, encoding="unicode")


def fhir_audit_event(seq: int, event: AuditEvent) -> dict[str, object]:
    """The record as a FHIR R4 AuditEvent resource."""
    code, name = EVENTS[event.event]
    resource: dict[str, object] = {
        "resourceType": "AuditEvent",
        "id": str(seq),
        "type": {
            "system": "http://dicom.nema.org/resources/ontology/DCM",
            "code": code,
            "display": name,
        },
        "action": event.action,
        "recorded": _iso(event.time),
        "outcome": str(event.outcome),
        "agent": [
            {
                "who": {"identifier": {"value": event.user}},
                "requestor": True,
                **(
                    {"network": {"address": event.network_address, "type": "2"}}
                    if event.network_address
                    else {}
                ),
                **({"role": [{"text": event.institution}]} if event.institution else {}),
            }
        ],
        "source": {"observer": {"display": "VNA"}},
    }
    entities = []
    if event.study_uid:
        entities.append(
            {
                "what": {"identifier": {"value": event.study_uid}},
                "type": {"code": "2"},
                "role": {"code": "3"},
            }
        )
    if event.patient:
        entities.append(
            {
                "what": {"identifier": {"value": event.patient}},
                "type": {"code": "1"},
                "role": {"code": "1"},
            }
        )
    if entities:
        resource["entity"] = entities
    return resource
