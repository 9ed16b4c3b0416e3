"""The stored instances an action names that a principal reaches (a C-MOVE's, a
deletion's, a study download's), the stored instance that stands for each UID of a
search's page (its header answers the attributes read from files), and the reading
worklist's study search.

The SQL on the index tables stays in this package; the DIMSE handlers and the gateway
call these functions.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import func, select

from archive.api import MoveItem, MoveRequest, StudyIndex
from archive.index_tables import instances, patients, studies
from query.access import deletable, reachable
from query.attributes import Level
from query.matching import Query
from query.search import StoredInstance, search
from query.worklist import on_worklist
from security.api import InvalidInput
from sharing.api import Status

__all__ = [
    "deletion_targets",
    "instances_to_move",
    "representatives",
    "study_orthanc_ids",
    "worklist_studies",
]


def instances_to_move(catalog: StudyIndex, request: MoveRequest) -> list[MoveItem]:
    """The stored instances a C-MOVE names that ``request.institution`` reaches.

    The level's key must be given (PatientID, StudyInstanceUID or AccessionNumber,
    SeriesInstanceUID, SOPInstanceUID): an empty key matches nothing, never everything.
    An unreachable resource and a nonexistent one both give an empty list.
    """
    stmt = (
        select(instances.c.study_uid, instances.c.sop_uid, instances.c.orthanc_id)
        .join(studies, studies.c.study_uid == instances.c.study_uid)
        .where(
            instances.c.orthanc_id.is_not(None),
            reachable(studies.c.study_uid, request.institution),
        )
        .order_by(instances.c.study_uid, instances.c.series_uid, instances.c.instance_number)
    )
    if request.study_uids:
        stmt = stmt.where(instances.c.study_uid.in_(request.study_uids))
    if request.series_uids:
        stmt = stmt.where(instances.c.series_uid.in_(request.series_uids))
    if request.level == "PATIENT":
        if not request.patient_ids:
            return []
        stmt = stmt.join(patients, patients.c.pk == studies.c.patient_pk).where(
            patients.c.patient_id.in_(request.patient_ids)
        )
    elif request.level == "STUDY":
        if request.accession_numbers and not request.study_uids:
            stmt = stmt.where(studies.c.accession_number.in_(request.accession_numbers))
        elif not request.study_uids:
            return []
    elif request.level == "SERIES":
        if not request.series_uids:
            return []
    elif request.level == "IMAGE":
        if not request.sop_uids:
            return []
        stmt = stmt.where(instances.c.sop_uid.in_(request.sop_uids))
    else:
        raise InvalidInput(f"C-MOVE level {request.level!r} is not PATIENT/STUDY/SERIES/IMAGE")
    with catalog.engine.connect() as conn:
        rows = conn.execute(stmt).all()
    return [MoveItem(str(r[0]), str(r[1]), str(r[2])) for r in rows]


def deletion_targets(
    catalog: StudyIndex, institution: str, study_uid: str, series_uid: str | None
) -> tuple[list[str], bool]:
    """Orthanc ids of the instances the institution may delete, and whether it sees any."""
    where = [instances.c.study_uid == study_uid]
    if series_uid is not None:
        where.append(instances.c.series_uid == series_uid)
    visible = select(instances.c.orthanc_id).where(
        *where, reachable(instances.c.study_uid, institution)
    )
    owned = visible.where(deletable(instances.c.study_uid, institution))
    with catalog.engine.connect() as conn:
        ids = [str(r[0]) for r in conn.execute(owned) if r[0]]
        seen = bool(ids) or conn.execute(visible.limit(1)).first() is not None
    return ids, seen


def study_orthanc_ids(catalog: StudyIndex, study_uid: str, institution: str) -> list[str]:
    """Orthanc ids of a study's stored instances that the institution reaches, in series
    and instance order (a download's files)."""
    stmt = (
        select(instances.c.orthanc_id)
        .where(
            instances.c.study_uid == study_uid,
            instances.c.orthanc_id.is_not(None),
            reachable(instances.c.study_uid, institution),
        )
        .order_by(instances.c.series_uid, instances.c.instance_number, instances.c.sop_uid)
    )
    with catalog.engine.connect() as conn:
        return [str(r[0]) for r in conn.execute(stmt)]


def worklist_studies(
    catalog: StudyIndex,
    query: Query,
    institution: str,
    root: str,
    statuses: Iterable[Status] = (),
) -> list[dict[str, Any]]:
    """A study search (:func:`query.search.search`) limited to the institution's reading
    worklist with these statuses (:func:`query.worklist.on_worklist`)."""
    condition = on_worklist(studies.c.study_uid, institution, statuses=statuses)
    return search(catalog, query, institution, root, where=[condition])


def representatives(
    catalog: StudyIndex, level: Level, uids: list[str]
) -> dict[str, StoredInstance]:
    """One stored instance per study, series or instance UID of a search's page (whose
    header gives the attributes read from the stored files)."""
    i = instances.c
    column = {Level.STUDY: i.study_uid, Level.SERIES: i.series_uid, Level.INSTANCE: i.sop_uid}[
        level
    ]
    stored = i.attachment_uuid.is_not(None)
    if level == Level.INSTANCE:
        chosen = select(i.sop_uid).where(column.in_(uids), stored)
    else:
        chosen = select(func.min(i.sop_uid)).where(column.in_(uids), stored).group_by(column)
    stmt = select(
        column, i.study_uid, i.series_uid, i.sop_uid, i.transfer_syntax, i.attachment_uuid
    ).where(i.sop_uid.in_(chosen.scalar_subquery()))
    with catalog.engine.connect() as conn:
        rows = conn.execute(stmt).all()
    return {
        str(r[0]): StoredInstance(str(r[1]), str(r[2]), str(r[3]), r[4], str(r[5])) for r in rows
    }
