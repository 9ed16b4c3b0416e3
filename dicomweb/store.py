"""The gateway's one door into the archive package (through ``archive.api``)."""

from __future__ import annotations

from archive.api import (
    BlobStore,
    Catalog,
    Settings,
    instance_sources,
    instances,
    institutions,
    load_settings,
    open_store,
    patients,
    series,
    studies,
)

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
