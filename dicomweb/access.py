"""Which studies a principal reaches, as one SQL condition every query carries.

Design ("Access, sharing, audit"): a token reaches the studies its institution owns plus
those granted to it. Owning means having sent at least one instance of the study (a row
in ``instance_sources``). Grants (issue 3, ``sharing``) will be one more ``OR`` branch
here. Scopes never widen this: an ``admin`` token sees its institution's studies only.

Every query that names study rows must pass through :func:`reachable`, so that an
unreachable study and a nonexistent one give the same answer.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, and_, exists, select

from dicomweb.store import instance_sources, instances, institutions

__all__ = ["reachable"]


def reachable(study_uid: ColumnElement[str], institution: str) -> ColumnElement[bool]:
    """SQL condition: the study whose UID is ``study_uid`` is reachable by ``institution``.

    Parameters
    ----------
    study_uid : column expression
        The study UID column of the outer query (correlated).
    institution : str
        The principal's institution name (the token's institution claim).
    """
    return exists(
        select(instance_sources.c.sop_uid)
        .join(instances, instances.c.sop_uid == instance_sources.c.sop_uid)
        .join(institutions, institutions.c.id == instance_sources.c.institution_id)
        .where(and_(instances.c.study_uid == study_uid, institutions.c.name == institution))
    )
