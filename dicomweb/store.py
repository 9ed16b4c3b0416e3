"""The gateway's one door into the archive package.

The style guide wants ``dicomweb`` to import ``archive.api`` only; that module does not
exist yet, so every reach into ``archive`` internals (catalog tables, ``open_store``)
is collected here, to be replaced by ``archive.api`` in one place.
"""

from __future__ import annotations

from archive.blobstore import BlobStore
from archive.catalog import (
    Catalog,
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
    "Settings",
    "instance_sources",
    "instances",
    "institutions",
    "load_settings",
    "open_store",
    "patients",
    "series",
    "studies",
]
