"""WADO-RS metadata answered from DICOM JSON computed once per header blob.

Parsing a header with pydicom and converting it to DICOM JSON costs about 1 ms per
instance; the JSON is a function of the header bytes alone except for the BulkDataURIs,
which name the request's DICOMweb root and the instance's UIDs. So each header is
converted once with a placeholder where the instance URL goes, serialised, and kept in a
``ContentCache`` under the header blob's id (a MAC of the header bytes: an entry never
goes stale and needs no invalidation). A request only substitutes its own URLs.

The placeholder holds NUL characters and a random per-process token: JSON escapes a NUL
in a DICOM value as ``\\u0000``, so a value matches it only by containing that token.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence

from archive.api import BlobStore
from dicomweb.wado.instance_reader import ContentCache
from dicomweb.wado.metadata import instance_metadata
from query.api import StoredInstance

__all__ = ["metadata_body", "metadata_template", "render"]

_PLACEHOLDER = f"\x00{secrets.token_hex(12)}\x00"
_SERIALISED = json.dumps(_PLACEHOLDER)[1:-1].encode("ascii")


def metadata_template(header: bytes) -> bytes:
    """The serialised DICOM JSON of one header, with the placeholder for its URL."""
    return json.dumps(instance_metadata(header, _PLACEHOLDER)).encode("utf-8")


def render(template: bytes, instance_url: str) -> bytes:
    """``template`` with the instance's WADO-RS URL in every BulkDataURI."""
    return template.replace(_SERIALISED, json.dumps(instance_url)[1:-1].encode("utf-8"))


def metadata_body(
    blobs: BlobStore, cache: ContentCache, items: Sequence[StoredInstance], base_url: str
) -> bytes:
    """The ``application/dicom+json`` body for ``items`` (read and parsed in this thread).

    ``base_url`` is the DICOMweb root the BulkDataURIs start with.
    """
    headers = blobs.header_ids([item.attachment_uuid for item in items])
    documents = []
    for item in items:
        key = headers.get(item.attachment_uuid)  # None: still journaled (write-behind)
        template = None if key is None else cache.get(key)
        if template is None:
            template = metadata_template(blobs.get_header(item.attachment_uuid))
            if key is not None:
                cache.put(key, template)
        documents.append(
            render(
                template,
                f"{base_url}/studies/{item.study_uid}/series/{item.series_uid}"
                f"/instances/{item.sop_uid}",
            )
        )
    return b"[" + b", ".join(documents) + b"]"
