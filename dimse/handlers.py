"""C-FIND and C-MOVE answered from the catalog for the calling AE's institution.

The Orthanc adapter (``archive.plugin``) calls :func:`find` and :func:`move` (and
:func:`store` to admit a C-STORE by the rule STOW-RS follows); the
composition root (``compose/orthanc_entry.py``) injects them. A C-FIND is the same search
as a QIDO-RS one over another wire (PS3.4 C.2.2.2 matching is what PS3.18 refers to):
this module reuses the query model (``query.api``: the QIDO parser, the SQL it builds
with :func:`query.api.reachable` inside, and its result rows), so the two can never
disagree on what an institution sees. Nothing here imports aiohttp: it runs inside
Orthanc. The tables queried are the migrations' (``open_store`` runs them
before the plugin opens the catalog): a query never creates one.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pydicom
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement

from archive.api import (
    Catalog,
    FindAnswer,
    FindRequest,
    MoveItem,
    MoveRequest,
    StoreRequest,
)
from query.api import (
    Attribute,
    Level,
    catalog_values,
    claim_for_store,
    instances_to_move,
    lookup,
    query_for_keys,
    search_matches,
)
from security.api import InvalidInput

__all__ = ["MAX_FIND_RESULTS", "find", "move", "store"]

MAX_FIND_RESULTS = 1000
"""Matches one C-FIND returns at most; beyond that the answer is marked incomplete."""

_LEVELS = {"STUDY": Level.STUDY, "SERIES": Level.SERIES, "IMAGE": Level.INSTANCE}
_PATIENT_KEYWORDS = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
)
# unique keys of each level, returned with every match (PS3.4 C.4.1.2.2)
_UNIQUE = {
    "PATIENT": ("PatientID",),
    "STUDY": ("StudyInstanceUID",),
    "SERIES": ("StudyInstanceUID", "SeriesInstanceUID"),
    "IMAGE": ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"),
}


def _identifier(request: FindRequest) -> tuple[list[tuple[Attribute, str]], list[int]]:
    """The request's keys the catalog indexes, with their values, and the tags to answer,
    in request order.

    Keys the catalog does not index are returned empty (never matched: PS3.4 C.2.2.1
    lets an SCP ignore optional keys); keys below the request's level are dropped.
    """
    level = Level.STUDY if request.level == "PATIENT" else _LEVELS[request.level]
    keys: list[tuple[Attribute, str]] = []
    tags: list[int] = []
    for tag, value in request.keys:
        attr = lookup(f"{tag:08X}")
        if attr is None:
            tags.append(tag)
            continue
        if attr.level > level or (
            request.level == "PATIENT" and attr.keyword not in _PATIENT_KEYWORDS
        ):
            continue
        tags.append(tag)
        keys.append((attr, value))
    return keys, tags


def _element(attr: Attribute, value: Any) -> DataElement:
    """A catalog value as a data element: one value, several (VM > 1), or none."""
    values = catalog_values(attr.vr, value)
    return DataElement(
        int(attr.tag, 16), attr.vr, values[0] if len(values) == 1 else values or None
    )


def _answer(
    level: str,
    values: Iterable[tuple[Attribute, Any]],
    tags: Iterable[int],
    unique: Iterable[Attribute],
) -> pydicom.Dataset:
    """One C-FIND match: the requested attributes (empty when unknown) and unique keys."""
    found = {int(attr.tag, 16): (attr, value) for attr, value in values}
    answer = pydicom.Dataset()
    answer.SpecificCharacterSet = "ISO_IR 192"  # the catalog holds Unicode
    answer.QueryRetrieveLevel = level
    for attr in unique:
        tag = int(attr.tag, 16)
        if tag in found:
            answer[tag] = _element(*found[tag])
    for tag in tags:
        if tag in answer:
            continue
        if tag in found:
            answer[tag] = _element(*found[tag])
        else:
            try:
                vr = dictionary_VR(tag)
            except KeyError:
                continue  # a private or unknown tag: nothing to say about it
            answer.add_new(tag, vr, None)
    return answer


def find(
    catalog: Catalog, request: FindRequest, *, max_results: int = MAX_FIND_RESULTS
) -> FindAnswer:
    """Answer a C-FIND at PATIENT, STUDY, SERIES or IMAGE level (Patient or Study Root)
    with only the studies ``request.institution`` reaches, at most ``max_results`` of them
    (the answer says whether there were more).

    The identifier's keys become the query model's :class:`query.api.Query` directly;
    matching (single value, wild cards, UID lists, date and time ranges) is QIDO's; a
    query is relational (keys of upper levels may be matched at any level).

    Raises
    ------
    InvalidInput
        An unknown level or a malformed key value.
    """
    if request.level not in _UNIQUE:
        raise InvalidInput(f"C-FIND level {request.level!r} is not PATIENT/STUDY/SERIES/IMAGE")
    keys, tags = _identifier(request)
    returned: list[Attribute] = []
    if request.level == "PATIENT" and (issuer := lookup("IssuerOfPatientID")) is not None:
        returned.append(issuer)  # one answer per patient
    level = Level.STUDY if request.level == "PATIENT" else _LEVELS[request.level]
    # one more than the most returned: tells whether the answer is complete
    query = query_for_keys(level, keys, returned, limit=max_results + 1)
    results = search_matches(catalog, query, request.institution)
    complete = len(results) <= max_results
    unique = [a for k in _UNIQUE[request.level] if (a := lookup(k)) is not None]
    answers: list[pydicom.Dataset] = []
    if request.level == "PATIENT":
        # patients are those of the reachable matching studies, each once
        keep = {a.tag for k in _PATIENT_KEYWORDS if (a := lookup(k)) is not None}
        seen: set[tuple[tuple[Any, ...], ...]] = set()
        for result in results:
            patient = [(a, v) for a, v in result.values if a.tag in keep]
            key = tuple(tuple(catalog_values(a.vr, v)) for a, v in patient)
            if key not in seen:
                seen.add(key)
                answers.append(_answer(request.level, patient, tags, unique))
    else:
        answers = [_answer(request.level, r.values, tags, unique) for r in results]
    return FindAnswer(tuple(answers[:max_results]), complete)


def move(catalog: Catalog, request: MoveRequest) -> list[MoveItem]:
    """The stored instances a C-MOVE names that ``request.institution`` reaches
    (:func:`query.api.instances_to_move`; an empty key matches nothing)."""
    return instances_to_move(catalog, request)


def store(catalog: Catalog, request: StoreRequest) -> str | None:
    """Admit a C-STORE as STOW-RS admits an instance (:func:`query.api.claim_for_store`):
    None to store it, else what refused it."""
    return claim_for_store(catalog, request.institution, request.study_uid, request.sop_uid)
