"""Run QIDO-RS queries and WADO-RS look-ups against the catalog (blocking; call from a thread).

Every statement carries :func:`query.access.reachable`, so what an institution cannot
reach is indistinguishable from what does not exist.
"""

from __future__ import annotations

import functools
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import ColumnElement, Float, bindparam, func, select

from archive.api import StudyIndex
from archive.index_tables import instances, series, studies
from query.access import reachable
from query.attributes import RETRIEVE_URL, Attribute, Level
from query.dicomjson import element
from query.matching import Query, build_select

__all__ = ["Match", "StoredInstance", "instances_to_retrieve", "search", "search_matches"]


@dataclass(frozen=True, slots=True)
class StoredInstance:
    """One instance to send: its UIDs, stored transfer syntax and attachment."""

    study_uid: str
    series_uid: str
    sop_uid: str
    transfer_syntax: str | None
    attachment_uuid: str


@dataclass(frozen=True, slots=True)
class Match:
    """One match of a search: the UIDs of its study, series and instance down to the
    query's level, and each returned attribute with its catalog value (None: no value),
    in the query's order. :func:`query.dicomjson.catalog_values` gives its DICOM values."""

    uids: tuple[str, ...]
    values: tuple[tuple[Attribute, Any], ...]


def search_matches(
    catalog: StudyIndex,
    query: Query,
    institution: str,
    *,
    where: Sequence[ColumnElement[bool]] = (),
) -> list[Match]:
    """Answer ``query`` for ``institution`` (PS3.18 10.6, PS3.4 C.2.2.2): the matches as
    the catalog holds them, for a DIMSE answer; :func:`search` writes them as DICOM JSON.

    Parameters
    ----------
    where : sequence of SQL conditions, optional
        Narrow the search further (the reading worklist: granted studies, by status).
    """
    stmt = build_select(query, institution, dialect=catalog.engine.dialect.name)
    if where:
        stmt = stmt.where(*where)
    with catalog.engine.connect() as conn:
        rows = conn.execute(stmt).all()
        computed = _computed(conn, query, rows)
    nkeys = int(query.level)
    stored = [a for a in query.returned if a.column is not None]
    matches = []
    for row in rows:
        uids = tuple(str(v) for v in row[:nkeys])
        values = dict(zip((a.tag for a in stored), row[nkeys:], strict=True))
        extra = computed.get(uids[-1], {})
        matches.append(
            Match(
                uids,
                tuple(
                    (attr, values[attr.tag] if attr.column is not None else extra.get(attr.keyword))
                    for attr in query.returned
                ),
            )
        )
    return matches


def search(
    catalog: StudyIndex,
    query: Query,
    institution: str,
    base_url: str,
    *,
    where: Sequence[ColumnElement[bool]] = (),
) -> list[dict[str, Any]]:
    """Answer ``query`` for ``institution`` as DICOM JSON datasets (PS3.18 10.6).

    Parameters
    ----------
    base_url : str
        The DICOMweb root (``http://host:port/dicom-web``) for Retrieve URL.
    where : sequence of SQL conditions, optional
        Narrow the search further (the reading worklist: granted studies, by status).
    """
    return [
        _dicom_json(match, base_url)
        for match in search_matches(catalog, query, institution, where=where)
    ]


def _dicom_json(match: Match, base_url: str) -> dict[str, Any]:
    dataset = {attr.tag: element(attr.vr, value) for attr, value in match.values}
    url = f"{base_url}/studies/{match.uids[0]}"
    if len(match.uids) >= 2:
        url += f"/series/{match.uids[1]}"
    if len(match.uids) >= 3:
        url += f"/instances/{match.uids[2]}"
    dataset[RETRIEVE_URL] = element("UR", url)
    return dict(sorted(dataset.items()))


def _computed(conn: Any, query: Query, rows: Sequence[Any]) -> dict[str, dict[str, Any]]:
    """ModalitiesInStudy, the related-object counts and InstanceAvailability, for the page
    of results only."""
    wanted = {a.keyword for a in query.returned if a.computed}
    out: dict[str, dict[str, Any]] = defaultdict(dict)
    if not wanted or not rows:
        return out
    if "InstanceAvailability" in wanted:
        # every tier is read on demand (a cold blob is fetched or restored by the read
        # itself), so what the catalog lists is ONLINE to the client
        for r in rows:
            out[str(r[int(query.level) - 1])]["InstanceAvailability"] = "ONLINE"
    if query.level == Level.STUDY:
        uids = [str(r[0]) for r in rows]
        if "ModalitiesInStudy" in wanted:
            mods: dict[str, set[str]] = defaultdict(set)
            for uid, modality in conn.execute(
                select(series.c.study_uid, series.c.modality)
                .where(series.c.study_uid.in_(uids), series.c.modality.is_not(None))
                .distinct()
            ):
                mods[uid].add(modality)
            for uid in uids:
                out[uid]["ModalitiesInStudy"] = sorted(mods.get(uid, ()))
        if "NumberOfStudyRelatedSeries" in wanted:
            for uid, n in conn.execute(
                select(series.c.study_uid, func.count())
                .where(series.c.study_uid.in_(uids))
                .group_by(series.c.study_uid)
            ):
                out[uid]["NumberOfStudyRelatedSeries"] = n
        if "NumberOfStudyRelatedInstances" in wanted:
            for uid, n in conn.execute(
                select(instances.c.study_uid, func.count())
                .where(instances.c.study_uid.in_(uids))
                .group_by(instances.c.study_uid)
            ):
                out[uid]["NumberOfStudyRelatedInstances"] = n
    elif query.level == Level.SERIES and "NumberOfSeriesRelatedInstances" in wanted:
        uids = [str(r[1]) for r in rows]
        for uid, n in conn.execute(
            select(instances.c.series_uid, func.count())
            .where(instances.c.series_uid.in_(uids))
            .group_by(instances.c.series_uid)
        ):
            out[uid]["NumberOfSeriesRelatedInstances"] = n
    return out


@functools.lru_cache(maxsize=256)
def _retrieve_statement(institution: str, by_series: bool, by_sop: bool) -> Any:
    """The WADO-RS look-up for one institution and shape, built once.

    Building :func:`query.access.reachable`'s aliased subqueries costs about 1 ms, twenty
    times what SQLite needs to run the query. Grants are still judged when the query
    runs: the instant is the bound parameter ``now``, not a value fixed at build time.
    """
    now = cast(float, bindparam("now", type_=Float))
    stmt = (
        select(
            instances.c.study_uid,
            instances.c.series_uid,
            instances.c.sop_uid,
            instances.c.transfer_syntax,
            instances.c.attachment_uuid,
        )
        .join(studies, studies.c.study_uid == instances.c.study_uid)
        .where(
            instances.c.study_uid == bindparam("study_uid"),
            instances.c.attachment_uuid.is_not(None),
            reachable(studies.c.study_uid, institution, now),
        )
        .order_by(instances.c.series_uid, instances.c.instance_number, instances.c.sop_uid)
    )
    if by_series:
        stmt = stmt.where(instances.c.series_uid == bindparam("series_uid"))
    if by_sop:
        stmt = stmt.where(instances.c.sop_uid == bindparam("sop_uid"))
    return stmt


def instances_to_retrieve(
    catalog: StudyIndex,
    institution: str,
    study_uid: str,
    series_uid: str | None = None,
    sop_uid: str | None = None,
    now: float | None = None,
) -> list[StoredInstance]:
    """The stored instances of a study, series or instance that ``institution`` reaches
    (grants judged at ``now``, default the current time).

    An empty list means "not found" to the caller, whether the resource does not exist
    or is not reachable: the two must not be told apart.
    """
    stmt = _retrieve_statement(institution, series_uid is not None, sop_uid is not None)
    params: dict[str, Any] = {
        "study_uid": study_uid,
        "now": time.time() if now is None else now,
    }
    if series_uid is not None:
        params["series_uid"] = series_uid
    if sop_uid is not None:
        params["sop_uid"] = sop_uid
    with catalog.engine.connect() as conn:
        rows = conn.execute(stmt, params).all()
    return [
        StoredInstance(
            study_uid=str(r[0]),
            series_uid=str(r[1]),
            sop_uid=str(r[2]),
            transfer_syntax=None if r[3] is None else str(r[3]),
            attachment_uuid=str(r[4]),
        )
        for r in rows
    ]
