"""The reading worklist: the studies granted to an institution, each new, opened or reported.

Issue 4: a regional reading centre works from the studies other institutions granted it.
Each such study has a status *for the grantee*:

``new``
    granted, and the grantee has not retrieved it yet;
``opened``
    the grantee retrieved its instances, metadata, frames or bulk data (recorded once, by
    :func:`record_opened`, in sharing's ``worklist_opened``);
``reported``
    the grantee stored an instance into it (a report over STOW-RS with a ``read+report``
    grant, or a C-STORE from one of its AEs): an ``instance_sources`` row of the study names
    the grantee. Derived in SQL from provenance the archive records anyway, so neither the
    storage path nor the indexer has to know about worklists (``archive`` may not import
    ``sharing``), and a status cannot disagree with what is stored.

"Reported" wins over "opened", which wins over "new". The worklist holds only studies
reached through a grant (:func:`query.access.granted`); a grant's grantor must own the
study and cannot grant to itself, so the grantee's own studies are never on it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import (
    ColumnElement,
    and_,
    case,
    exists,
    literal,
    not_,
    or_,
    select,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import aliased

from archive.index_tables import instance_sources, instances, institutions, studies
from query.access import granted
from sharing.api import Permission, Status, active_grants, openings, record_opening

__all__ = [
    "WorklistEntry",
    "on_worklist",
    "record_opened",
    "status_of",
    "worklist_entries",
]


def _reported(study_uid: ColumnElement[str], institution: str) -> ColumnElement[bool]:
    inst = aliased(instances)
    source = aliased(instance_sources)
    who = aliased(institutions)
    return exists(
        select(inst.c.sop_uid)
        .join(source, source.c.sop_uid == inst.c.sop_uid)
        .join(who, who.c.id == source.c.institution_id)
        .where(inst.c.study_uid == study_uid, who.c.name == institution)
    )


def _opened(study_uid: ColumnElement[str], institution: str) -> ColumnElement[bool]:
    opened = openings()
    who = aliased(institutions)
    return exists(
        select(opened.c.study_uid)
        .join(who, who.c.id == opened.c.institution_id)
        .where(opened.c.study_uid == study_uid, who.c.name == institution)
    )


def status_of(study_uid: ColumnElement[str], institution: str) -> ColumnElement[str]:
    """SQL: the worklist status (a :class:`Status` value) of the study for ``institution``."""
    return case(
        (_reported(study_uid, institution), literal(Status.REPORTED.value)),
        (_opened(study_uid, institution), literal(Status.OPENED.value)),
        else_=literal(Status.NEW.value),
    )


def on_worklist(
    study_uid: ColumnElement[str],
    institution: str,
    now: float | None = None,
    statuses: Iterable[Status] = (),
) -> ColumnElement[bool]:
    """SQL condition: the study is on ``institution``'s worklist (with one of ``statuses``).

    Granted to it by an active grant (the access rule's grant half; never its own
    studies); ``statuses`` empty means any status.
    """
    now = time.time() if now is None else now
    condition = granted(study_uid, institution, now)
    wanted = set(statuses)
    if not wanted or wanted == set(Status):
        return condition
    reported = _reported(study_uid, institution)
    opened = _opened(study_uid, institution)
    by_status = {
        Status.REPORTED: reported,
        Status.OPENED: and_(opened, not_(reported)),
        Status.NEW: and_(not_(opened), not_(reported)),
    }
    return and_(condition, or_(*[by_status[s] for s in sorted(wanted)]))


@dataclass(frozen=True, slots=True)
class WorklistEntry:
    """What the worklist says about one granted study (times are POSIX seconds).

    ``permission`` is the widest of the active grants covering the study (a study may be
    granted on its own and through its patient); ``granted_at`` the earliest of them;
    ``expires_at`` the last moment one of them is still in force (None: no expiry).
    """

    study_uid: str
    status: Status
    grantor: str
    permission: Permission
    granted_at: float
    expires_at: float | None
    opened_at: float | None


def worklist_entries(
    engine: Engine, institution: str, study_uids: Sequence[str], now: float | None = None
) -> dict[str, WorklistEntry]:
    """The worklist entries of ``study_uids`` (one page of a search) for ``institution``.

    Studies not on its worklist are absent from the answer.
    """
    now = time.time() if now is None else now
    if not study_uids:
        return {}
    g = active_grants(now)
    grantee = aliased(institutions)
    grantor = aliased(institutions)
    opened = openings()
    stmt = (
        select(
            studies.c.study_uid,
            grantor.c.name.label("grantor"),
            g.c.permission,
            g.c.created_at,
            g.c.expires_at,
            status_of(studies.c.study_uid, institution).label("status"),
            opened.c.opened_at,
        )
        .join(g, g.c.grantor_id == studies.c.owner_institution_id)
        .join(grantee, grantee.c.id == g.c.grantee_id)
        .join(grantor, grantor.c.id == g.c.grantor_id)
        .outerjoin(
            opened,
            and_(
                opened.c.study_uid == studies.c.study_uid, opened.c.institution_id == grantee.c.id
            ),
        )
        .where(
            studies.c.study_uid.in_(list(study_uids)),
            grantee.c.name == institution,
            or_(g.c.study_uid == studies.c.study_uid, g.c.patient_pk == studies.c.patient_pk),
        )
    )
    with engine.connect() as conn:
        rows = conn.execute(stmt).all()
    entries: dict[str, WorklistEntry] = {}
    for row in rows:
        uid = str(row.study_uid)
        entry = WorklistEntry(
            study_uid=uid,
            status=Status(row.status),
            grantor=str(row.grantor),
            permission=Permission(row.permission),
            granted_at=float(row.created_at),
            expires_at=None if row.expires_at is None else float(row.expires_at),
            opened_at=None if row.opened_at is None else float(row.opened_at),
        )
        known = entries.get(uid)
        entries[uid] = entry if known is None else _merged(known, entry)
    return entries


def _merged(a: WorklistEntry, b: WorklistEntry) -> WorklistEntry:
    """One entry for a study covered by two grants: the wider and longer of both."""
    wide = Permission.READ_REPORT in (a.permission, b.permission)
    return WorklistEntry(
        study_uid=a.study_uid,
        status=a.status,
        grantor=a.grantor,
        permission=Permission.READ_REPORT if wide else Permission.READ,
        granted_at=min(a.granted_at, b.granted_at),
        expires_at=None
        if a.expires_at is None or b.expires_at is None
        else max(a.expires_at, b.expires_at),
        opened_at=a.opened_at,
    )


def record_opened(
    engine: Engine, institution: str, study_uid: str, by: str, now: float | None = None
) -> bool:
    """Note that ``institution`` opened the granted study ``study_uid`` (first time only).

    A read first, so the usual case (already noted, or the institution's own study) takes
    no write lock; returns True when this call recorded the opening
    (:func:`sharing.api.record_opening`).
    """
    now = time.time() if now is None else now
    already = openings()
    probe = select(
        institutions.c.id,
        exists(
            select(already.c.study_uid).where(
                already.c.institution_id == institutions.c.id, already.c.study_uid == study_uid
            )
        ).label("noted"),
    ).where(institutions.c.name == institution, granted(literal(study_uid), institution, now))
    with engine.connect() as conn:
        row = conn.execute(probe).first()
    if row is None or row.noted:
        return False
    return record_opening(engine, int(row.id), study_uid, by, now)
