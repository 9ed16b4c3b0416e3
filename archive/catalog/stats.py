"""What the catalog holds, counted across its parts."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import (
    func,
    select,
)

from archive.catalog.database import Database
from archive.catalog.schema import attachments, blobs, instances, pending_attachments, studies

__all__ = [
    "Reports",
    "Stats",
]


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


class Reports(Database):
    """Figures over every part of the catalog."""

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
