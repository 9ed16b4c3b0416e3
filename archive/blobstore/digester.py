"""The write-behind digester: a thread that splits and stores journaled attachments."""

from __future__ import annotations

import logging
import queue
import threading
import time

from archive.blobstore.write import Writer
from security.api import NotFound

__all__ = [
    "Digester",
]

logger = logging.getLogger(__name__)


class Digester(Writer):
    """Digests what :meth:`Writer.put` journaled, in the background."""

    def digest(self, uuid: str) -> bool:
        """Split, deduplicate and compress one journaled attachment; False if it is gone."""
        pending = self.catalog.pending(uuid)
        if pending is None or self.journal is None:
            return False
        data = self._read_journal(pending)
        try:
            self._put_parts(uuid, pending.content_type, data, from_pending=True)
        except NotFound:
            return False  # removed meanwhile; the remover deleted the journal entry
        self.journal.delete(uuid)
        return True

    def start_digester(self) -> None:
        """Turn write-behind on: journal large DICOM files, digest them on a thread."""
        if self.journal is None or self._digester is not None:
            return
        self._digest_queue = queue.Queue()
        for pending in self.catalog.all_pending():  # left by the previous run
            self._digest_queue.put(pending.uuid)
        self._digester = threading.Thread(
            target=self._digest_loop, name="vna-digester", daemon=True
        )
        self._digester.start()

    def stop_digester(self, timeout: float = 60.0) -> None:
        """Finish the attachment in hand and stop; the rest waits for the next start."""
        if self._digest_queue is not None and self._digester is not None:
            self._digest_queue.put(None)
            self._digester.join(timeout)
            self._digester = None

    def flush_digester(self, timeout: float = 60.0) -> bool:
        """Wait until every queued attachment is digested (tests, benchmarks)."""
        if self._digest_queue is None:
            return True
        deadline = time.monotonic() + timeout
        with self._digest_queue.all_tasks_done:
            while self._digest_queue.unfinished_tasks:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._digest_queue.all_tasks_done.wait(remaining)
        return True

    def _digest_loop(self) -> None:
        assert self._digest_queue is not None
        while True:
            uuid = self._digest_queue.get()
            try:
                if uuid is None:
                    return
                self.digest(uuid)
            except Exception:
                logger.exception(
                    "digesting attachment %s failed; it stays journaled and is "
                    "retried at the next start",
                    uuid,
                )
            finally:
                self._digest_queue.task_done()
