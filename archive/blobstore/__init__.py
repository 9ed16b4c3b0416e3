"""The single-copy store: attachments as ordered parts, parts as deduplicated blobs.

One module per job, all on the state of ``base.py``: ``write.py`` (put, remove),
``read.py`` (get, parts, the one place that knows where a blob's payload is), ``journal.py``
and ``digester.py`` (write-behind), ``maintenance.py`` (gc, recovery, fsck, re-wrap).
``BlobStore`` does them all, as the plugin, the gateway and ``vna`` open it.
"""

from __future__ import annotations

from archive.blobstore.base import (
    CONTENT_DICOM,
    CONTENT_DICOM_UNTIL_PIXEL_DATA,
    FLAG_ZSTD,
    AttachmentPart,
    attachment_digest,
)
from archive.blobstore.digester import Digester
from archive.blobstore.maintenance import FsckReport, Maintenance

__all__ = [
    "AttachmentPart",
    "BlobStore",
    "CONTENT_DICOM",
    "CONTENT_DICOM_UNTIL_PIXEL_DATA",
    "FLAG_ZSTD",
    "FsckReport",
    "attachment_digest",
]


class BlobStore(Digester, Maintenance):
    """Attachments in, attachments out, exactly the same bytes, stored once."""
