"""Background indexing: keeps the study index off the DICOM path.

The storage area hands each stored DICOM file's header to this thread; it reads the indexed
attributes and writes batches in one transaction each. Removing a file's attachment removes
its index row (Orthanc removes attachments when it deletes an instance, and right after
storing when it finds an instance is a duplicate). The index is derived data: after a
crash the plugin re-indexes whatever Orthanc holds that the catalog lacks.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any

from archive.catalog import Catalog, InstanceRecord, SourceRecord
from archive.headers import header_record

__all__ = ["Indexer", "Sender", "StoredFile"]

logger = logging.getLogger(__name__)

_BATCH = 256


@dataclass(frozen=True, slots=True)
class Sender:
    """Who sent a file over DIMSE: the calling AE and the institution that owns it."""

    institution_id: int
    institution: str
    ae_title: str


@dataclass(frozen=True, slots=True)
class StoredFile:
    """A DICOM file the storage area stored: its attachment, header bytes and sender."""

    attachment_uuid: str
    header: bytes
    size: int
    sender: Sender | None


@dataclass(frozen=True, slots=True)
class _Removed:
    attachment_uuid: str


class Indexer:
    """One thread that indexes stored files and records their senders, in batches."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._queue: queue.Queue[Any] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="vna-indexer", daemon=True)
        self._started = False

    def start(self) -> None:
        if not self._started:
            self._started = True
            self._thread.start()

    def stored(self, item: StoredFile) -> None:
        self._queue.put(item)

    def removed(self, attachment_uuid: str) -> None:
        self._queue.put(_Removed(attachment_uuid))

    def stop(self, timeout: float = 30.0) -> None:
        if self._started and self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout)

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until everything queued so far is written (for tests and shutdown)."""
        deadline = time.monotonic() + timeout
        with self._queue.all_tasks_done:
            while self._queue.unfinished_tasks:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._queue.all_tasks_done.wait(remaining)
        return True

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < _BATCH and batch[-1] is not None:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                self._write([item for item in batch if item is not None])
            except Exception:
                logger.exception(
                    "indexing a batch failed; its instances are re-indexed at the next start"
                )
            finally:
                for _ in batch:
                    self._queue.task_done()
            if batch[-1] is None:
                return

    def _write(self, batch: list[Any]) -> None:
        """Apply events in order: runs of stored files in one transaction, then removals."""
        records: list[InstanceRecord] = []
        sources: list[SourceRecord] = []
        for item in batch:
            if isinstance(item, _Removed):
                if records:
                    self.catalog.index_batch(records, sources)
                    records, sources = [], []
                self.catalog.forget_attachment(item.attachment_uuid)
                continue
            sender = item.sender
            try:
                record = header_record(
                    item.header,
                    sender.institution if sender else "local",
                    attachment_uuid=item.attachment_uuid,
                    size=item.size,
                )
            except Exception:
                logger.exception(
                    "cannot index stored file %s; it is re-indexed at the next start",
                    item.attachment_uuid,
                )
                continue
            records.append(record)
            if sender is not None:
                sources.append(
                    SourceRecord(record.sop_uid, sender.institution_id, "dimse", sender.ae_title)
                )
        if records:
            self.catalog.index_batch(records, sources)
