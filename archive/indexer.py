"""Background indexing: keeps catalog writes for the study index off the DICOM path.

Orthanc calls the stored-instance callback on the thread that answers the C-STORE, so the
callback only queues what Orthanc already parsed; this thread writes batches in one
transaction each. The index is derived data: after a crash the plugin re-indexes whatever
Orthanc holds that the catalog lacks.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from archive.catalog import Catalog, InstanceRecord, SourceRecord

__all__ = ["Indexer", "Stored"]

logger = logging.getLogger(__name__)

_BATCH = 256
# a source is recorded only once its instance is indexed; give the instance this long
_RECEIPT_PATIENCE = 120.0


@dataclass(frozen=True, slots=True)
class Stored:
    """An instance Orthanc stored; the record lacks what must be asked of Orthanc."""

    instance_id: str
    record: Callable[[str | None], InstanceRecord]
    source: SourceRecord | None = None


@dataclass(slots=True)
class _Pending:
    source: SourceRecord
    since: float = field(default_factory=time.monotonic)


class Indexer:
    """One thread that indexes stored instances and records their sources in batches."""

    def __init__(self, catalog: Catalog, attachment_uuid: Callable[[str], str | None]) -> None:
        self.catalog = catalog
        self.attachment_uuid = attachment_uuid
        self._queue: queue.Queue[Any] = queue.Queue()
        self._pending: list[_Pending] = []
        self._thread = threading.Thread(target=self._run, name="vna-indexer", daemon=True)
        self._started = False

    def start(self) -> None:
        if not self._started:
            self._started = True
            self._thread.start()

    def stored(self, item: Stored) -> None:
        self._queue.put(item)

    def received(self, source: SourceRecord) -> None:
        """Queue a receipt: recorded once its instance is indexed."""
        self._queue.put(source)

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
            try:
                # receipts waiting for their instance are looked at again every 0.2 s
                first = self._queue.get(timeout=0.2 if self._pending else None)
            except queue.Empty:
                self._write([])
                continue
            batch = [first]
            while len(batch) < _BATCH and first is not None:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = any(item is None for item in batch)
            try:
                self._write([item for item in batch if item is not None])
            finally:
                for _ in batch:
                    self._queue.task_done()
            if stop:
                return

    def _write(self, batch: list[Any]) -> None:
        records: list[InstanceRecord] = []
        sources: list[SourceRecord] = []
        for item in batch:
            if isinstance(item, Stored):
                try:
                    records.append(item.record(self.attachment_uuid(item.instance_id)))
                except Exception:
                    logger.exception(
                        "cannot index instance %s; it will be re-indexed at the next start",
                        item.instance_id,
                    )
                    continue
                if item.source is not None:
                    sources.append(item.source)
            elif isinstance(item, SourceRecord):
                self._pending.append(_Pending(item))
        sources.extend(p.source for p in self._pending)
        since = {id(p.source): p.since for p in self._pending}
        try:
            unmatched = self.catalog.index_batch(records, sources)
        except Exception:
            logger.exception(
                "indexing %d instances failed; they will be re-indexed at the next start",
                len(records),
            )
            self._pending = []
            return
        now = time.monotonic()
        keep = []
        for src in unmatched:
            started = since.get(id(src), now)
            if now - started < _RECEIPT_PATIENCE:
                keep.append(_Pending(src, started))
            else:
                logger.info("instance %s never got stored; not recording its source", src.sop_uid)
        self._pending = keep
