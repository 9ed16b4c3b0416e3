"""Maintenance: garbage collection, recovery after a crash, fsck, key rotation."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from archive.blobstore.base import INLINE
from archive.blobstore.read import Reader
from security.api import IntegrityError, NotFound, open_sealed, rewrap

__all__ = [
    "FsckReport",
    "Maintenance",
]

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class FsckReport:
    """What ``vna fsck`` found; ``ok`` is False on any damage."""

    blobs_checked: int = 0
    bytes_checked: int = 0
    damaged_blobs: list[tuple[str, str]] = field(default_factory=list)
    refcount_errors: list[tuple[str, int, int]] = field(default_factory=list)
    dangling_parts: list[tuple[str, str]] = field(default_factory=list)
    orphan_payloads: list[str] = field(default_factory=list)
    missing_attachments: list[str] = field(default_factory=list)
    orphan_attachments: list[str] = field(default_factory=list)
    damaged_attachments: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (
            self.damaged_blobs
            or self.refcount_errors
            or self.dangling_parts
            or self.orphan_payloads
            or self.missing_attachments
            or self.orphan_attachments
            or self.damaged_attachments
        )


class Maintenance(Reader):
    """What the operator (``vna gc``, ``fsck``, ``rotate-keys``) and recovery run."""

    def collect(
        self, grace_seconds: float | None = None, progress: Callable[[int], None] | None = None
    ) -> int:
        """Delete blobs unreferenced for longer than the grace period; returns the count."""
        grace = self.settings.gc_grace_seconds if grace_seconds is None else grace_seconds
        cutoff = self.clock() - grace
        removed = 0
        while True:
            batch = self.catalog.collectable_blobs(cutoff)
            if not batch:
                break
            for blob_id in batch:
                if self.catalog.collect_blob(
                    blob_id, cutoff, functools.partial(self._delete_payload, blob_id.hex())
                ):
                    removed += 1
                    if progress:
                        progress(1)
        self.hot.sweep_staged(max(grace, 60.0))
        return removed

    def _delete_payload(self, key: str, tier: str) -> None:
        if tier != INLINE:
            self.hot.delete(key)

    def finish_interrupted_publishes(self) -> tuple[int, int]:
        """After a crash: move staged payloads whose catalog row committed into place
        (a lost rename), and delete the others. Returns (published, discarded)."""
        published = discarded = 0
        for staged in list(self.hot.staged_payloads()):
            try:
                blob_id = bytes.fromhex(staged.key)
            except ValueError:
                blob_id = b""
            record = self.catalog.blob(blob_id) if blob_id else None
            if (
                record is not None
                and record.tier == self.hot.name
                and not self.hot.exists(staged.key)
            ):
                try:
                    open_sealed(
                        self.hot.read_staged(staged),
                        record.id,
                        record.wrapped_key,
                        self.keys.kek(record.kek_id),
                    )
                except IntegrityError:
                    pass  # a racing writer's copy under another data key: not ours to keep
                else:
                    self.hot.publish(staged)
                    published += 1
                    continue
            self.hot.discard(staged)
            discarded += 1
        return published, discarded

    def remove_orphan_payloads(
        self, *, newer_than: float | None = None, older_than: float | None = None
    ) -> int:
        """Delete payload files no catalog row names (left by a crash between publish and
        commit), restricted to those modified in the given window; returns the count."""
        known = {record.id.hex() for record in self.catalog.iter_blobs()}
        removed = 0
        for key in self.hot.iter_keys():
            if key in known:
                continue
            try:
                mtime = self.hot.path(key).stat().st_mtime
            except FileNotFoundError:
                continue
            if (newer_than is not None and mtime < newer_than) or (
                older_than is not None and mtime >= older_than
            ):
                continue
            self.hot.delete(key)
            removed += 1
        return removed

    def check(
        self, progress: Callable[[int], None] | None = None, attachments: bool = False
    ) -> FsckReport:
        """Verify every blob, every reference and every payload file."""
        report = FsckReport()
        known: set[str] = set()
        for record in self.catalog.iter_blobs():
            known.add(record.id.hex())
            try:
                self.read_blob(record)
            except (IntegrityError, NotFound) as exc:
                report.damaged_blobs.append((record.id.hex(), str(exc)))
            report.blobs_checked += 1
            report.bytes_checked += record.size
            if progress:
                progress(1)
        report.refcount_errors = [(b.hex(), s, a) for b, s, a in self.catalog.refcount_mismatches()]
        report.dangling_parts = [(u, b.hex()) for u, b in self.catalog.dangling_parts()]
        report.orphan_payloads = [key for key in self.hot.iter_keys() if key not in known]
        for pending in self.catalog.all_pending():
            try:
                self._read_journal(pending)
            except (IntegrityError, NotFound) as exc:
                report.damaged_attachments.append((pending.uuid, str(exc)))
        if attachments:
            for uuid in sorted(self.catalog.attachment_uuids()):
                try:
                    self.verify_attachment(uuid)
                except (IntegrityError, NotFound) as exc:
                    report.damaged_attachments.append((uuid, str(exc)))
        return report

    def rewrap_all(self, progress: Callable[[int], None] | None = None) -> int:
        """Re-wrap every data key not under the current KEK (resumable, idempotent)."""
        current_id, current = self.keys.current()
        old = [key_id for key_id in self.keys.key_ids() if key_id != current_id]
        if not old:
            return 0
        total = self.catalog.rewrap_pending(
            old, current_id, lambda wrapped, kek_id: rewrap(wrapped, self.keys.kek(kek_id), current)
        )
        while True:
            done = self.catalog.rewrap_batch(
                old,
                current_id,
                lambda wrapped, kek_id: rewrap(wrapped, self.keys.kek(kek_id), current),
            )
            if not done:
                return total
            total += done
            if progress:
                progress(done)
