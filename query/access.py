"""Which studies a principal reaches, as one SQL condition every query carries.

Design ("Access, sharing, audit"): a token reaches the studies its institution owns plus
those granted to it (``sharing``'s grants: a study, or a patient's studies, for a time,
until revoked). The rule is SQL over the study index, so it lives with the other queries
on the index; ``sharing`` keeps the grant and share-link tables and hands over the active
grants (:func:`sharing.api.active_grants`) and a link's study
(:func:`sharing.api.link_reaches`). The owner is the institution whose instance of the
study was recorded first (``studies.owner_institution_id``, set by the catalog): sending
one made-up instance with somebody else's Study Instance UID does not open their study.
Scopes never widen this: an ``admin`` token sees its institution's studies only.

Every query that names study rows must pass through :func:`reachable`, so that an
unreachable study and a nonexistent one give the same answer.
"""

from __future__ import annotations

import time

from sqlalchemy import ColumnElement, String, and_, exists, false, literal, or_, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import aliased

from archive.api import Institution, StudyIndex
from archive.index_tables import institutions, studies
from sharing.api import SHARE_PREFIX, Permission, active_grants, link_reaches

__all__ = [
    "claim_for_store",
    "deletable",
    "granted",
    "may_store_reports",
    "reachable",
    "reaches_study",
    "reportable",
]


def _owned(study_uid: ColumnElement[str], institution: str) -> ColumnElement[bool]:
    # aliases only: an outer query joining studies or institutions is not correlated away
    owned = aliased(studies)
    owner = aliased(institutions)
    return exists(
        select(owned.c.study_uid)
        .join(owner, owner.c.id == owned.c.owner_institution_id)
        .where(and_(owned.c.study_uid == study_uid, owner.c.name == institution))
    )


def granted(
    study_uid: ColumnElement[str],
    institution: str,
    now: float,
    permissions: tuple[Permission, ...] = tuple(Permission),
) -> ColumnElement[bool]:
    """SQL: an active grant with one of ``permissions`` gives ``institution`` the study.

    A correlated ``EXISTS`` on the outer query's ``study_uid`` column. Every table inside
    is an alias, so an outer query that joins institutions, studies or grants itself is
    never correlated by mistake. The study must still be owned by the grantor: a study
    deleted and sent again by someone else is not covered by the old owner's grants.
    """
    g = active_grants(now, permissions)
    grantee = aliased(institutions)
    study = aliased(studies)
    return (
        select(g.c.id)
        .join(grantee, grantee.c.id == g.c.grantee_id)
        .join(study, study.c.owner_institution_id == g.c.grantor_id)
        .where(
            study.c.study_uid == study_uid,
            grantee.c.name == institution,
            or_(g.c.study_uid == study.c.study_uid, g.c.patient_pk == study.c.patient_pk),
        )
        .exists()
    )


def reachable(
    study_uid: ColumnElement[str], institution: str, now: float | None = None
) -> ColumnElement[bool]:
    """SQL condition: the study whose UID is ``study_uid`` is reachable by ``institution``.

    Owned by it, or covered by a grant to it that is neither revoked nor expired.

    Parameters
    ----------
    study_uid : column expression
        The study UID column of the outer query (correlated).
    institution : str
        The principal's institution name (the token's institution claim).
    now : float, optional
        The instant grants are judged at (POSIX seconds; default: when the condition is
        built, so build it per query).
    """
    now = time.time() if now is None else now
    if institution.startswith(SHARE_PREFIX):
        # a share link's token: its one study, while the link is active
        return link_reaches(study_uid, institution, now)
    return or_(_owned(study_uid, institution), granted(study_uid, institution, now))


def reportable(
    study_uid: ColumnElement[str], institution: str, now: float | None = None
) -> ColumnElement[bool]:
    """SQL condition: ``institution`` may store reports (SR, other results) into the study.

    The owner may; others need an active ``read+report`` grant (issue 4, reports back).
    """
    now = time.time() if now is None else now
    if institution.startswith(SHARE_PREFIX):
        return false()  # a share link only ever reads
    return or_(
        _owned(study_uid, institution),
        granted(study_uid, institution, now, (Permission.READ_REPORT,)),
    )


def deletable(study_uid: ColumnElement[str], institution: str) -> ColumnElement[bool]:
    """SQL condition: ``institution`` may delete the study's instances: its owner only.

    A grant (even ``read+report``) and a share link never allow deleting.
    """
    if institution.startswith(SHARE_PREFIX):
        return false()
    return _owned(study_uid, institution)


def _study_where(engine: Engine, study_uid: str, condition: ColumnElement[bool]) -> bool:
    stmt = select(studies.c.study_uid).where(studies.c.study_uid == study_uid, condition)
    with engine.connect() as conn:
        return conn.execute(stmt).first() is not None


def reaches_study(
    engine: Engine, study_uid: str, institution: str, now: float | None = None
) -> bool:
    """Whether the study ``study_uid`` exists and ``institution`` reaches it."""
    return _study_where(engine, study_uid, reachable(studies.c.study_uid, institution, now))


def may_store_reports(
    engine: Engine, study_uid: str, institution: str, now: float | None = None
) -> bool:
    """Whether ``institution`` may write reports into the existing study ``study_uid``.

    False for a study that does not exist (yet): whoever stores the first instance of a
    new study becomes its owner, which is the caller's rule, not a grant question.
    """
    return _study_where(engine, study_uid, reportable(studies.c.study_uid, institution, now))


def claim_for_store(
    catalog: StudyIndex,
    institution: Institution,
    study_uid: str,
    sop_uid: str,
    now: float | None = None,
) -> str | None:
    """Admit an instance ``institution`` is storing, over DIMSE or DICOMweb alike.

    The first institution to store an instance of a Study Instance UID owns it; another
    may add instances only with an active ``read+report`` grant (:func:`reportable`). A
    SOP instance already filed under a study the institution may not write is refused
    too. The decision is a claim in the catalog (:meth:`archive.api.StudyIndex.claim`), so
    parallel first stores of one new study by two institutions cannot both succeed.

    Returns None when the instance may be stored, ``"study"`` or ``"instance"`` for
    what refused it.
    """
    now = time.time() if now is None else now

    def may_write(conn: Connection, uid: str) -> bool:
        condition = reportable(literal(uid, String), institution.name, now)
        return bool(conn.execute(select(condition)).scalar())

    return catalog.claim(study_uid, sop_uid, institution.id, may_write)
