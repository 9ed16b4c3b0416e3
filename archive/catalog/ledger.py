"""The blob ledger: blobs, attachments and their parts, journaled (pending) attachments."""

from __future__ import annotations

import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    exc,
    func,
    select,
    update,
)

from archive.catalog.database import Database, _in_lists
from archive.catalog.index_queue import _QUEUE_REMOVED, _QUEUE_STORED, Sender, _queue_params
from archive.catalog.schema import attachment_parts, attachments, blobs, pending_attachments
from security.api import Conflict, NotFound

__all__ = [
    "BlobRecord",
    "Ledger",
    "PendingAttachment",
]


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
class PendingAttachment:
    """A journaled attachment waiting for the digester."""

    uuid: str
    content_type: int
    size: int
    journal_size: int
    kek_id: str
    wrapped_key: bytes


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


class Ledger(Database):
    """The blobs and the attachments made of them."""

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
        with self.write_transaction() as conn:
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
        with self.write_transaction() as conn:
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
