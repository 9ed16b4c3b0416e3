"""The indexer: a process of its own that turns the index queue into the study index.

The storage area queues each stored DICOM file's header and sender (and each removal) in
the same transaction that stores the file; this process reads the queue in order, reads
the indexed attributes from the headers and writes them in batches. Running it outside
Orthanc keeps its Python work off the interpreter lock that Orthanc's DICOM threads need.
The queue is durable, so a crash of either process loses nothing; ``vna stats`` shows
the backlog.

Run by ``vna up`` as ``python -m compose.indexer --home DIR`` (its composition root).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import replace
from typing import Any

from archive.catalog import (
    Catalog,
    IndexEntry,
    InstanceRecord,
    PendingSource,
    Sender,
    SourceRecord,
)
from archive.headers import header_record
from security.api import AuditEvent, AuditLog

__all__ = ["Indexer"]

logger = logging.getLogger(__name__)


class Indexer:
    """Drains the index queue of one catalog."""

    def __init__(self, catalog: Catalog, batch: int = 50, audit: AuditLog | None = None) -> None:
        self.catalog = catalog
        self.batch = batch
        self.audit = audit

    def run_once(self) -> int:
        """Index one batch of queued entries; returns how many were consumed."""
        entries = self.catalog.next_index_entries(self.batch)
        if not entries:
            return 0
        parsed: list[tuple[IndexEntry, InstanceRecord | None]] = []
        for entry in entries:
            record = None if entry.removed else self._parse(entry)
            parsed.append((entry, record))
        # files stored over HTTP (STOW-RS through the gateway) come without a sender: the
        # gateway announced theirs before posting them, by Orthanc instance id
        announced = self.catalog.announced_sources(
            r.orthanc_id for e, r in parsed if r is not None and e.sender is None and r.orthanc_id
        )
        steps: list[tuple[str, Any]] = []
        records: list[InstanceRecord] = []
        sources: list[SourceRecord] = []
        consumed: list[PendingSource] = []
        # (sender, study) -> (patient, instances): one audit record per study and sender
        stored: dict[tuple[Sender, str], tuple[str, int]] = {}
        for entry, record in parsed:
            if entry.removed:
                if records:
                    steps.append(("index", (records, sources)))
                    records, sources = [], []
                steps.append(("forget", entry.attachment_uuid))
                continue
            if record is None:
                continue
            sender = entry.sender
            if sender is not None:
                key = (sender, record.study_uid)
                stored[key] = (record.patient_id, stored.get(key, ("", 0))[1] + 1)
                sources.append(
                    SourceRecord(record.sop_uid, sender.institution_id, "dimse", sender.ae_title)
                )
            else:
                mine = announced.pop(record.orthanc_id or "", [])
                consumed.extend(mine)
                sources.extend(
                    SourceRecord(
                        record.sop_uid, a.institution_id, a.via, a.sender, a.remote_address
                    )
                    for a in mine
                )
                if not record.issuer:
                    # no IssuerOfPatientID: qualify the patient by who stored the file
                    record = replace(record, issuer=mine[0].institution if mine else "local")
            records.append(record)
        if records:
            steps.append(("index", (records, sources)))
        if consumed:
            steps.append(("announced", consumed))
        self.catalog.apply_index_entries(entries[-1].seq, steps)
        self._audit_stored(stored)
        return len(entries)

    def _audit_stored(self, stored: dict[tuple[Sender, str], tuple[str, int]]) -> None:
        """DICOM Instances Transferred (create) for what arrived over DIMSE.

        Recorded when indexed, not on the C-STORE path (which stays free of this work);
        a crash between indexing and this append loses the record, never the data. STOW-RS
        stores are audited by the gateway.
        """
        if self.audit is None:
            return
        for (sender, study_uid), (patient, count) in stored.items():
            self.audit.append(
                AuditEvent(
                    "instances-transferred",
                    "C",
                    0,
                    sender.ae_title,
                    sender.institution,
                    study_uid=study_uid,
                    patient=patient,
                    detail={"via": "dimse", "instances": str(count)},
                )
            )

    @staticmethod
    def _parse(entry: IndexEntry) -> InstanceRecord | None:
        """The index row of a stored file; its issuer is empty when only the sender can tell."""
        sender = entry.sender
        try:
            return header_record(
                entry.header or b"",
                sender.institution if sender else "",
                attachment_uuid=entry.attachment_uuid,
                size=entry.size or 0,
            )
        except Exception:
            logger.exception(
                "cannot index stored file %s; skipped (its instance stays "
                "retrievable through Orthanc)",
                entry.attachment_uuid,
            )
            return None

    def drain(self) -> int:
        """Index until the queue is empty (tests, benchmarks)."""
        total = 0
        while done := self.run_once():
            total += done
        return total

    def run(
        self, stop: threading.Event, idle_seconds: float = 0.25, burst_limit: int = 500
    ) -> None:
        """Index until ``stop``; during an ingest burst, wait for it to settle.

        Every batch takes the catalog's write lock that the storage area needs on each
        C-STORE, so while the queue is still growing (and below ``burst_limit``) the indexer
        waits: the index lags by a moment and the C-STOREs do not.
        """
        previous = -1
        while not stop.is_set():
            try:
                backlog = self.catalog.index_backlog()
                if backlog == 0 or (previous < backlog < burst_limit):
                    previous = backlog
                    stop.wait(idle_seconds)
                    continue
                self.run_once()
                previous = self.catalog.index_backlog()
            except Exception:
                logger.exception("indexing failed; retrying in 5 s")
                stop.wait(5)
