"""Append-only, hash-chained audit log with the fields of a DICOM audit message.

Each record carries what PS3.15 A.5 asks of an audit message: event id (a DCM code such as
110112 Query), action, date/time, outcome, the active participant (user, institution,
network address) and participant objects (study, patient). Records are chained: each
holds an HMAC-SHA256, keyed by ``keys/audit.key``, over the previous record's MAC and its
own canonical content, so an edited, inserted or deleted row breaks the chain at that row
and cannot be re-chained without the key. Nothing secret (tokens, secrets, Authorization
headers) is ever part of a record.

The head row lives in the same database, so whoever can delete rows there can also rewind
it: a cut tail would verify. Each append therefore also writes ``<seq> <mac>`` to an
anchor file outside the catalog (``keys/audit.anchor``, opened ``O_APPEND`` so appenders
in several processes never interleave a line) and, with syslog forwarding, sends the MAC
with the record. :meth:`AuditLog.verify` checks every anchored record against the chain
and names a cut: the anchor says at least N records ending in MAC X, the log has M.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import hmac
import json
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit
from xml.etree import ElementTree as ET

from sqlalchemy import Column, Float, Integer, LargeBinary, MetaData, Table, Text, select
from sqlalchemy.engine import Engine

from security.keys import write_secret_file
from security.transactions import write_transaction

__all__ = [
    "EVENTS",
    "AuditEvent",
    "EventAction",
    "EventOutcome",
    "EventType",
    "AuditLog",
    "ChainBreak",
    "SyslogForwarder",
    "dicom_xml",
    "read_anchor",
    "fhir_audit_event",
    "syslog_message",
]

logger = logging.getLogger(__name__)

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


class EventType(enum.StrEnum):
    """What happened: each maps to a DCM code of :data:`EVENTS`."""

    QUERY = "query"
    INSTANCES_ACCESSED = "instances-accessed"
    INSTANCES_TRANSFERRED = "instances-transferred"
    AUTHENTICATION = "authentication"
    SECURITY_ALERT = "security-alert"
    AUDIT_LOG_USED = "audit-log-used"
    SECURITY_CONFIG = "security-config"
    APPLICATION_ACTIVITY = "application-activity"
    SHARE_CREATED = "share-created"
    SHARE_REVOKED = "share-revoked"
    EXPORT = "export"
    STUDY_DELETED = "study-deleted"
    GRANT_ADDED = "grant-added"
    GRANT_REVOKED = "grant-revoked"


class EventAction(enum.StrEnum):
    """Event Action Code (PS3.15 A.5.1, RFC 3881)."""

    CREATE = "C"
    READ = "R"
    UPDATE = "U"
    DELETE = "D"
    EXECUTE = "E"


class EventOutcome(enum.IntEnum):
    """Event Outcome Indicator (PS3.15 A.5.1, RFC 3881)."""

    SUCCESS = 0
    MINOR_FAILURE = 4
    SERIOUS_FAILURE = 8
    MAJOR_FAILURE = 12


# DCM codes (PS3.16 CID 400) for the events the archive records
EVENTS: dict[str, tuple[str, str]] = {
    "query": ("110112", "Query"),
    "instances-accessed": ("110103", "DICOM Instances Accessed"),
    "instances-transferred": ("110104", "DICOM Instances Transferred"),
    "authentication": ("110114", "User Authentication"),
    "security-alert": ("110113", "Security Alert"),
    "audit-log-used": ("110101", "Audit Log Used"),
    # administrative changes (institutions, clients, users, keys, grants): a Security Alert
    # whose detail names what changed (PS3.15 A.5.3.11: Security Configuration and friends)
    "security-config": ("110113", "Security Alert"),
    "application-activity": ("110100", "Application Activity"),
    # share links: created/revoked change who may see a study; a download is an export
    "share-created": ("110113", "Security Alert"),
    "share-revoked": ("110113", "Security Alert"),
    "export": ("110106", "Export"),
    "study-deleted": ("110105", "DICOM Study Deleted"),
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


ANCHOR_FILE = "audit.anchor"


def _append_anchor(path: Path, seq: int, mac: bytes) -> None:
    """Add one ``<seq> <mac hex>`` line; one ``write`` of an ``O_APPEND`` descriptor, so
    lines of concurrent appenders (other processes) never mix.

    Not fsynced: the anchor guards against rows deleted on purpose, not power loss (the
    catalog itself does not sync every commit, storage.durable_catalog).
    """
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{seq} {mac.hex()}\n".encode())
    finally:
        os.close(fd)


def read_anchor(path: Path) -> dict[int, bytes]:
    """Anchored records (sequence number -> MAC); lines out of order are normal (appenders
    in several processes), a torn or unparsable line is skipped."""
    anchored: dict[int, bytes] = {}
    try:
        text = path.read_text(encoding="ascii", errors="replace")
    except FileNotFoundError:
        return anchored
    for line in text.splitlines():
        seq_text, _, mac_text = line.partition(" ")
        try:
            seq, mac = int(seq_text), bytes.fromhex(mac_text)
        except ValueError:
            continue
        if seq > 0 and len(mac) == 32:
            anchored[seq] = mac
    return anchored


class AuditLog:
    """The audit log in a SQL database (the catalog's, by default).

    ``anchor``: the append-only file that records each appended record's sequence number
    and MAC outside the database (:func:`read_anchor`); None keeps no anchor (tests).
    """

    def __init__(
        self,
        engine: Engine,
        key: bytes,
        forwarder: SyslogForwarder | None = None,
        anchor: Path | None = None,
    ) -> None:
        self.engine = engine
        self.key = key
        self.forwarder = forwarder
        self.anchor = anchor
        self._lock = threading.Lock()
        with write_transaction(engine) as conn:  # gateway workers start together
            if conn.execute(select(audit_head.c.id)).first() is None:
                conn.execute(
                    audit_head.insert().values(id=1, records=0, mac=GENESIS, updated=time.time())
                )

    @classmethod
    def open(cls, engine: Engine, keys_dir: Path, syslog: str | None = None) -> AuditLog:
        """The audit log of an archive home; its MAC key is created on first use (0600).

        ``syslog`` (``udp://host:514`` or ``tcp://host:601``) also forwards every record.
        """
        key_file = keys_dir / "audit.key"
        if not key_file.exists():
            with contextlib.suppress(FileExistsError):  # a concurrent first start made it
                write_secret_file(key_file, secrets.token_bytes(32))
        forwarder = SyslogForwarder(syslog) if syslog else None
        return cls(engine, key_file.read_bytes(), forwarder, keys_dir / ANCHOR_FILE)

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
        number = int(seq[0]) if seq else 0
        if self.anchor is not None:
            # after the commit: the anchor never names a record the database lacks
            _append_anchor(self.anchor, number, mac)
        if self.forwarder is not None:
            # the database record is the evidence; a lost datagram must not fail the request
            self.forwarder.send(number, event, mac)
        return number

    def records(self, after: int = 0, limit: int | None = None) -> Iterator[tuple[int, AuditEvent]]:
        """Records with a sequence number above ``after``, oldest first."""
        stmt = select(audit_events).where(audit_events.c.seq > after).order_by(audit_events.c.seq)
        if limit is not None:
            stmt = stmt.limit(limit)
        with self.engine.connect() as conn:
            for row in conn.execute(stmt):
                yield int(row.seq), AuditEvent(**json.loads(row.body))

    def verify(self) -> ChainBreak | None:
        """The first broken link, or None when every record is intact and none is missing.

        Every record named in the anchor file must be in the chain with the anchored MAC;
        anchored records beyond the end of the log are a cut tail, even when the head row
        was rewound to match.
        """
        anchored = read_anchor(self.anchor) if self.anchor is not None else {}
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
                pinned = anchored.get(int(row.seq))
                if pinned is not None and not hmac.compare_digest(pinned, previous):
                    return ChainBreak(
                        int(row.seq),
                        f"record differs from the anchor ({self.anchor}: MAC {pinned.hex()}); "
                        "the log was rewritten from here",
                    )
                expected_seq = int(row.seq) + 1
        last = max(anchored, default=0)
        if last > count:
            return ChainBreak(
                count + 1,
                f"records cut from the end: the anchor ({self.anchor}) records at least "
                f"{last} records ending in MAC {anchored[last].hex()}, the log has {count}",
            )
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


# RFC 5424 section 6: facility 10 (security/authorization), severity 5 notice / 4 warning
_FACILITY_AUTHPRIV = 10


def syslog_message(
    seq: int, event: AuditEvent, hostname: str, app_name: str = "vna", mac: bytes | None = None
) -> bytes:
    """One record as an RFC 5424 message; the MSG is the DICOM audit message (PS3.15 A.5).

    DICOM's syslog profile (PS3.15 A.5.1, RFC 5425/5426) carries the XML audit message as
    the MSG part, with a UTF-8 BOM. ``mac``, the record's chain MAC, goes into the
    structured data: the collector then holds an anchor of the chain off this machine.
    """
    severity = 5 if event.outcome == 0 else 4
    pri = _FACILITY_AUTHPRIV * 8 + severity
    timestamp = datetime.fromtimestamp(event.time, UTC).isoformat(timespec="milliseconds")
    header = f"<{pri}>1 {timestamp.replace('+00:00', 'Z')} {hostname or '-'} {app_name} - "
    msg_id = "DICOM+RFC3881"
    structured = f'[vna@32473 seq="{seq}"' + (f' mac="{mac.hex()}"]' if mac else "]")
    return f"{header}{msg_id} {structured} ".encode() + b"\xef\xbb\xbf" + dicom_xml(event).encode()


class SyslogForwarder:
    """Sends each audit record to a syslog collector (UDP datagram or TCP octet-counting)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("udp", "tcp") or not parts.hostname:
            raise ValueError(f"audit syslog target {url!r}: use udp://HOST:PORT or tcp://HOST:PORT")
        self.scheme = parts.scheme
        self.address = (parts.hostname, parts.port or (514 if parts.scheme == "udp" else 601))
        self.hostname = socket.gethostname()
        self._lock = threading.Lock()
        self._tcp: socket.socket | None = None

    def send(self, seq: int, event: AuditEvent, mac: bytes | None = None) -> None:
        message = syslog_message(seq, event, self.hostname, mac=mac)
        try:
            with self._lock:
                if self.scheme == "udp":
                    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                        sock.sendto(message, self.address)
                else:
                    self._send_tcp(message)
        except OSError as exc:
            logger.warning(
                "audit record %d not forwarded to syslog %s:%d (%s); it is in the audit log",
                seq,
                *self.address,
                exc.__class__.__name__,
            )

    def _send_tcp(self, message: bytes) -> None:
        # RFC 6587 octet counting; one reconnect attempt when the collector dropped us
        for attempt in (1, 2):
            if self._tcp is None:
                self._tcp = socket.create_connection(self.address, timeout=5)
            try:
                self._tcp.sendall(f"{len(message)} ".encode() + message)
                return
            except OSError:
                self._tcp.close()
                self._tcp = None
                if attempt == 2:
                    raise
