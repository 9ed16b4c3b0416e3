"""The catalog's tables, grouped by the part of the catalog that writes them.

A table is created and changed only by a migration (``archive.migrations``); this is
what the code expects the migrations to have made.
"""

from __future__ import annotations

from sqlalchemy import (
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    UniqueConstraint,
)

__all__ = [
    "attachment_parts",
    "attachments",
    "blobs",
    "index_queue",
    "institution_aes",
    "institutions",
    "instance_claims",
    "instance_sources",
    "instances",
    "metadata",
    "patients",
    "pending_attachments",
    "pending_sources",
    "series",
    "studies",
    "study_claims",
]

metadata = MetaData()

# -- the blob ledger (ledger.py) ---------------------------------------------------------

blobs = Table(
    "blobs",
    metadata,
    Column("id", LargeBinary(32), primary_key=True),
    Column("size", Integer, nullable=False),
    Column("stored_size", Integer, nullable=False),
    Column("flags", Integer, nullable=False),
    Column("kek_id", String(16), nullable=False),
    Column("wrapped_key", LargeBinary(40), nullable=False),
    Column("refcount", Integer, nullable=False),
    Column("tier", String(32), nullable=False, default="hot"),
    Column("kind", String(16), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("unreferenced_since", Float),
    # small payloads (headers, delimiters) live in the row: no file, no fsync
    Column("payload", LargeBinary),
    Index("ix_blobs_unreferenced", "unreferenced_since"),
    Index("ix_blobs_kek", "kek_id"),
)

attachments = Table(
    "attachments",
    metadata,
    Column("uuid", String(64), primary_key=True),
    Column("content_type", Integer, nullable=False),
    Column("size", Integer, nullable=False),
    Column("digest", LargeBinary(32), nullable=False),
    Column("created_at", Float, nullable=False),
)

# attachments acknowledged to Orthanc and journaled, not yet split, deduplicated, compressed
pending_attachments = Table(
    "pending_attachments",
    metadata,
    Column("uuid", String(64), primary_key=True),
    Column("content_type", Integer, nullable=False),
    Column("size", Integer, nullable=False),
    Column("journal_size", Integer, nullable=False),
    Column("kek_id", String(16), nullable=False),
    Column("wrapped_key", LargeBinary(40), nullable=False),
    Column("created_at", Float, nullable=False),
)

attachment_parts = Table(
    "attachment_parts",
    metadata,
    Column(
        "uuid", String(64), ForeignKey("attachments.uuid", ondelete="CASCADE"), primary_key=True
    ),
    Column("seq", Integer, primary_key=True),
    Column("blob_id", LargeBinary(32), ForeignKey("blobs.id"), nullable=False),
    Column("length", Integer, nullable=False),
    Index("ix_parts_blob", "blob_id"),
)

# -- the index queue (index_queue.py) ---------------------------------------------------

# stored and removed DICOM files waiting for the indexer process, in order; written in the
# same transaction as the attachment itself, so the index can always catch up
index_queue = Table(
    "index_queue",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("attachment_uuid", String(64), nullable=False),
    Column("header", LargeBinary),
    Column("size", Integer),
    Column("institution_id", Integer),
    Column("institution", String(128)),
    Column("ae_title", String(16)),
    Column("removed", Integer, nullable=False, default=0),
)

# -- institutions and their AE titles (institutions.py) ---------------------------------

institutions = Table(
    "institutions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(128), nullable=False, unique=True),
    Column("created_at", Float, nullable=False),
)

institution_aes = Table(
    "institution_aes",
    metadata,
    Column("ae_title", String(16), primary_key=True),
    Column("institution_id", Integer, ForeignKey("institutions.id"), nullable=False),
    Column("host", String(255)),
    Column("port", Integer),
)

# -- the study index, provenance and claims (study_index.py) ----------------------------

patients = Table(
    "patients",
    metadata,
    Column("pk", Integer, primary_key=True, autoincrement=True),
    Column("issuer", String(128), nullable=False),
    Column("patient_id", String(128), nullable=False),
    Column("patient_name", String(256)),
    Column("birth_date", String(16)),
    Column("sex", String(16)),
    UniqueConstraint("issuer", "patient_id", name="uq_patient_issuer_id"),
    # PatientName's alphabetic, ideographic and phonetic groups, folded for matching
    # (archive.names; revision 0005); last, as SQLite appends added columns
    Column("patient_name_fold_a", String(256)),
    Column("patient_name_fold_i", String(256)),
    Column("patient_name_fold_p", String(256)),
)

studies = Table(
    "studies",
    metadata,
    Column("study_uid", String(64), primary_key=True),
    Column("patient_pk", Integer, ForeignKey("patients.pk"), nullable=False),
    Column("study_date", String(16)),
    Column("study_time", String(32)),
    Column("accession_number", String(64)),
    Column("study_id", String(64)),
    Column("description", String(256)),
    Column("referring_physician", String(256)),
    Column("created_at", Float, nullable=False),
    # the institution whose instance was recorded first; others reach it only by a grant
    Column("owner_institution_id", Integer, ForeignKey("institutions.id")),
    Index("ix_studies_date", "study_date"),
    Index("ix_studies_owner", "owner_institution_id"),
    Index("ix_studies_patient", "patient_pk"),
    Index("ix_studies_accession", "accession_number"),
    # QIDO's study order (date, uid): a study list with a limit reads its first rows in
    # index order instead of sorting each date's studies (100k studies: ~0.1 ms, not ~300)
    Index("ix_studies_date_uid", "study_date", "study_uid"),
    # ReferringPhysicianName folded as patients' PatientName (revision 0005)
    Column("referring_physician_fold_a", String(256)),
    Column("referring_physician_fold_i", String(256)),
    Column("referring_physician_fold_p", String(256)),
)

series = Table(
    "series",
    metadata,
    Column("series_uid", String(64), primary_key=True),
    Column("study_uid", String(64), ForeignKey("studies.study_uid"), nullable=False),
    Column("modality", String(16)),
    Column("series_number", Integer),
    Column("description", String(256)),
    Column("series_date", String(16)),
    Index("ix_series_study", "study_uid"),
)

instances = Table(
    "instances",
    metadata,
    Column("sop_uid", String(64), primary_key=True),
    Column("series_uid", String(64), ForeignKey("series.series_uid"), nullable=False),
    Column("study_uid", String(64), nullable=False),
    Column("sop_class_uid", String(64)),
    Column("instance_number", Integer),
    Column("number_of_frames", Integer),
    Column("rows", Integer),
    Column("columns", Integer),
    Column("transfer_syntax", String(64)),
    Column("orthanc_id", String(64), unique=True),
    Column("attachment_uuid", String(64)),
    Column("size", Integer),
    Column("created_at", Float, nullable=False),
    # last: added by revision 0002, and SQLite appends added columns
    Column("bits_allocated", Integer),
    Index("ix_instances_series", "series_uid"),
    Index("ix_instances_study", "study_uid"),
)

instance_sources = Table(
    "instance_sources",
    metadata,
    Column("sop_uid", String(64), primary_key=True),
    Column("institution_id", Integer, ForeignKey("institutions.id"), primary_key=True),
    Column("via", String(16), primary_key=True),
    Column("sender", String(128), primary_key=True),
    Column("remote_address", String(64)),
    Column("first_received", Float, nullable=False),
    Column("last_received", Float, nullable=False),
    Column("times", Integer, nullable=False),
    Index("ix_sources_institution", "institution_id"),
)

# provenance announced by the gateway before it hands a STOW-RS instance to Orthanc: a file
# stored over Orthanc's REST API reaches the storage area without a sender, so the indexer
# takes the sender from here, by Orthanc instance id, when it indexes such a file. The
# announcement is committed before the file is posted, hence before it is queued: the
# indexer cannot miss it.
pending_sources = Table(
    "pending_sources",
    metadata,
    Column("orthanc_id", String(64), primary_key=True),
    Column("institution_id", Integer, ForeignKey("institutions.id"), primary_key=True),
    Column("via", String(16), nullable=False),
    Column("sender", String(128), nullable=False),
    Column("remote_address", String(64)),
    Column("announced_at", Float, nullable=False),
)

# who may file instances under a Study Instance UID, and under which study a SOP Instance
# UID is filed: claimed when the first instance is admitted (C-STORE filter, STOW check),
# by an insert that only one sender can win, long before the indexer records the study.
# A claim outlives the study's deletion: the UID stays its first sender's.
study_claims = Table(
    "study_claims",
    metadata,
    Column("study_uid", String(64), primary_key=True),
    Column("institution_id", Integer, ForeignKey("institutions.id"), nullable=False),
    Column("claimed_at", Float, nullable=False),
)

instance_claims = Table(
    "instance_claims",
    metadata,
    Column("sop_uid", String(64), primary_key=True),
    Column("study_uid", String(64), nullable=False),
    Column("institution_id", Integer, ForeignKey("institutions.id"), nullable=False),
    Column("claimed_at", Float, nullable=False),
)
