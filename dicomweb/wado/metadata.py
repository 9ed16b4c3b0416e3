"""WADO-RS metadata (PS3.18 10.4.1.1.2) from the header blobs, without Orthanc.

A header blob is the instance's bytes before Pixel Data, so metadata for a study of
thousands of instances reads one small, already deduplicated blob per instance. Binary
values up to 64 KiB are inline (InlineBinary); larger ones, and Pixel Data, are a
BulkDataURI on the gateway (``.../instances/{uid}/bulkdata/{path}``, path = tag, or
tag/item/tag/... inside sequences; ``dicomweb.wado.frames`` serves them).
"""

from __future__ import annotations

from io import BytesIO
from typing import Any

import pydicom
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.uid import UID

from archive.api import BlobStore
from query.api import StoredInstance

__all__ = ["instance_metadata", "metadata_of"]

_INLINE_LIMIT = 65536
PIXEL_DATA = "7FE00010"


def _drop_bulk(element: DataElement) -> str:
    # only called above the threshold, when there is no URI to offer: left out
    return ""


def _element_paths(ds: Dataset, prefix: str = "") -> dict[int, str]:
    """Bulk data path of every element, by object identity (pydicom's handler gets only
    the element, not where it sits)."""
    paths: dict[int, str] = {}
    for element in ds:
        path = f"{prefix}{element.tag:08X}"
        paths[id(element)] = path
        if element.VR == "SQ":
            for index, item in enumerate(element.value):
                paths.update(_element_paths(item, f"{path}/{index}/"))
    return paths


def instance_metadata(header: bytes, instance_url: str | None = None) -> dict[str, Any]:
    """DICOM JSON of one instance's data set (file meta excluded), from its header bytes.

    With ``instance_url`` (the instance's WADO-RS URL) large binary values and Pixel
    Data become BulkDataURIs below it; without, they are left out.
    """
    ds = pydicom.dcmread(BytesIO(header), stop_before_pixels=True)
    handler = _drop_bulk
    if instance_url is not None:
        paths = _element_paths(ds)

        def handler(element: DataElement) -> str:
            path = paths.get(id(element))
            return "" if path is None else f"{instance_url}/bulkdata/{path}"

    document: dict[str, Any] = ds.to_json_dict(
        bulk_data_threshold=_INLINE_LIMIT, bulk_data_element_handler=handler
    )
    document = {tag: value for tag, value in document.items() if value.get("BulkDataURI") != ""}
    if instance_url is not None and "Rows" in ds and "BitsAllocated" in ds:
        syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
        encapsulated = syntax is not None and UID(str(syntax)).is_encapsulated
        document[PIXEL_DATA] = {
            "vr": "OW" if not encapsulated and int(ds.BitsAllocated) > 8 else "OB",
            "BulkDataURI": f"{instance_url}/bulkdata/{PIXEL_DATA}",
        }
    return document


def metadata_of(
    blobs: BlobStore, items: list[StoredInstance], base_url: str | None = None
) -> list[dict[str, Any]]:
    """Metadata of every instance in ``items`` (read and parsed in this thread).

    ``base_url`` is the DICOMweb root for BulkDataURIs; without it bulk values are left out.
    """
    return [
        instance_metadata(
            blobs.get_header(item.attachment_uuid),
            None
            if base_url is None
            else f"{base_url}/studies/{item.study_uid}/series/{item.series_uid}"
            f"/instances/{item.sop_uid}",
        )
        for item in items
    ]
