"""The archive's public face for other packages (``sharing``, ``dicomweb``).

Everything else in ``archive`` is private: import from here.
"""

from archive.blobstore import BlobStore
from archive.catalog import (
    Catalog,
    InstanceRecord,
    Institution,
    SourceRecord,
    instance_sources,
    instances,
    institutions,
    patients,
    series,
    studies,
)
from archive.plugin import open_store
from archive.settings import Settings, load_settings

__all__ = [
    "BlobStore",
    "Catalog",
    "InstanceRecord",
    "Institution",
    "Settings",
    "SourceRecord",
    "instance_sources",
    "instances",
    "institutions",
    "load_settings",
    "open_store",
    "patients",
    "series",
    "studies",
]
