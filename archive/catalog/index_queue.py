"""The index queue: stored and removed DICOM files waiting for the indexer process.

The ledger writes to it in the same transaction as the attachment itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from archive.catalog.database import Database

__all__ = [
    "IndexEntry",
    "IndexQueue",
    "Sender",
]


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


_QUEUE_STORED = (
    "INSERT INTO index_queue (attachment_uuid, header, size, institution_id, institution, "
    "ae_title, removed) VALUES (:uuid, :header, :size, :institution_id, :institution, "
    ":ae_title, 0)"
)
_QUEUE_REMOVED = "INSERT INTO index_queue (attachment_uuid, removed) VALUES (:uuid, 1)"


class IndexQueue(Database):
    """What the indexer process reads; ``StudyIndex.apply_index_entries`` consumes it."""

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


def _queue_params(uuid: str, header: bytes, size: int, sender: Sender | None) -> dict[str, Any]:
    return {
        "uuid": uuid,
        "header": header,
        "size": size,
        "institution_id": sender.institution_id if sender else None,
        "institution": sender.institution if sender else None,
        "ae_title": sender.ae_title if sender else None,
    }
