"""Which studies a principal reaches, as one SQL condition every query carries.

Design ("Access, sharing, audit"): a token reaches the studies its institution owns plus
those granted to it. The owner is the institution whose instance of the study was recorded
first (``studies.owner_institution_id``, set by the catalog): sending one made-up instance
with somebody else's Study Instance UID does not open their study. Grants (issue 3,
``sharing``) will be one more ``OR`` branch here. Scopes never widen this: an ``admin``
token sees its institution's studies only.

Every query that names study rows must pass through :func:`reachable`, so that an
unreachable study and a nonexistent one give the same answer.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, and_, exists, select
from sqlalchemy.orm import aliased

from archive.api import institutions, studies

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
    owned = aliased(studies)
    return exists(
        select(owned.c.study_uid)
        .join(institutions, institutions.c.id == owned.c.owner_institution_id)
        .where(and_(owned.c.study_uid == study_uid, institutions.c.name == institution))
    )
