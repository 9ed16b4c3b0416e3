"""The security package's public face for the others: errors, keys and envelope
encryption, the audit log, home file modes, TLS material, the failure throttle and the
catalog's write transactions.

Who a caller is (staff users, OAuth clients, bearer tokens, the embedded issuer,
authorization codes) is the second face, :mod:`security.identity`: it loads authlib and
joserfc, which the Orthanc plugin (importing this module) must not.
"""

from sqlalchemy import MetaData

from security import audit, throttle
from security.audit import (
    AuditEvent,
    AuditLog,
    EventAction,
    EventOutcome,
    EventType,
    dicom_xml,
    fhir_audit_event,
)
from security.dicom_tls import TlsFiles, ensure_server_pki, export_client, issue_client
from security.envelope import BlobNamer, open_sealed, rewrap, seal
from security.errors import (
    Conflict,
    Forbidden,
    IntegrityError,
    InvalidInput,
    NotAcceptable,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    StorageFull,
    TierUnavailable,
    TooManyAttempts,
    UnsupportedMediaType,
    VnaError,
)
from security.homefiles import exposed, restrict_umask, tighten
from security.keys import KeyRing, write_secret_file
from security.throttle import FailureThrottle
from security.tls import SELF_SIGNED_CERT, ensure_self_signed, fingerprint, server_context
from security.transactions import sqlite_begin, write_transaction

# the tables this face's modules own in the catalog database (deploy/schema.py)
table_metadata: tuple[MetaData, ...] = (
    audit.metadata,
    throttle.metadata,
)

__all__ = [
    "SELF_SIGNED_CERT",
    "AuditEvent",
    "AuditLog",
    "BlobNamer",
    "Conflict",
    "EventAction",
    "EventOutcome",
    "EventType",
    "FailureThrottle",
    "Forbidden",
    "IntegrityError",
    "InvalidInput",
    "KeyRing",
    "NotAcceptable",
    "NotFound",
    "PayloadTooLarge",
    "ServiceUnavailable",
    "StorageFull",
    "TierUnavailable",
    "TlsFiles",
    "TooManyAttempts",
    "UnsupportedMediaType",
    "VnaError",
    "dicom_xml",
    "ensure_self_signed",
    "ensure_server_pki",
    "exposed",
    "export_client",
    "fhir_audit_event",
    "fingerprint",
    "issue_client",
    "open_sealed",
    "restrict_umask",
    "rewrap",
    "seal",
    "server_context",
    "sqlite_begin",
    "table_metadata",
    "tighten",
    "write_secret_file",
    "write_transaction",
]
