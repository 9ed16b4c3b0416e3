"""The reading worklist over DICOMweb: a QIDO-RS root whose study search is the worklist.

A reading centre's viewer lists studies with ``GET {qidoRoot}/studies?...`` (OHIF 3.13
builds exactly that from its data source's ``qidoRoot``). Pointing ``qidoRoot`` at
:data:`WORKLIST_ROOT` (``/worklist/dicom-web``) makes that list the worklist: the studies
other institutions granted to the token's institution, never its own. The series and
instance searches below the worklist root answer as the normal root's do, so the viewer can
open a study from the list; retrieval (``wadoRoot``) stays at ``/dicom-web``, where the
Retrieve URL (0008,1190) of each result points.

The study search takes every parameter of the normal one (:func:`query.api.parse_query`:
matching, ``includefield``, ``limit``/``offset``) plus ``status=new|opened|reported``
(several: ``status=new,opened``). Each result carries the normal study attributes and a
private block (PS3.5 7.8.1) with the worklist state, because no standard attribute says
"this granted study's state *for the grantee*": Study Status ID (0032,000A) and
Interpretation Status ID (4008,0212) are retired and describe the study itself for
everyone, and Procedure Step State (0074,1000) belongs to a UPS, which this is not.

=============  ====  =======================================================================
tag            VR    value
=============  ====  =======================================================================
(0009,0010)    LO    private creator ``VNA WORKLIST 1``
(0009,1001)    CS    status: ``NEW``, ``OPENED`` or ``REPORTED``
(0009,1002)    LO    the granting institution (the study's owner)
(0009,1003)    CS    permission: ``READ`` or ``READ_REPORT`` (may store reports back)
(0009,1004)    DT    granted at (UTC), the earliest active grant covering the study
(0009,1005)    DT    grant expiry (UTC); absent when a covering grant does not expire
(0009,1006)    DT    first opened by the institution (UTC); absent while new
=============  ====  =======================================================================

"Opened" is recorded by :func:`note_opened`, which the gateway's WADO-RS handlers call once a
retrieval of instances, metadata, frames or bulk data (or a WADO-URI file) is authorised:
at most one catalog read per request, one write the first time, and nothing at all for
what this gateway process already noted.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from archive.api import Catalog
from dicomweb.appkeys import OPENED_STUDIES
from dicomweb.http.dicomxml import negotiate_dataset_media
from dicomweb.http.middleware import qido_response
from dicomweb.operations.audit_records import EventAction, EventOutcome, EventType, audit
from query.api import (
    Level,
    WorklistEntry,
    element,
    parse_query,
    record_opened,
    worklist_entries,
    worklist_studies,
)
from security.identity import Principal
from sharing.api import Permission, parse_statuses

__all__ = [
    "OPENING",
    "PRIVATE_CREATOR",
    "STATUS_TAG",
    "WORKLIST_ROOT",
    "OpenedStudies",
    "add_worklist_routes",
    "note_opened",
    "private_block",
    "worklist_response",
    "worklist_search",
]

logger = logging.getLogger(__name__)

WORKLIST_ROOT = "/worklist/dicom-web"

PRIVATE_CREATOR = "VNA WORKLIST 1"
CREATOR_TAG = "00090010"
STATUS_TAG = "00091001"
GRANTOR_TAG = "00091002"
PERMISSION_TAG = "00091003"
GRANTED_AT_TAG = "00091004"
EXPIRES_AT_TAG = "00091005"
OPENED_AT_TAG = "00091006"

# what the WADO-RS handlers call their retrieval (``_reachable``'s detail) that opens a
# study; rendered images and thumbnails do not: a study list shows those unopened
OPENING = frozenset({"instances", "metadata", "frames", "bulkdata", "wado-uri"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _dt(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y%m%d%H%M%S+0000")


def private_block(entry: WorklistEntry) -> dict[str, Any]:
    """The worklist's private attributes of one study, as DICOM JSON elements."""
    return {
        CREATOR_TAG: element("LO", PRIVATE_CREATOR),
        STATUS_TAG: element("CS", entry.status.value.upper()),
        GRANTOR_TAG: element("LO", entry.grantor),
        PERMISSION_TAG: element(
            "CS", "READ_REPORT" if entry.permission == Permission.READ_REPORT else "READ"
        ),
        GRANTED_AT_TAG: element("DT", _dt(entry.granted_at)),
        EXPIRES_AT_TAG: element("DT", _dt(entry.expires_at)),
        OPENED_AT_TAG: element("DT", _dt(entry.opened_at)),
    }


def worklist_search(
    catalog: Catalog, params: list[tuple[str, str]], institution: str, root: str, limit: int
) -> tuple[list[dict[str, Any]], tuple[str, ...]]:
    """The worklist page as DICOM JSON, and the QIDO parameters ignored (blocking).

    ``params`` are the request's query pairs: ``status`` and the QIDO-RS study search's.
    """
    statuses = parse_statuses(v for k, v in params if k.strip().lower() == "status")
    rest = [(k, v) for k, v in params if k.strip().lower() != "status"]
    query = parse_query(rest, Level.STUDY, max_results=limit)
    results = worklist_studies(catalog, query, institution, root, statuses)
    uids = [str(r["0020000D"]["Value"][0]) for r in results]
    entries = worklist_entries(catalog.engine, institution, uids)
    answer = []
    for uid, dataset in zip(uids, results, strict=True):
        entry = entries.get(uid)
        # a grant revoked between the two statements: the study is off the list now
        if entry is not None:
            answer.append(dict(sorted({**dataset, **private_block(entry)}.items())))
    # the worklist answers from the catalog only: attributes read from the headers by a
    # QIDO-RS search (dicomweb/qido/includefield.py) are named in the Warning instead
    return answer, query.ignored + query.header_fields


async def worklist_response(
    request: web.Request, principal: Principal, catalog: Catalog, root: str, max_results: int
) -> web.Response:
    """``GET /worklist/dicom-web/studies``: the worklist as a QIDO-RS study search.

    Parameters
    ----------
    principal : Principal
        The authorised token (scope ``dicom.read``); its institution's worklist is answered.
    root : str
        The normal DICOMweb root, for the Retrieve URL of each study.
    max_results : int
        The QIDO-RS limit (``gateway.qido_max_results``).
    """
    media = negotiate_dataset_media(request.headers.get("Accept"), "the worklist")
    results, ignored = await asyncio.to_thread(
        worklist_search,
        catalog,
        list(request.query.items()),
        principal.institution,
        root,
        max_results,
    )
    await audit(
        request,
        event=EventType.QUERY,
        action=EventAction.EXECUTE,
        outcome=EventOutcome.SUCCESS,
        user=principal.subject,
        institution=principal.institution,
        detail={"level": "study", "worklist": "true", "results": str(len(results))},
    )
    return qido_response(results, ignored, media)


class OpenedStudies:
    """What this gateway process already noted as opened, or as not the worklist's.

    Bounded: past ``capacity`` entries it starts afresh (the catalog stays the record; a
    forgotten entry costs one more read).
    """

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._seen: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def __contains__(self, key: tuple[str, str]) -> bool:
        with self._lock:
            return key in self._seen

    def add(self, key: tuple[str, str]) -> None:
        with self._lock:
            if len(self._seen) >= self.capacity:
                self._seen.clear()
            self._seen.add(key)


async def note_opened(
    request: web.Request, catalog: Catalog, principal: Principal, study_uid: str
) -> None:
    """Record that the principal's institution opened ``study_uid``, if it is granted to it.

    Called on the success path of a retrieval; never fails it (a worklist that misses an
    opening is better than a viewer that cannot load the images).
    """
    memo = request.app.get(OPENED_STUDIES)
    key = (principal.institution, study_uid)
    if memo is not None and key in memo:
        return
    try:
        await asyncio.to_thread(
            record_opened, catalog.engine, principal.institution, study_uid, principal.subject
        )
    except Exception:
        logger.exception("could not note study %s as opened", study_uid)
        return
    if memo is not None:
        memo.add(key)


def add_worklist_routes(
    router: web.UrlDispatcher,
    search_worklist: Handler,
    search_for_series: Handler,
    search_for_instances: Handler,
) -> None:
    """The worklist root: its study search, and the normal series and instance searches."""
    study = WORKLIST_ROOT + "/studies/{study}"
    router.add_get(WORKLIST_ROOT + "/studies", search_worklist)
    router.add_get(WORKLIST_ROOT + "/series", search_for_series)
    router.add_get(study + "/series", search_for_series)
    router.add_get(WORKLIST_ROOT + "/instances", search_for_instances)
    router.add_get(study + "/instances", search_for_instances)
    router.add_get(study + "/series/{series}/instances", search_for_instances)
