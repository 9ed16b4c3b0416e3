"""WADO-RS metadata (PS3.18 10.4.1.1.2) from the header blobs, without Orthanc.

A header blob is the instance's bytes before Pixel Data, so metadata for a study of
thousands of instances reads one small, already deduplicated blob per instance. Binary
values up to 64 KiB are inline (InlineBinary); larger ones are omitted until the bulk data
endpoint exists, and so is Pixel Data (frames are not served yet).
"""

from __future__ import annotations

from io import BytesIO
from typing import Any

import pydicom
from pydicom.dataelem import DataElement

from archive.api import BlobStore
from dicomweb.search import StoredInstance

__all__ = ["instance_metadata", "metadata_of"]

_INLINE_LIMIT = 65536


def _drop_bulk(element: DataElement) -> str:
    # only called above the threshold: no URI to offer yet, so the value is left out
    return ""


def instance_metadata(header: bytes) -> dict[str, Any]:
    """DICOM JSON of one instance's data set (file meta excluded), from its header bytes."""
    ds = pydicom.dcmread(BytesIO(header), stop_before_pixels=True)
    document: dict[str, Any] = ds.to_json_dict(
        bulk_data_threshold=_INLINE_LIMIT, bulk_data_element_handler=_drop_bulk
    )
    return {tag: value for tag, value in document.items() if value.get("BulkDataURI") != ""}


def metadata_of(blobs: BlobStore, items: list[StoredInstance]) -> list[dict[str, Any]]:
    """Metadata of every instance in ``items`` (read and parsed in this thread)."""
    return [instance_metadata(blobs.get_header(item.attachment_uuid)) for item in items]
