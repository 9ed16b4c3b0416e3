"""The catalog: blobs, attachments and their parts, institutions, and the study index.

SQLAlchemy Core (not the ORM) on the hot path: an attachment is one short transaction.
SQLite in WAL mode by default; a PostgreSQL URL works unchanged for scaled-out nodes.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Column,
    ColumnElement,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    create_engine,
    delete,
    event,
    exc,
    func,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from archive.names import folded_groups
from archive.perthread import PerThread
from security.errors import Conflict, InvalidInput, NotFound

__all__ = [
    "BlobRecord",
    "Catalog",
    "InstanceRecord",
    "Institution",
    "PendingSource",
    "SourceRecord",
    "Stats",
    "metadata",
    "pn_fold_values",
]

logger = logging.getLogger(__name__)

metadata = MetaData()

blobs = Table(
    "blobs",
    metadata,
    Column("id", LargeBinary(32), primary_key=True),
    Column("size", Integer, nullable=False),
    Column("stored_size", Integer, nullable=False),
    Column("flags", Integer, nullable=False),
    Column("kek_id", String(16), nullable=False),
    Column("wrapped_key", LargeBinary(40), nullable=False),
    Column("refcount", Integer, nullable=False),
    Column("tier", String(32), nullable=False, default="hot"),
    Column("kind", String(16), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("unreferenced_since", Float),
    # small payloads (headers, delimiters) live in the row: no file, no fsync
    Column("payload", LargeBinary),
    Index("ix_blobs_unreferenced", "unreferenced_since"),
    Index("ix_blobs_kek", "kek_id"),
)

attachments = Table(
    "attachments",
    metadata,
    Column("uuid", String(64), primary_key=True),
    Column("content_type", Integer, nullable=False),
    Column("size", Integer, nullable=False),
    Column("digest", LargeBinary(32), nullable=False),
    Column("created_at", Float, nullable=False),
)

# attachments acknowledged to Orthanc and journaled, not yet split, deduplicated, compressed
pending_attachments = Table(
    "pending_attachments",
    metadata,
    Column("uuid", String(64), primary_key=True),
    Column("content_type", Integer, nullable=False),
    Column("size", Integer, nullable=False),
    Column("journal_size", Integer, nullable=False),
    Column("kek_id", String(16), nullable=False),
    Column("wrapped_key", LargeBinary(40), nullable=False),
    Column("created_at", Float, nullable=False),
)

# stored and removed DICOM files waiting for the indexer process, in order; written in the
# same transaction as the attachment itself, so the index can always catch up
index_queue = Table(
    "index_queue",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("attachment_uuid", String(64), nullable=False),
    Column("header", LargeBinary),
    Column("size", Integer),
    Column("institution_id", Integer),
    Column("institution", String(128)),
    Column("ae_title", String(16)),
    Column("removed", Integer, nullable=False, default=0),
)

attachment_parts = Table(
    "attachment_parts",
    metadata,
    Column(
        "uuid", String(64), ForeignKey("attachments.uuid", ondelete="CASCADE"), primary_key=True
    ),
    Column("seq", Integer, primary_key=True),
    Column("blob_id", LargeBinary(32), ForeignKey("blobs.id"), nullable=False),
    Column("length", Integer, nullable=False),
    Index("ix_parts_blob", "blob_id"),
)

institutions = Table(
    "institutions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(128), nullable=False, unique=True),
    Column("created_at", Float, nullable=False),
)

institution_aes = Table(
    "institution_aes",
    metadata,
    Column("ae_title", String(16), primary_key=True),
    Column("institution_id", Integer, ForeignKey("institutions.id"), nullable=False),
    Column("host", String(255)),
    Column("port", Integer),
)

patients = Table(
    "patients",
    metadata,
    Column("pk", Integer, primary_key=True, autoincrement=True),
    Column("issuer", String(128), nullable=False),
    Column("patient_id", String(128), nullable=False),
    Column("patient_name", String(256)),
    Column("birth_date", String(16)),
    Column("sex", String(16)),
    UniqueConstraint("issuer", "patient_id", name="uq_patient_issuer_id"),
    # PatientName's alphabetic, ideographic and phonetic groups, folded for matching
    # (archive.names; revision 0005); last, as SQLite appends added columns
    Column("patient_name_fold_a", String(256)),
    Column("patient_name_fold_i", String(256)),
    Column("patient_name_fold_p", String(256)),
)

studies = Table(
    "studies",
    metadata,
    Column("study_uid", String(64), primary_key=True),
    Column("patient_pk", Integer, ForeignKey("patients.pk"), nullable=False),
    Column("study_date", String(16)),
    Column("study_time", String(32)),
    Column("accession_number", String(64)),
    Column("study_id", String(64)),
    Column("description", String(256)),
    Column("referring_physician", String(256)),
    Column("created_at", Float, nullable=False),
    # the institution whose instance was recorded first; others reach it only by a grant
    Column("owner_institution_id", Integer, ForeignKey("institutions.id")),
    Index("ix_studies_date", "study_date"),
    Index("ix_studies_owner", "owner_institution_id"),
    Index("ix_studies_patient", "patient_pk"),
    Index("ix_studies_accession", "accession_number"),
    # QIDO's study order (date, uid): a study list with a limit reads its first rows in
    # index order instead of sorting each date's studies (100k studies: ~0.1 ms, not ~300)
    Index("ix_studies_date_uid", "study_date", "study_uid"),
    # ReferringPhysicianName folded as patients' PatientName (revision 0005)
    Column("referring_physician_fold_a", String(256)),
    Column("referring_physician_fold_i", String(256)),
    Column("referring_physician_fold_p", String(256)),
)

series = Table(
    "series",
    metadata,
    Column("series_uid", String(64), primary_key=True),
    Column("study_uid", String(64), ForeignKey("studies.study_uid"), nullable=False),
    Column("modality", String(16)),
    Column("series_number", Integer),
    Column("description", String(256)),
    Column("series_date", String(16)),
    Index("ix_series_study", "study_uid"),
)

instances = Table(
    "instances",
    metadata,
    Column("sop_uid", String(64), primary_key=True),
    Column("series_uid", String(64), ForeignKey("series.series_uid"), nullable=False),
    Column("study_uid", String(64), nullable=False),
    Column("sop_class_uid", String(64)),
    Column("instance_number", Integer),
    Column("number_of_frames", Integer),
    Column("rows", Integer),
    Column("columns", Integer),
    Column("transfer_syntax", String(64)),
    Column("orthanc_id", String(64), unique=True),
    Column("attachment_uuid", String(64)),
    Column("size", Integer),
    Column("created_at", Float, nullable=False),
    # last: added by revision 0002, and SQLite appends added columns
    Column("bits_allocated", Integer),
    Index("ix_instances_series", "series_uid"),
    Index("ix_instances_study", "study_uid"),
)

instance_sources = Table(
    "instance_sources",
    metadata,
    Column("sop_uid", String(64), primary_key=True),
    Column("institution_id", Integer, ForeignKey("institutions.id"), primary_key=True),
    Column("via", String(16), primary_key=True),
    Column("sender", String(128), primary_key=True),
    Column("remote_address", String(64)),
    Column("first_received", Float, nullable=False),
    Column("last_received", Float, nullable=False),
    Column("times", Integer, nullable=False),
    Index("ix_sources_institution", "institution_id"),
)

# provenance announced by the gateway before it hands a STOW-RS instance to Orthanc: a file
# stored over Orthanc's REST API reaches the storage area without a sender, so the indexer
# takes the sender from here, by Orthanc instance id, when it indexes such a file. The
# announcement is committed before the file is posted, hence before it is queued: the
# indexer cannot miss it.
pending_sources = Table(
    "pending_sources",
    metadata,
    Column("orthanc_id", String(64), primary_key=True),
    Column("institution_id", Integer, ForeignKey("institutions.id"), primary_key=True),
    Column("via", String(16), nullable=False),
    Column("sender", String(128), nullable=False),
    Column("remote_address", String(64)),
    Column("announced_at", Float, nullable=False),
)

# who may file instances under a Study Instance UID, and under which study a SOP Instance
# UID is filed: claimed when the first instance is admitted (C-STORE filter, STOW check),
# by an insert that only one sender can win, long before the indexer records the study.
# A claim outlives the study's deletion: the UID stays its first sender's.
study_claims = Table(
    "study_claims",
    metadata,
    Column("study_uid", String(64), primary_key=True),
    Column("institution_id", Integer, ForeignKey("institutions.id"), nullable=False),
    Column("claimed_at", Float, nullable=False),
)

instance_claims = Table(
    "instance_claims",
    metadata,
    Column("sop_uid", String(64), primary_key=True),
    Column("study_uid", String(64), nullable=False),
    Column("institution_id", Integer, ForeignKey("institutions.id"), nullable=False),
    Column("claimed_at", Float, nullable=False),
)


def pn_fold_values(column: str, value: str | None) -> dict[str, str]:
    """The folded-group columns of the PN ``column`` for a stored ``value`` (none for an
    absent value, so the upsert keeps what is known); an absent group folds to ``""``,
    which overwrites a group the previous name had."""
    groups = folded_groups(value)
    if groups is None:
        return {}
    return {f"{column}_fold_{kind}": group for kind, group in zip("aip", groups, strict=True)}


class _HotPath:
    """The few statements run for every attachment, as plain SQL.

    On SQLite they go straight to a per-thread ``sqlite3`` connection: SQLAlchemy's pool
    and compilation cost more than the statements themselves (tens of microseconds each,
    held under the GIL that Orthanc's other DICOM threads wait for). On other databases the
    same SQL runs through SQLAlchemy ``text()``. Named parameters suit both.
    """

    def __init__(self, catalog: Catalog, path: str | None, synchronous: str) -> None:
        self.catalog = catalog
        self.path = path
        self.synchronous = synchronous
        self._connections: PerThread[sqlite3.Connection] = PerThread(self._connect)

    def _connect(self) -> sqlite3.Connection:
        assert self.path is not None
        conn = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
        _sqlite_pragmas(self.synchronous)(conn, None)
        return conn

    def _sqlite(self) -> sqlite3.Connection:
        return self._connections.get()

    def close(self) -> None:
        for conn in self._connections.values():
            conn.close()

    @contextmanager
    def write(self) -> Iterator[Callable[[str, Any], Any]]:
        """A write transaction; yields ``run(sql, params) -> cursor-like``."""
        if self.path is None:
            with self.catalog.transaction() as sa_conn:
                yield lambda sql, params: sa_conn.execute(text(sql), params)
            return
        lite = self._sqlite()
        with self.catalog.write_lock:
            lite.execute("BEGIN IMMEDIATE")
            try:
                yield lambda sql, params: lite.execute(sql, params)
            except BaseException:
                lite.execute("ROLLBACK")
                raise
            lite.execute("COMMIT")

    def read(self, sql: str, params: Any) -> list[Any]:
        if self.path is None:
            with self.catalog.engine.connect() as conn:
                return list(conn.execute(text(sql), params))
        return self._sqlite().execute(sql, params).fetchall()


class _ClaimRefused(Exception):
    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


class _Withdrawn(Exception):
    """The pending attachment was removed while it was being digested."""


class _BlobVanished(Exception):
    """A blob the writer counted on was garbage-collected meanwhile."""


@dataclass(frozen=True, slots=True)
class BlobRecord:
    """A blob as the catalog knows it."""

    id: bytes
    size: int
    stored_size: int
    flags: int
    kek_id: str
    wrapped_key: bytes
    kind: str
    tier: str = "hot"
    payload: bytes | None = None


@dataclass(frozen=True, slots=True)
class Sender:
    """Who sent a file over DIMSE: the calling AE and the institution that owns it."""

    institution_id: int
    institution: str
    ae_title: str


@dataclass(frozen=True, slots=True)
class IndexEntry:
    """A stored DICOM file for the indexer: its header bytes and sender (or a removal)."""

    seq: int
    attachment_uuid: str
    header: bytes | None
    size: int | None
    sender: Sender | None
    removed: bool


@dataclass(frozen=True, slots=True)
class PendingAttachment:
    """A journaled attachment waiting for the digester."""

    uuid: str
    content_type: int
    size: int
    journal_size: int
    kek_id: str
    wrapped_key: bytes


@dataclass(frozen=True, slots=True)
class Institution:
    id: int
    name: str
    ae_titles: tuple[tuple[str, str | None, int | None], ...]


@dataclass(frozen=True, slots=True)
class InstanceRecord:
    """The attributes the index keeps for an instance (taken from Orthanc's parse)."""

    sop_uid: str
    series_uid: str
    study_uid: str
    patient_id: str
    issuer: str
    patient_name: str | None = None
    birth_date: str | None = None
    sex: str | None = None
    study_date: str | None = None
    study_time: str | None = None
    accession_number: str | None = None
    study_id: str | None = None
    study_description: str | None = None
    referring_physician: str | None = None
    modality: str | None = None
    series_number: int | None = None
    series_description: str | None = None
    series_date: str | None = None
    sop_class_uid: str | None = None
    instance_number: int | None = None
    number_of_frames: int | None = None
    rows: int | None = None
    columns: int | None = None
    bits_allocated: int | None = None
    transfer_syntax: str | None = None
    orthanc_id: str | None = None
    attachment_uuid: str | None = None
    size: int | None = None


@dataclass(frozen=True, slots=True)
class SourceRecord:
    sop_uid: str
    institution_id: int
    via: str
    sender: str
    remote_address: str | None = None


@dataclass(frozen=True, slots=True)
class PendingSource:
    """A sender announced for an instance about to be stored over HTTP (STOW-RS)."""

    orthanc_id: str
    institution_id: int
    institution: str
    via: str
    sender: str
    remote_address: str | None
    announced_at: float


@dataclass(frozen=True, slots=True)
class Stats:
    instances: int
    studies: int
    attachments: int
    logical_bytes: int
    unique_bytes: int
    stored_bytes: int
    blobs: int
    unreferenced_blobs: int
    pending: int = 0

    @property
    def dedup_ratio(self) -> float:
        return self.logical_bytes / self.unique_bytes if self.unique_bytes else 1.0

    @property
    def compression_ratio(self) -> float:
        return self.unique_bytes / self.stored_bytes if self.stored_bytes else 1.0

    @property
    def total_ratio(self) -> float:
        return self.logical_bytes / self.stored_bytes if self.stored_bytes else 1.0


# the common admission, as plain SQL (see Catalog.claim): a study claimed for its indexed
# owner, else the sender; a SOP instance filed under its indexed study, else this one
_CLAIM_STUDY = (
    "INSERT INTO study_claims (study_uid, institution_id, claimed_at) "
    "VALUES (CAST(:study AS VARCHAR(64)), COALESCE((SELECT owner_institution_id FROM studies "
    "WHERE study_uid = CAST(:study AS VARCHAR(64))), CAST(:inst AS INTEGER)), :now) "
    "ON CONFLICT DO NOTHING"
)
_CLAIMED_STUDY = "SELECT institution_id FROM study_claims WHERE study_uid = :study"
_CLAIM_INSTANCE = (
    "INSERT INTO instance_claims (sop_uid, study_uid, institution_id, claimed_at) "
    "VALUES (CAST(:sop AS VARCHAR(64)), COALESCE((SELECT study_uid FROM instances "
    "WHERE sop_uid = CAST(:sop AS VARCHAR(64))), CAST(:study AS VARCHAR(64))), :inst, :now) "
    "ON CONFLICT DO NOTHING"
)
_CLAIMED_INSTANCE = "SELECT study_uid FROM instance_claims WHERE sop_uid = :sop"

_INSERT_ATTACHMENT = (
    "INSERT INTO attachments (uuid, content_type, size, digest, created_at) "
    "VALUES (:uuid, :content_type, :size, :digest, :now)"
)
_ADD_REFERENCES = (
    "UPDATE blobs SET refcount = refcount + :n, unreferenced_since = NULL WHERE id = :id"
)
_DROP_REFERENCES = (
    "UPDATE blobs SET refcount = refcount - :n, unreferenced_since = CASE "
    "WHEN refcount - :n <= 0 THEN :now ELSE unreferenced_since END WHERE id = :id"
)
_INSERT_BLOB = (
    "INSERT INTO blobs (id, size, stored_size, flags, kek_id, wrapped_key, refcount, tier, "
    "kind, created_at, unreferenced_since, payload) VALUES (:id, :size, :stored_size, :flags, "
    ":kek_id, :wrapped_key, :refcount, :tier, :kind, :now, NULL, :payload) "
    "ON CONFLICT (id) DO NOTHING"
)
_DELETE_PENDING = "DELETE FROM pending_attachments WHERE uuid = :uuid"
_QUEUE_STORED = (
    "INSERT INTO index_queue (attachment_uuid, header, size, institution_id, institution, "
    "ae_title, removed) VALUES (:uuid, :header, :size, :institution_id, :institution, "
    ":ae_title, 0)"
)
_QUEUE_REMOVED = "INSERT INTO index_queue (attachment_uuid, removed) VALUES (:uuid, 1)"
_INSERT_PENDING = (
    "INSERT INTO pending_attachments (uuid, content_type, size, journal_size, kek_id, "
    "wrapped_key, created_at) VALUES (:uuid, :content_type, :size, :journal_size, :kek_id, "
    ":wrapped_key, :now)"
)
_SELECT_PENDING = (
    "SELECT uuid, content_type, size, journal_size, kek_id, wrapped_key FROM pending_attachments"
)
_INSERT_PART = (
    "INSERT INTO attachment_parts (uuid, seq, blob_id, length) "
    "VALUES (:uuid, :seq, :blob_id, :length)"
)
_SELECT_PARTS = (
    "SELECT b.id, b.size, b.stored_size, b.flags, b.kek_id, b.wrapped_key, b.kind, b.tier, "
    "b.payload, p.length FROM attachment_parts p JOIN blobs b ON b.id = p.blob_id "
    "WHERE p.uuid = :uuid ORDER BY p.seq"
)

_SELECT_PARTS_IN = (
    "SELECT b.id, b.size, b.stored_size, b.flags, b.kek_id, b.wrapped_key, b.kind, b.tier, "
    "b.payload, p.length, p.uuid FROM attachment_parts p JOIN blobs b ON b.id = p.blob_id "
    "WHERE p.uuid IN ({names}) ORDER BY p.uuid, p.seq"
)
_SELECT_FIRST_IN = "SELECT uuid, blob_id FROM attachment_parts WHERE seq = 0 AND uuid IN ({names})"


def _in_lists(values: Sequence[str], size: int = 500) -> Iterator[tuple[str, dict[str, str]]]:
    """``IN (...)`` placeholders and parameters for ``values``, ``size`` at a time
    (SQLite limits the parameters of one statement)."""
    for start in range(0, len(values), size):
        chunk = values[start : start + size]
        yield (
            ", ".join(f":v{i}" for i in range(len(chunk))),
            {f"v{i}": value for i, value in enumerate(chunk)},
        )


def _sqlite_pragmas(synchronous: str) -> Callable[[Any, Any], None]:
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # let SQLAlchemy's BEGIN below decide transactions (pysqlite's own handling defers them)
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA busy_timeout=60000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    return on_connect


def _begin(conn: Connection) -> None:
    # writers take the lock up front, so two of them never deadlock upgrading from read
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.info.pop("vna_write", False) else "BEGIN")


def _part_row(r: Sequence[Any]) -> tuple[BlobRecord, int]:
    """A row of ``_SELECT_PARTS``/``_SELECT_PARTS_IN``: the blob and its part's offset."""
    return (
        BlobRecord(
            id=bytes(r[0]),
            size=int(r[1]),
            stored_size=int(r[2]),
            flags=int(r[3]),
            kek_id=str(r[4]),
            wrapped_key=bytes(r[5]),
            kind=str(r[6]),
            tier=str(r[7]),
            payload=None if r[8] is None else bytes(r[8]),
        ),
        int(r[9]),
    )


class Catalog:
    """Access to the catalog database; one instance per process, thread-safe."""

    def __init__(self, url: str, *, durable: bool = True) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        # SQLite admits one writer; queueing this process's writers on a mutex is immediate
        # and fair, where SQLite's busy handler sleeps in growing steps (1, 2, 5, ... ms)
        self.write_lock = threading.RLock()
        kwargs: dict[str, Any] = {}
        if self.is_sqlite:
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 60}
            kwargs["pool_size"] = 8
        self.engine: Engine = create_engine(url, **kwargs)
        # derived data (the study index) is written without waiting for the disk
        self.index_engine: Engine = self.engine
        if self.is_sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas("FULL" if durable else "NORMAL"))
            event.listen(self.engine, "begin", _begin)
            self.index_engine = create_engine(url, **kwargs)
            event.listen(self.index_engine, "connect", _sqlite_pragmas("NORMAL"))
            event.listen(self.index_engine, "begin", _begin)
        # creates the tables of a fresh database (tests); how an existing database is
        # upgraded is archive.migrations.upgrade, which open_store runs before this
        metadata.create_all(self.engine)
        sqlite_path = self.engine.url.database if self.is_sqlite else None
        self._hot = _HotPath(self, sqlite_path, "FULL" if durable else "NORMAL")

    def close(self) -> None:
        self._hot.close()
        self.engine.dispose()
        self.index_engine.dispose()

    @contextmanager
    def transaction(self, engine: Engine | None = None) -> Iterator[Connection]:
        """A write transaction (BEGIN IMMEDIATE on SQLite)."""
        with self.write_lock, (engine or self.engine).connect() as conn:
            conn.info["vna_write"] = True
            with conn.begin():
                yield conn

    def _insert_ignore(self, table: Table) -> Any:
        if self.engine.dialect.name == "postgresql":
            return postgresql.insert(table).on_conflict_do_nothing()
        return sqlite.insert(table).on_conflict_do_nothing()

    # -- blobs and attachments -------------------------------------------------------

    def existing_blobs(self, ids: Iterable[bytes]) -> set[bytes]:
        wanted = list(set(ids))
        if not wanted:
            return set()
        names = ", ".join(f":b{i}" for i in range(len(wanted)))
        rows = self._hot.read(
            f"SELECT id FROM blobs WHERE id IN ({names})",  # noqa: S608 - placeholders only
            {f"b{i}": blob_id for i, blob_id in enumerate(wanted)},
        )
        return {bytes(row[0]) for row in rows}

    def add_attachment(
        self,
        uuid: str,
        content_type: int,
        size: int,
        digest: bytes,
        parts: list[tuple[bytes, int]],
        new_blobs: dict[bytes, BlobRecord],
        on_inserted: Callable[[bytes], None],
        on_lost_race: Callable[[bytes], None],
        from_pending: bool = False,
        index_header: bytes | None = None,
        sender: Sender | None = None,
    ) -> bool:
        """Record an attachment and take references on its blobs, in one transaction.

        ``new_blobs`` were staged by the caller; for each one the catalog inserts, it calls
        ``on_inserted`` (publish the payload) before commit; if another writer inserted the
        same blob first, ``on_lost_race`` (discard the staged payload). Returns False, and
        changes nothing, if a blob believed present was collected meanwhile: the caller
        must stage it and try again.
        """
        now = time.time()
        counts = Counter(blob_id for blob_id, _ in parts)
        try:
            with self._hot.write() as run:
                # every check that can refuse comes before the first payload is published
                if from_pending and not run(_DELETE_PENDING, {"uuid": uuid}).rowcount:
                    raise _Withdrawn
                try:
                    run(
                        _INSERT_ATTACHMENT,
                        {
                            "uuid": uuid,
                            "content_type": content_type,
                            "size": size,
                            "digest": digest,
                            "now": now,
                        },
                    )
                except (sqlite3.IntegrityError, exc.IntegrityError) as error:
                    raise Conflict(f"attachment {uuid} already exists") from error
                # references next: a vanished blob aborts before anything is published
                for blob_id, count in counts.items():
                    if (
                        blob_id not in new_blobs
                        and not run(_ADD_REFERENCES, {"id": blob_id, "n": count}).rowcount
                    ):
                        raise _BlobVanished
                for blob_id, record in new_blobs.items():
                    inserted = run(
                        _INSERT_BLOB,
                        {
                            "id": blob_id,
                            "size": record.size,
                            "stored_size": record.stored_size,
                            "flags": record.flags,
                            "kek_id": record.kek_id,
                            "wrapped_key": record.wrapped_key,
                            "refcount": counts[blob_id],
                            "tier": record.tier,
                            "kind": record.kind,
                            "now": now,
                            "payload": record.payload,
                        },
                    ).rowcount
                    if inserted:
                        on_inserted(blob_id)
                        continue
                    on_lost_race(blob_id)
                    if not run(_ADD_REFERENCES, {"id": blob_id, "n": counts[blob_id]}).rowcount:
                        raise _BlobVanished
                for seq, (blob_id, length) in enumerate(parts):
                    run(
                        _INSERT_PART,
                        {"uuid": uuid, "seq": seq, "blob_id": blob_id, "length": length},
                    )
                if index_header is not None and not from_pending:
                    run(_QUEUE_STORED, _queue_params(uuid, index_header, size, sender))
        except _BlobVanished:
            return False
        except _Withdrawn:
            raise NotFound(f"attachment {uuid} was removed while being digested") from None
        return True

    def add_pending(
        self,
        pending: PendingAttachment,
        index_header: bytes | None = None,
        sender: Sender | None = None,
    ) -> None:
        """Record a journaled attachment (Conflict if the uuid is taken)."""
        with self._hot.write() as run:
            taken = run(
                "SELECT 1 FROM attachments WHERE uuid = :uuid", {"uuid": pending.uuid}
            ).fetchall()
            if taken:
                raise Conflict(f"attachment {pending.uuid} already exists")
            try:
                run(
                    _INSERT_PENDING,
                    {
                        "uuid": pending.uuid,
                        "content_type": pending.content_type,
                        "size": pending.size,
                        "journal_size": pending.journal_size,
                        "kek_id": pending.kek_id,
                        "wrapped_key": pending.wrapped_key,
                        "now": time.time(),
                    },
                )
            except (sqlite3.IntegrityError, exc.IntegrityError) as error:
                raise Conflict(f"attachment {pending.uuid} already exists") from error
            if index_header is not None:
                run(_QUEUE_STORED, _queue_params(pending.uuid, index_header, pending.size, sender))

    def pending(self, uuid: str) -> PendingAttachment | None:
        rows = self._hot.read(_SELECT_PENDING + " WHERE uuid = :uuid", {"uuid": uuid})
        return _pending(rows[0]) if rows else None

    def all_pending(self) -> list[PendingAttachment]:
        return [_pending(r) for r in self._hot.read(_SELECT_PENDING + " ORDER BY created_at", {})]

    def remove_pending(self, uuid: str) -> bool:
        with self._hot.write() as run:
            if not run(_DELETE_PENDING, {"uuid": uuid}).rowcount:
                return False
            run(_QUEUE_REMOVED, {"uuid": uuid})
            return True

    # -- the index queue -----------------------------------------------------------------

    def index_backlog(self) -> int:
        return int(self._hot.read("SELECT count(*) FROM index_queue", {})[0][0])

    def next_index_entries(self, limit: int = 500) -> list[IndexEntry]:
        rows = self._hot.read(
            "SELECT seq, attachment_uuid, header, size, institution_id, institution, ae_title, "
            "removed FROM index_queue ORDER BY seq LIMIT :limit",
            {"limit": limit},
        )
        return [
            IndexEntry(
                seq=int(r[0]),
                attachment_uuid=str(r[1]),
                header=None if r[2] is None else bytes(r[2]),
                size=None if r[3] is None else int(r[3]),
                sender=None if r[4] is None else Sender(int(r[4]), str(r[5]), str(r[6])),
                removed=bool(r[7]),
            )
            for r in rows
        ]

    def apply_index_entries(self, done_through: int, steps: list[tuple[str, Any]]) -> None:
        """Apply parsed queue entries in order and drop them from the queue, atomically.

        ``steps`` holds ``("index", (records, sources))``, ``("forget", uuid)`` and
        ``("announced", [PendingSource, ...])`` (announcements consumed) items.
        """
        now = time.time()
        with self.transaction(self.index_engine) as conn:
            for kind, payload in steps:
                if kind == "index":
                    records, sources = payload
                    for rec in records:
                        self._index_one(conn, rec, now)
                    for src in sources:
                        self._add_source(conn, src, now)
                elif kind == "announced":
                    # consumed: only this announcement (a newer one is another store)
                    for announced in payload:
                        conn.execute(
                            pending_sources.delete().where(
                                pending_sources.c.orthanc_id == announced.orthanc_id,
                                pending_sources.c.institution_id == announced.institution_id,
                                pending_sources.c.announced_at == announced.announced_at,
                            )
                        )
                else:
                    self._drop_instances(conn, instances.c.attachment_uuid == payload)
            conn.execute(index_queue.delete().where(index_queue.c.seq <= done_through))

    def rewrap_pending(
        self, old_kek_ids: list[str], new_kek_id: str, rewrap: Callable[[bytes, str], bytes]
    ) -> int:
        done = 0
        for item in self.all_pending():
            if item.kek_id in old_kek_ids:
                with self._hot.write() as run:
                    done += run(
                        "UPDATE pending_attachments SET wrapped_key = :w, kek_id = :k "
                        "WHERE uuid = :uuid AND kek_id = :old",
                        {
                            "w": rewrap(item.wrapped_key, item.kek_id),
                            "k": new_kek_id,
                            "uuid": item.uuid,
                            "old": item.kek_id,
                        },
                    ).rowcount
        return done

    def attachment_parts(self, uuid: str) -> tuple[int, bytes, list[tuple[BlobRecord, int]]]:
        """Return (size, digest, [(blob, length) in order]) of an attachment."""
        head = self._hot.read(
            "SELECT size, digest FROM attachments WHERE uuid = :uuid", {"uuid": uuid}
        )
        if not head:
            raise NotFound(f"attachment {uuid} is not in the catalog")
        rows = self._hot.read(_SELECT_PARTS, {"uuid": uuid})
        parts = [_part_row(r) for r in rows]
        return int(head[0][0]), bytes(head[0][1]), parts

    def attachment_parts_many(
        self, uuids: Sequence[str]
    ) -> dict[str, list[tuple[BlobRecord, int]]]:
        """``attachment_parts`` of many attachments in a few queries (WADO-RS planning);
        attachments without parts (unknown, still journaled, empty) are left out."""
        out: dict[str, list[tuple[BlobRecord, int]]] = {}
        for names, params in _in_lists(uuids):
            sql = _SELECT_PARTS_IN.format(names=names)  # noqa: S608 - placeholders only
            rows = self._hot.read(sql, params)
            for r in rows:
                out.setdefault(str(r[10]), []).append(_part_row(r))
        return out

    def first_blob_ids(self, uuids: Sequence[str]) -> dict[str, bytes]:
        """The id of the first part (a DICOM file's header) of each attachment that has
        parts, reading no payload: the key of the gateway's metadata cache."""
        out: dict[str, bytes] = {}
        for names, params in _in_lists(uuids):
            sql = _SELECT_FIRST_IN.format(names=names)  # noqa: S608 - placeholders only
            rows = self._hot.read(sql, params)
            out.update((str(r[0]), bytes(r[1])) for r in rows)
        return out

    def remove_attachment(self, uuid: str) -> bool:
        """Drop an attachment and its references; returns False if it was unknown."""
        now = time.time()
        with self._hot.write() as run:
            head = run(
                "SELECT content_type FROM attachments WHERE uuid = :uuid", {"uuid": uuid}
            ).fetchall()
            if not head:
                return False
            rows = run(
                "SELECT blob_id FROM attachment_parts WHERE uuid = :uuid", {"uuid": uuid}
            ).fetchall()
            run("DELETE FROM attachments WHERE uuid = :uuid", {"uuid": uuid})
            if int(head[0][0]) == 1:
                run(_QUEUE_REMOVED, {"uuid": uuid})
            run("DELETE FROM attachment_parts WHERE uuid = :uuid", {"uuid": uuid})
            for blob_id, count in Counter(bytes(row[0]) for row in rows).items():
                run(_DROP_REFERENCES, {"id": blob_id, "n": count, "now": now})
        return True

    def blob(self, blob_id: bytes) -> BlobRecord | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(blobs).where(blobs.c.id == blob_id)).first()
        return None if row is None else _blob_record(row._mapping)

    def collectable_blobs(self, older_than: float, limit: int = 1000) -> list[bytes]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(blobs.c.id)
                .where(blobs.c.refcount <= 0, blobs.c.unreferenced_since < older_than)
                .limit(limit)
            )
            return [bytes(row[0]) for row in rows]

    def collect_blob(
        self, blob_id: bytes, older_than: float, delete_payload: Callable[[str], None]
    ) -> bool:
        """Delete one unreferenced blob; the payload goes while the row's lock is held."""
        with self.transaction() as conn:
            row = conn.execute(
                select(blobs.c.tier).where(
                    blobs.c.id == blob_id,
                    blobs.c.refcount <= 0,
                    blobs.c.unreferenced_since < older_than,
                )
            ).first()
            if row is None:
                return False
            conn.execute(blobs.delete().where(blobs.c.id == blob_id))
            delete_payload(row.tier)
        return True

    def iter_blobs(self, batch: int = 2000) -> Iterator[BlobRecord]:
        last = b""
        while True:
            with self.engine.connect() as conn:
                rows = conn.execute(
                    select(blobs).where(blobs.c.id > last).order_by(blobs.c.id).limit(batch)
                ).all()
            if not rows:
                return
            for row in rows:
                yield _blob_record(row._mapping)
            last = bytes(rows[-1].id)

    def refcount_mismatches(self) -> list[tuple[bytes, int, int]]:
        """Blobs whose refcount differs from the references that exist: (id, stored, actual)."""
        actual = (
            select(attachment_parts.c.blob_id, func.count().label("refs"))
            .group_by(attachment_parts.c.blob_id)
            .subquery()
        )
        query = (
            select(blobs.c.id, blobs.c.refcount, func.coalesce(actual.c.refs, 0))
            .outerjoin(actual, actual.c.blob_id == blobs.c.id)
            .where(blobs.c.refcount != func.coalesce(actual.c.refs, 0))
        )
        with self.engine.connect() as conn:
            return [(bytes(r[0]), int(r[1]), int(r[2])) for r in conn.execute(query)]

    def dangling_parts(self) -> list[tuple[str, bytes]]:
        query = (
            select(attachment_parts.c.uuid, attachment_parts.c.blob_id)
            .outerjoin(blobs, blobs.c.id == attachment_parts.c.blob_id)
            .where(blobs.c.id.is_(None))
        )
        with self.engine.connect() as conn:
            return [(str(r[0]), bytes(r[1])) for r in conn.execute(query)]

    def attachment_uuids(self) -> set[str]:
        """Every attachment the archive holds, digested or still journaled."""
        with self.engine.connect() as conn:
            done = {str(r[0]) for r in conn.execute(select(attachments.c.uuid))}
            pending = {str(r[0]) for r in conn.execute(select(pending_attachments.c.uuid))}
        return done | pending

    def attachments_created_before(self, when: float) -> list[tuple[str, int]]:
        with self.engine.connect() as conn:
            rows = list(
                conn.execute(
                    select(attachments.c.uuid, attachments.c.content_type).where(
                        attachments.c.created_at < when
                    )
                )
            )
            rows += conn.execute(
                select(pending_attachments.c.uuid, pending_attachments.c.content_type).where(
                    pending_attachments.c.created_at < when
                )
            )
            return [(str(r[0]), int(r[1])) for r in rows]

    def rewrap_batch(
        self,
        old_kek_ids: list[str],
        new_kek_id: str,
        rewrap: Callable[[bytes, str], bytes],
        batch: int = 500,
    ) -> int:
        """Re-wrap up to ``batch`` data keys held under ``old_kek_ids``; returns how many."""
        with self.transaction() as conn:
            rows = conn.execute(
                select(blobs.c.id, blobs.c.wrapped_key, blobs.c.kek_id)
                .where(blobs.c.kek_id.in_(old_kek_ids))
                .limit(batch)
            ).all()
            for row in rows:
                conn.execute(
                    update(blobs)
                    .where(blobs.c.id == row.id, blobs.c.kek_id == row.kek_id)
                    .values(
                        wrapped_key=rewrap(bytes(row.wrapped_key), str(row.kek_id)),
                        kek_id=new_kek_id,
                    )
                )
        return len(rows)

    def kek_usage(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(blobs.c.kek_id, func.count()).group_by(blobs.c.kek_id))
            return {str(r[0]): int(r[1]) for r in rows}

    # -- institutions ----------------------------------------------------------------

    def add_institution(
        self,
        name: str,
        ae_title: str | None = None,
        host: str | None = None,
        port: int | None = None,
    ) -> Institution:
        """Create the institution if new and register ``ae_title`` to it (idempotent)."""
        name = name.strip()
        if not name:
            raise InvalidInput("an institution needs a name")
        if name.lower().startswith("share:"):
            # the institution claim of share-link tokens (sharing/links.py)
            raise InvalidInput("institution names starting with 'share:' are reserved")
        if ae_title is not None:
            # DICOM pads AE titles with spaces; leading/trailing ones are not significant
            ae_title = ae_title.strip()
        if ae_title is not None and not 0 < len(ae_title) <= 16:
            raise InvalidInput(f"AE title {ae_title!r} must have 1 to 16 characters")
        with self.transaction() as conn:
            row = conn.execute(select(institutions.c.id).where(institutions.c.name == name)).first()
            if row is None:
                created = conn.execute(
                    institutions.insert().values(name=name, created_at=time.time())
                ).inserted_primary_key
                if created is None:
                    raise Conflict(f"institution {name!r} could not be created")
                inst_id = created[0]
            else:
                inst_id = row.id
            if ae_title is not None:
                owner = conn.execute(
                    select(institution_aes.c.institution_id).where(
                        institution_aes.c.ae_title == ae_title
                    )
                ).first()
                if owner is not None and owner.institution_id != inst_id:
                    raise Conflict(f"AE title {ae_title} already belongs to another institution")
                if owner is None:
                    conn.execute(
                        institution_aes.insert().values(
                            ae_title=ae_title, institution_id=inst_id, host=host, port=port
                        )
                    )
                else:
                    conn.execute(
                        update(institution_aes)
                        .where(institution_aes.c.ae_title == ae_title)
                        .values(host=host, port=port)
                    )
        return self.institution(name)

    def institution(self, name: str) -> Institution:
        with self.engine.connect() as conn:
            row = conn.execute(select(institutions).where(institutions.c.name == name)).first()
            if row is None:
                raise NotFound(f"no institution named {name!r}: add it with `vna institution add`")
            aes = conn.execute(
                select(institution_aes.c.ae_title, institution_aes.c.host, institution_aes.c.port)
                .where(institution_aes.c.institution_id == row.id)
                .order_by(institution_aes.c.ae_title)
            ).all()
        return Institution(int(row.id), str(row.name), tuple((a[0], a[1], a[2]) for a in aes))

    def list_institutions(self) -> list[Institution]:
        with self.engine.connect() as conn:
            names = [
                str(r[0])
                for r in conn.execute(select(institutions.c.name).order_by(institutions.c.name))
            ]
        return [self.institution(name) for name in names]

    def institution_for_ae(self, ae_title: str) -> Institution | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(institutions.c.name)
                .join(institution_aes, institution_aes.c.institution_id == institutions.c.id)
                .where(institution_aes.c.ae_title == ae_title.strip())
            ).first()
        return None if row is None else self.institution(str(row.name))

    def ae_map(self) -> dict[str, Institution]:
        return {ae: inst for inst in self.list_institutions() for ae, _, _ in inst.ae_titles}

    def registered_aes(self) -> list[tuple[str, str | None, int | None]]:
        """Every registered AE title with its host and port, in one query."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(
                    institution_aes.c.ae_title, institution_aes.c.host, institution_aes.c.port
                ).order_by(institution_aes.c.ae_title)
            ).all()
        return [(str(r[0]), r[1], r[2]) for r in rows]

    def remove_ae(self, ae_title: str) -> Institution:
        """Unregister an AE title; returns the institution it belonged to."""
        ae_title = ae_title.strip()
        with self.transaction() as conn:
            row = conn.execute(
                select(institutions.c.name)
                .join(institution_aes, institution_aes.c.institution_id == institutions.c.id)
                .where(institution_aes.c.ae_title == ae_title)
            ).first()
            if row is None:
                raise NotFound(
                    f"AE title {ae_title!r} is not registered (see `vna institution list`)"
                )
            conn.execute(delete(institution_aes).where(institution_aes.c.ae_title == ae_title))
        return self.institution(str(row.name))

    # -- study index and provenance --------------------------------------------------

    def index_instance(self, rec: InstanceRecord) -> None:
        """Insert or refresh one instance and its patient, study and series rows."""
        self.index_batch([rec], [])

    def record_source(self, src: SourceRecord) -> bool:
        """Record that ``src`` sent an archived instance; False if the instance is unknown."""
        return not self.index_batch([], [src])

    def index_batch(
        self, records: list[InstanceRecord], sources: list[SourceRecord]
    ) -> list[SourceRecord]:
        """Index instances, then record sources, in one transaction.

        The index is derived data (Orthanc can re-supply it after a crash), so it is written
        without waiting for the disk. Returns the sources whose instance is not indexed yet.
        """
        now = time.time()
        unmatched: list[SourceRecord] = []
        with self.transaction(self.index_engine) as conn:
            for rec in records:
                self._index_one(conn, rec, now)
            for src in sources:
                if not self._add_source(conn, src, now):
                    unmatched.append(src)
        return unmatched

    @staticmethod
    def _upsert(
        conn: Connection, table: Table, key: dict[str, Any], values: dict[str, Any]
    ) -> None:
        """Update the row with ``key`` (NULLs never overwrite known values), else insert it."""
        known = {k: v for k, v in values.items() if v is not None}
        where = [table.c[name] == value for name, value in key.items()]
        if known and conn.execute(update(table).where(*where).values(**known)).rowcount:
            return
        if not known and conn.execute(select(*[table.c[n] for n in key]).where(*where)).first():
            return
        conn.execute(table.insert().values(**key, **values))

    def _index_one(self, conn: Connection, rec: InstanceRecord, now: float) -> None:
        if self._discarded_copy(conn, rec):
            # a re-send of a SOP instance Orthanc already holds: with OverwriteInstances
            # false (deploy/orthanc_config.py) Orthanc keeps the first copy and drops this
            # one, so the index keeps describing the first (transfer syntax, header
            # attributes) and only the re-sender is recorded, as a source
            return
        study = conn.execute(
            select(studies.c.patient_pk).where(studies.c.study_uid == rec.study_uid)
        ).first()
        study_values = {
            "study_date": rec.study_date,
            "study_time": rec.study_time,
            "accession_number": rec.accession_number,
            "study_id": rec.study_id,
            "description": rec.study_description,
            "referring_physician": rec.referring_physician,
            **pn_fold_values("referring_physician", rec.referring_physician),
        }
        patient_values = {
            "patient_name": rec.patient_name,
            **pn_fold_values("patient_name", rec.patient_name),
            "birth_date": rec.birth_date,
            "sex": rec.sex,
        }
        if study is None:
            self._upsert(
                conn,
                patients,
                {"issuer": rec.issuer, "patient_id": rec.patient_id},
                patient_values,
            )
            patient_pk = conn.execute(
                select(patients.c.pk).where(
                    patients.c.issuer == rec.issuer, patients.c.patient_id == rec.patient_id
                )
            ).scalar_one()
            conn.execute(
                studies.insert().values(
                    study_uid=rec.study_uid, patient_pk=patient_pk, created_at=now, **study_values
                )
            )
        else:
            # the study keeps the patient it was first filed under: a re-send from another
            # institution (whose name would be the issuer) must not create a second patient
            if self._same_patient(conn, study.patient_pk, rec):
                self._upsert(conn, patients, {"pk": study.patient_pk}, patient_values)
            self._upsert(conn, studies, {"study_uid": rec.study_uid}, study_values)
        self._upsert(
            conn,
            series,
            {"series_uid": rec.series_uid},
            {
                "study_uid": rec.study_uid,
                "modality": rec.modality,
                "series_number": rec.series_number,
                "description": rec.series_description,
                "series_date": rec.series_date,
            },
        )
        values = {
            "series_uid": rec.series_uid,
            "study_uid": rec.study_uid,
            "sop_class_uid": rec.sop_class_uid,
            "instance_number": rec.instance_number,
            "number_of_frames": rec.number_of_frames,
            "rows": rec.rows,
            "columns": rec.columns,
            "bits_allocated": rec.bits_allocated,
            "transfer_syntax": rec.transfer_syntax,
            "orthanc_id": rec.orthanc_id,
            "attachment_uuid": rec.attachment_uuid,
            "size": rec.size,
        }
        current = conn.execute(
            select(instances.c.sop_uid).where(instances.c.sop_uid == rec.sop_uid)
        ).first()
        if current is None:
            conn.execute(instances.insert().values(sop_uid=rec.sop_uid, created_at=now, **values))
            return
        conn.execute(update(instances).where(instances.c.sop_uid == rec.sop_uid).values(**values))

    @staticmethod
    def _discarded_copy(conn: Connection, rec: InstanceRecord) -> bool:
        """Whether ``rec`` describes a second copy of an indexed SOP instance whose first
        copy is still stored (Orthanc stores the duplicate's file, then removes it)."""
        current = conn.execute(
            select(instances.c.attachment_uuid).where(instances.c.sop_uid == rec.sop_uid)
        ).first()
        if current is None or not current.attachment_uuid:
            return False
        if current.attachment_uuid == rec.attachment_uuid:
            return False
        still_stored = conn.execute(
            select(attachments.c.uuid)
            .where(attachments.c.uuid == current.attachment_uuid)
            .union(
                select(pending_attachments.c.uuid).where(
                    pending_attachments.c.uuid == current.attachment_uuid
                )
            )
        ).first()
        return still_stored is not None

    @staticmethod
    def _same_patient(conn: Connection, patient_pk: int, rec: InstanceRecord) -> bool:
        row = conn.execute(
            select(patients.c.issuer, patients.c.patient_id).where(patients.c.pk == patient_pk)
        ).first()
        return row is not None and (row.issuer, row.patient_id) == (rec.issuer, rec.patient_id)

    def _add_source(self, conn: Connection, src: SourceRecord, now: float) -> bool:
        known = conn.execute(
            select(instances.c.study_uid).where(instances.c.sop_uid == src.sop_uid)
        ).first()
        if known is None:
            return False
        conn.execute(
            update(studies)
            .where(studies.c.study_uid == known.study_uid, studies.c.owner_institution_id.is_(None))
            # the claim decided who owns the study; a study without one (stored before
            # claims existed) belongs to its first recorded sender
            .values(
                owner_institution_id=func.coalesce(
                    select(study_claims.c.institution_id)
                    .where(study_claims.c.study_uid == known.study_uid)
                    .scalar_subquery(),
                    src.institution_id,
                )
            )
        )
        updated = conn.execute(
            update(instance_sources)
            .where(
                instance_sources.c.sop_uid == src.sop_uid,
                instance_sources.c.institution_id == src.institution_id,
                instance_sources.c.via == src.via,
                instance_sources.c.sender == src.sender,
            )
            .values(
                last_received=now,
                times=instance_sources.c.times + 1,
                remote_address=src.remote_address,
            )
        ).rowcount
        if not updated:
            conn.execute(
                instance_sources.insert().values(
                    sop_uid=src.sop_uid,
                    institution_id=src.institution_id,
                    via=src.via,
                    sender=src.sender,
                    remote_address=src.remote_address,
                    first_received=now,
                    last_received=now,
                    times=1,
                )
            )
        return True

    def claim(
        self,
        study_uid: str,
        sop_uid: str,
        institution_id: int,
        may_write: Callable[[Connection, str], bool],
    ) -> str | None:
        """Claim a study and a SOP instance for an institution about to store it.

        The first institution to store an instance of a Study Instance UID owns that UID
        (and a SOP Instance UID is filed under the study it first came with): an insert
        that cannot succeed twice decides, so two senders racing on a new study cannot
        both win, whichever process or protocol they use. Another institution is let in
        only when ``may_write(conn, study_uid)`` says so (a ``read+report`` grant; called
        inside the transaction for a study the institution does not own).

        Returns None when the instance may be stored; ``"study"`` when the study is
        another institution's, ``"instance"`` when the SOP instance is already filed
        under a study the institution may not write. A refusal claims nothing.
        """
        now = time.time()
        # every instance of a study but its first passes here, so the common case (the
        # sender's own study, a new or its own SOP instance) is a few plain statements;
        # anything else is rolled back and decided below, with the grants
        params = {"study": study_uid, "sop": sop_uid, "inst": institution_id, "now": now}
        try:
            with self._hot.write() as run:
                run(_CLAIM_STUDY, params)
                if run(_CLAIMED_STUDY, params).fetchone()[0] == institution_id:
                    run(_CLAIM_INSTANCE, params)
                    if run(_CLAIMED_INSTANCE, params).fetchone()[0] == study_uid:
                        return None
                raise _ClaimRefused("undecided")
        except _ClaimRefused:
            pass
        # a study or instance indexed without a claim (stored over Orthanc's REST API by
        # an operator, re-indexed after a crash) is claimed for what the index says
        indexed_owner = (
            select(studies.c.owner_institution_id)
            .where(studies.c.study_uid == study_uid)
            .scalar_subquery()
        )
        indexed_study = (
            select(instances.c.study_uid).where(instances.c.sop_uid == sop_uid).scalar_subquery()
        )
        try:
            with self.transaction() as conn:
                conn.execute(
                    self._insert_ignore(study_claims).values(
                        study_uid=study_uid,
                        institution_id=func.coalesce(indexed_owner, institution_id),
                        claimed_at=now,
                    )
                )
                owner = self._claimed_owner(conn, study_uid)
                if owner != institution_id and not may_write(conn, study_uid):
                    raise _ClaimRefused("study")
                conn.execute(
                    self._insert_ignore(instance_claims).values(
                        sop_uid=sop_uid,
                        study_uid=func.coalesce(indexed_study, study_uid),
                        institution_id=institution_id,
                        claimed_at=now,
                    )
                )
                filed = conn.execute(
                    select(instance_claims.c.study_uid).where(instance_claims.c.sop_uid == sop_uid)
                ).scalar_one()
                if filed != study_uid:
                    filed_owner = self._claimed_owner(conn, filed)
                    if filed_owner != institution_id and not may_write(conn, filed):
                        raise _ClaimRefused("instance")
        except _ClaimRefused as refused:
            return refused.what
        return None

    @staticmethod
    def _claimed_owner(conn: Connection, study_uid: str) -> int | None:
        """The institution a study is claimed for; else its owner in the index, if any."""
        row = conn.execute(
            select(study_claims.c.institution_id).where(study_claims.c.study_uid == study_uid)
        ).first()
        if row is not None:
            return int(row[0])
        owner = conn.execute(
            select(studies.c.owner_institution_id).where(studies.c.study_uid == study_uid)
        ).scalar()
        return None if owner is None else int(owner)

    def announce_source(
        self,
        orthanc_id: str,
        institution_id: int,
        via: str,
        sender: str,
        remote_address: str | None = None,
    ) -> None:
        """Announce who is about to store the instance ``orthanc_id`` over HTTP.

        Call it, and let it commit, before handing the file to Orthanc: the indexer then
        records the source (and the study's owner, when the study is new) for the file,
        and qualifies its patient by the institution. Announcing again refreshes it.
        """
        values = {
            "via": via,
            "sender": sender[:128],
            "remote_address": remote_address,
            "announced_at": time.time(),
        }
        key = {"orthanc_id": orthanc_id, "institution_id": institution_id}
        with self.transaction() as conn:
            updated = conn.execute(
                update(pending_sources)
                .where(
                    pending_sources.c.orthanc_id == orthanc_id,
                    pending_sources.c.institution_id == institution_id,
                )
                .values(**values)
            ).rowcount
            if not updated:
                conn.execute(pending_sources.insert().values(**key, **values))

    def withdraw_source(self, orthanc_id: str, institution_id: int) -> None:
        """Drop an announcement whose store failed (Orthanc refused the file)."""
        with self.transaction() as conn:
            conn.execute(
                pending_sources.delete().where(
                    pending_sources.c.orthanc_id == orthanc_id,
                    pending_sources.c.institution_id == institution_id,
                )
            )

    def announced_sources(self, orthanc_ids: Iterable[str]) -> dict[str, list[PendingSource]]:
        """The announcements for these instances, oldest first, by Orthanc id."""
        wanted = sorted(set(orthanc_ids))
        found: dict[str, list[PendingSource]] = {}
        if not wanted:
            return found
        query = (
            select(pending_sources, institutions.c.name)
            .join(institutions, institutions.c.id == pending_sources.c.institution_id)
            .where(pending_sources.c.orthanc_id.in_(wanted))
            .order_by(pending_sources.c.announced_at)
        )
        with self.engine.connect() as conn:
            for row in conn.execute(query):
                m = row._mapping
                found.setdefault(str(m["orthanc_id"]), []).append(
                    PendingSource(
                        orthanc_id=str(m["orthanc_id"]),
                        institution_id=int(m["institution_id"]),
                        institution=str(m["name"]),
                        via=str(m["via"]),
                        sender=str(m["sender"]),
                        remote_address=m["remote_address"],
                        announced_at=float(m["announced_at"]),
                    )
                )
        return found

    def remove_instance(self, orthanc_id: str) -> None:
        """Drop an instance (by Orthanc id) and any series or study left empty."""
        with self.transaction(self.index_engine) as conn:
            self._drop_instances(conn, instances.c.orthanc_id == orthanc_id)

    def forget_attachment(self, attachment_uuid: str) -> None:
        """Drop the index rows of instances stored as ``attachment_uuid`` (it was removed)."""
        with self.transaction(self.index_engine) as conn:
            self._drop_instances(conn, instances.c.attachment_uuid == attachment_uuid)

    @staticmethod
    def _drop_instances(conn: Connection, condition: ColumnElement[bool]) -> None:
        rows = conn.execute(
            select(instances.c.sop_uid, instances.c.series_uid, instances.c.study_uid).where(
                condition
            )
        ).all()
        for row in rows:
            conn.execute(instances.delete().where(instances.c.sop_uid == row.sop_uid))
            conn.execute(instance_sources.delete().where(instance_sources.c.sop_uid == row.sop_uid))
            left = conn.execute(
                select(func.count())
                .select_from(instances)
                .where(instances.c.series_uid == row.series_uid)
            ).scalar_one()
            if not left:
                conn.execute(series.delete().where(series.c.series_uid == row.series_uid))
                left = conn.execute(
                    select(func.count())
                    .select_from(series)
                    .where(series.c.study_uid == row.study_uid)
                ).scalar_one()
                if not left:
                    conn.execute(studies.delete().where(studies.c.study_uid == row.study_uid))

    def sources_of(self, sop_uid: str) -> list[tuple[str, str, str]]:
        """(institution name, via, sender) for every source of an instance."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(institutions.c.name, instance_sources.c.via, instance_sources.c.sender)
                .join(institutions, institutions.c.id == instance_sources.c.institution_id)
                .where(instance_sources.c.sop_uid == sop_uid)
                .order_by(instance_sources.c.first_received)
            )
            return [(str(r[0]), str(r[1]), str(r[2])) for r in rows]

    def patients_with_id(self, patient_id: str) -> list[tuple[str, str]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(patients.c.issuer, patients.c.patient_id).where(
                    patients.c.patient_id == patient_id
                )
            )
            return [(str(r[0]), str(r[1])) for r in rows]

    def instance(self, sop_uid: str) -> InstanceRecord | None:
        query = (
            select(instances, series.c.modality, patients.c.patient_id, patients.c.issuer)
            .join(series, series.c.series_uid == instances.c.series_uid)
            .join(studies, studies.c.study_uid == instances.c.study_uid)
            .join(patients, patients.c.pk == studies.c.patient_pk)
            .where(instances.c.sop_uid == sop_uid)
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        if row is None:
            return None
        m = row._mapping
        return InstanceRecord(
            sop_uid=m["sop_uid"],
            series_uid=m["series_uid"],
            study_uid=m["study_uid"],
            patient_id=m["patient_id"],
            issuer=m["issuer"],
            modality=m["modality"],
            sop_class_uid=m["sop_class_uid"],
            instance_number=m["instance_number"],
            transfer_syntax=m["transfer_syntax"],
            orthanc_id=m["orthanc_id"],
            attachment_uuid=m["attachment_uuid"],
            size=m["size"],
        )

    def indexed_orthanc_ids(self) -> set[str]:
        with self.engine.connect() as conn:
            return {
                str(r[0])
                for r in conn.execute(
                    select(instances.c.orthanc_id).where(instances.c.orthanc_id.is_not(None))
                )
            }

    def holds_data(self) -> bool:
        """Whether anything was ever stored: a blob, a journaled attachment or an instance."""
        with self.engine.connect() as conn:
            return any(
                conn.execute(select(table).limit(1)).first() is not None
                for table in (blobs, pending_attachments, instances)
            )

    def stats(self) -> Stats:
        with self.engine.connect() as conn:
            n_instances = conn.execute(select(func.count()).select_from(instances)).scalar_one()
            n_studies = conn.execute(select(func.count()).select_from(studies)).scalar_one()
            n_att, logical = conn.execute(
                select(func.count(), func.coalesce(func.sum(attachments.c.size), 0))
            ).one()
            n_blobs, unique, stored = conn.execute(
                select(
                    func.count(),
                    func.coalesce(func.sum(blobs.c.size), 0),
                    func.coalesce(func.sum(blobs.c.stored_size), 0),
                )
            ).one()
            unreferenced = conn.execute(
                select(func.count()).select_from(blobs).where(blobs.c.refcount <= 0)
            ).scalar_one()
            n_pending, pending_logical, pending_stored = conn.execute(
                select(
                    func.count(),
                    func.coalesce(func.sum(pending_attachments.c.size), 0),
                    func.coalesce(func.sum(pending_attachments.c.journal_size), 0),
                )
            ).one()
        # journaled attachments count as held: their bytes are on disk until digested
        return Stats(
            int(n_instances),
            int(n_studies),
            int(n_att) + int(n_pending),
            int(logical) + int(pending_logical),
            int(unique),
            int(stored) + int(pending_stored),
            int(n_blobs),
            int(unreferenced),
            int(n_pending),
        )


def _queue_params(uuid: str, header: bytes, size: int, sender: Sender | None) -> dict[str, Any]:
    return {
        "uuid": uuid,
        "header": header,
        "size": size,
        "institution_id": sender.institution_id if sender else None,
        "institution": sender.institution if sender else None,
        "ae_title": sender.ae_title if sender else None,
    }


def _pending(row: Any) -> PendingAttachment:
    return PendingAttachment(
        str(row[0]), int(row[1]), int(row[2]), int(row[3]), str(row[4]), bytes(row[5])
    )


def _blob_record(m: Any) -> BlobRecord:
    return BlobRecord(
        id=bytes(m["id"]),
        size=int(m["size"]),
        stored_size=int(m["stored_size"]),
        flags=int(m["flags"]),
        kek_id=str(m["kek_id"]),
        wrapped_key=bytes(m["wrapped_key"]),
        kind=str(m["kind"]),
        tier=str(m["tier"]),
        payload=None if m["payload"] is None else bytes(m["payload"]),
    )
