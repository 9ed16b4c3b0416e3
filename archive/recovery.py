"""Crash recovery and reconciliation with Orthanc's own index.

Orthanc acknowledges an instance only after its index commits, and its index names the
attachments it holds. After a crash the archive may hold attachments Orthanc never
committed (stored, then killed before the index commit) and payload files whose catalog
row never committed (published, then killed before commit). Both are removed here, while
Orthanc is stopped; nothing Orthanc references is ever touched.
"""

from __future__ import annotations

import logging
import sqlite3
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from archive.blobstore import BlobStore

__all__ = ["RecoveryReport", "orthanc_attachment_uuids", "recover"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RecoveryReport:
    staged_published: int
    staged_removed: int
    orphan_payloads_removed: int
    orphan_attachments_removed: int


def orthanc_attachment_uuids(index_file: Path) -> set[str] | None:
    """Attachment uuids in Orthanc's SQLite index, or None if it cannot be read."""
    if not index_file.exists():
        # no index at all is not "Orthanc references nothing": never reconcile against it
        return None
    try:
        uri = f"file:{urllib.parse.quote(str(index_file))}?mode=ro"
        conn = sqlite3.connect(uri, uri=True, timeout=5)
        try:
            return {str(row[0]) for row in conn.execute("SELECT uuid FROM AttachedFiles")}
        finally:
            conn.close()
    except sqlite3.Error as exc:
        logger.warning("cannot read Orthanc's index %s: %s", index_file, exc)
        return None


def recover(store: BlobStore, orthanc_index: Path, since: float) -> RecoveryReport:
    """Repair what an unclean stop left; call only while Orthanc is not running."""
    republished, staged = store.finish_interrupted_publishes()
    if store.journal is not None:
        # journal entries whose catalog row never committed were never acknowledged
        pending = {p.uuid for p in store.catalog.all_pending()}
        for name in list(store.journal.names()):
            if name not in pending:
                store.journal.delete(name)
                staged += 1
    # only files from the interrupted run: anything older is for `vna fsck` to report
    orphans = store.remove_orphan_payloads(newer_than=since - 60)
    removed = 0
    referenced = orthanc_attachment_uuids(orthanc_index)
    if referenced is not None:
        for uuid, _content_type in store.catalog.attachments_created_before(time.time()):
            if uuid not in referenced:
                store.remove(uuid)
                removed += 1
    report = RecoveryReport(republished, staged, orphans, removed)
    logger.info("recovery after unclean stop: %s", report)
    return report
