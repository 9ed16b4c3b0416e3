"""The archive's public face for other packages (``sharing``, ``query``, ``dicomweb``, ...).

Functions and values, no tables: the study index's tables go to ``query`` alone, through
:mod:`archive.index_tables`. Everything else in ``archive`` is private: import from here.
"""

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
    study_owner,
)
from archive.credentials import OrthancCredentials, credentials
from archive.headers import header_record
from archive.names import fold, fold_group, folded_groups, split_groups
from archive.plugin import open_store
from archive.scp import FindAnswer, FindRequest, MoveItem, MoveRequest, StoreRequest
from archive.settings import ArchiveSettings
from archive.split import Survey, survey

__all__ = [
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
