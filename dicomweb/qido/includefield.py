"""QIDO-RS return attributes the catalog does not index, read from the stored headers.

``includefield=InstitutionName`` (or any single attribute without a catalog column) is
answered from the header blob of one instance per result: the instance itself in an
instance search, the instance with the lowest SOP Instance UID of the study or series in
a study or series search (study and series attributes are the same in all of them). Only
the page of results being answered is read, through the cached DICOM JSON that WADO-RS
metadata serves (dicomweb/wado/metacache.py), so a value reads the same in both.

``includefield=all`` in an instance search adds every attribute of each instance's header
(values only, bulk data left out, as PS3.18 10.6.3.3 asks of QIDO-RS); in a study or
series search it means every attribute the catalog keeps for that level.
"""

from __future__ import annotations

import json
from typing import Any

from pydicom.datadict import dictionary_VR

from archive.api import BlobStore
from dicomweb.wado.instance_reader import ContentCache
from dicomweb.wado.metacache import metadata_body
from query.api import Level, Query, representatives
from security.api import NotFound

__all__ = ["add_header_fields", "needs_headers"]

_UID_TAG = {Level.STUDY: "0020000D", Level.SERIES: "0020000E", Level.INSTANCE: "00080018"}
_BULK = ("BulkDataURI", "InlineBinary")


def needs_headers(query: Query) -> bool:
    """Whether answering ``query`` reads stored headers."""
    return bool(query.header_fields) or (query.include_all and query.level == Level.INSTANCE)


def _empty(tag: str) -> dict[str, Any] | None:
    """An attribute the header lacks, as "known, empty" (its dictionary VR); None when the
    tag is in no dictionary (a private attribute), which cannot be rendered."""
    try:
        vr = dictionary_VR(int(tag, 16))
    except KeyError:
        return None
    return {"vr": vr.split(" or ")[0]}


def add_header_fields(
    blobs: BlobStore,
    cache: ContentCache,
    query: Query,
    results: list[dict[str, Any]],
    base_url: str,
) -> list[dict[str, Any]]:
    """``results`` with the attributes ``query`` asks for from the stored headers
    (blocking: call from a thread)."""
    uid_tag = _UID_TAG[query.level]
    uids = [str(r[uid_tag]["Value"][0]) for r in results if r.get(uid_tag, {}).get("Value")]
    if not uids:
        return results
    by_uid: dict[str, dict[str, Any]] = {}
    for uid, item in representatives(blobs.catalog, query.level, uids).items():
        try:
            (by_uid[uid],) = json.loads(metadata_body(blobs, cache, [item], base_url))
        except NotFound:
            continue  # deleted since the search ran: nothing more to say about it
    every = query.include_all and query.level == Level.INSTANCE
    answered = []
    for result in results:
        values = result.get(uid_tag, {}).get("Value") or [None]
        document = by_uid.get(str(values[0]), {})
        extra: dict[str, Any] = {}
        if every:
            extra = {
                tag: element
                for tag, element in document.items()
                if not any(key in element for key in _BULK)
            }
        for tag in query.header_fields:
            element = document.get(tag)
            if element is not None and "BulkDataURI" not in element:
                extra[tag] = element
            elif (empty := _empty(tag)) is not None:
                extra[tag] = empty
        answered.append(dict(sorted((extra | result).items())))
    return answered
