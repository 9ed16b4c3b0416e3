"""The catalog: blobs, attachments and their parts, institutions, and the study index.

Each part owns its tables (``schema.py``) and works on the one database (``database.py``):
``ledger.py`` the blobs and attachments, ``index_queue.py`` the files waiting for the
indexer, ``institutions.py`` institutions and AE titles, ``study_index.py`` the study index
with provenance and claims, ``stats.py`` figures over all of them. ``Catalog`` is all of
them on one database, as one process opens it.
"""

from __future__ import annotations

from archive.catalog.database import Database
from archive.catalog.index_queue import IndexEntry, IndexQueue, Sender
from archive.catalog.institutions import (
    Institution,
    Institutions,
    institution_id,
    institution_names,
)
from archive.catalog.ledger import BlobRecord, Ledger, PendingAttachment
from archive.catalog.schema import (
    instance_sources,
    instances,
    institutions,
    metadata,
    patients,
    series,
    studies,
)
from archive.catalog.stats import Reports, Stats
from archive.catalog.study_index import (
    InstanceRecord,
    PendingSource,
    SourceRecord,
    StudyIndex,
    StudyOwner,
    owned_patient,
    patient_identities,
    pn_fold_values,
    study_owner,
)

__all__ = [
    "BlobRecord",
    "Catalog",
    "Database",
    "IndexEntry",
    "IndexQueue",
    "InstanceRecord",
    "Institution",
    "Institutions",
    "Ledger",
    "PendingAttachment",
    "PendingSource",
    "Reports",
    "Sender",
    "SourceRecord",
    "Stats",
    "StudyIndex",
    "StudyOwner",
    "instance_sources",
    "instances",
    "institution_id",
    "institution_names",
    "institutions",
    "metadata",
    "owned_patient",
    "patient_identities",
    "patients",
    "pn_fold_values",
    "series",
    "studies",
    "study_owner",
]


class Catalog(Ledger, IndexQueue, Institutions, StudyIndex, Reports):
    """Access to the catalog database; one instance per process, thread-safe."""
