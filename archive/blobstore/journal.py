"""The write-behind journal's entries: sealed whole, read back and checked."""

from __future__ import annotations

import logging

from archive.blobstore.base import StoreBase
from archive.catalog import PendingAttachment, Sender
from archive.split import pixel_data_offset
from security.api import Conflict, IntegrityError, open_sealed, seal

__all__ = [
    "Journaling",
]

logger = logging.getLogger(__name__)


class Journaling(StoreBase):
    """Attachments journaled whole before they are digested (write-behind)."""

    @staticmethod
    def _journal_aad(uuid: str) -> bytes:
        return b"journal:" + uuid.encode()

    def _journal_put(
        self, uuid: str, content_type: int, data: bytes, sender: Sender | None
    ) -> None:
        assert self.journal is not None and self._digest_queue is not None
        kek_id, kek = self.keys.current()
        sealed = seal(data, 0, self._journal_aad(uuid), kek_id, kek)
        try:
            self.journal.write(uuid, sealed.payload)
        except FileExistsError as exc:
            raise Conflict(f"attachment {uuid} already exists") from exc
        try:
            self.catalog.add_pending(
                PendingAttachment(
                    uuid, content_type, len(data), len(sealed.payload), kek_id, sealed.wrapped_key
                ),
                index_header=data[: pixel_data_offset(data) or len(data)],
                sender=sender,
            )
        except BaseException:
            self.journal.delete(uuid)
            raise
        self._digest_queue.put(uuid)

    def _read_journal(self, pending: PendingAttachment) -> bytes:
        assert self.journal is not None
        _flags, data = open_sealed(
            self.journal.read(pending.uuid),
            self._journal_aad(pending.uuid),
            pending.wrapped_key,
            self.keys.kek(pending.kek_id),
        )
        if len(data) != pending.size:
            raise IntegrityError(f"journal entry {pending.uuid} has the wrong size")
        return data
