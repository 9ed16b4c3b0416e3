"""The archive's public face for other packages (``sharing``, ``query``, ``dicomweb``, ...).

Functions and values, no tables: the study index's tables go to ``query`` alone, through
:mod:`archive.index_tables`. Everything else in ``archive`` is private: import from here.
"""

from sqlalchemy import MetaData

from archive.blobstore import AttachmentPart, BlobStore
from archive.catalog import (
    Catalog,
    InstanceRecord,
    Institution,
    SourceRecord,
    StudyIndex,
    StudyOwner,
    institution_id,
    institution_names,
    owned_patient,
    patient_identities,
    pn_fold_values,
    study_owner,
)
from archive.catalog import metadata as _index_metadata
from archive.credentials import OrthancCredentials, credentials
from archive.headers import header_record
from archive.names import fold, fold_group, folded_groups, split_groups
from archive.plugin import open_store
from archive.recovery import orthanc_attachment_uuids, recover
from archive.scp import (
    FindAnswer,
    FindRequest,
    MoveItem,
    MoveRequest,
    StoreRequest,
    modality_entries,
)
from archive.settings import ArchiveSettings, DicomCharset
from archive.split import Survey, survey

# the tables the archive owns in the catalog database (deploy/schema.py); their SQL is
# built here and, for the study index, in the query package (archive.index_tables)
table_metadata: tuple[MetaData, ...] = (_index_metadata,)

__all__ = [
    "table_metadata",
    "recover",
    "pn_fold_values",
    "orthanc_attachment_uuids",
    "modality_entries",
    "DicomCharset",
    "ArchiveSettings",
    "AttachmentPart",
    "BlobStore",
    "Catalog",
    "FindAnswer",
    "FindRequest",
    "InstanceRecord",
    "MoveItem",
    "MoveRequest",
    "OrthancCredentials",
    "Institution",
    "SourceRecord",
    "StoreRequest",
    "StudyIndex",
    "StudyOwner",
    "Survey",
    "credentials",
    "fold",
    "fold_group",
    "folded_groups",
    "header_record",
    "institution_id",
    "institution_names",
    "open_store",
    "owned_patient",
    "patient_identities",
    "split_groups",
    "study_owner",
    "survey",
]
