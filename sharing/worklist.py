"""The reading worklist's own record: which granted studies each grantee opened.

Issue 4: a regional reading centre works from the studies other institutions granted it,
each ``new``, ``opened`` or ``reported`` for it (:class:`Status`). Opening is the one
state nothing else records, so sharing keeps it here (``worklist_opened``); the worklist
itself is a query over the study index and the grants (``query.api.worklist_entries``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from enum import StrEnum

from sqlalchemy import Column, Float, ForeignKey, Integer, String, Subquery, Table, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from security.api import InvalidInput, write_transaction
from sharing.grants import metadata

__all__ = [
    "Status",
    "openings",
    "parse_statuses",
    "record_opening",
    "worklist_opened",
]

# in sharing's metadata, beside the grants table; made by the migrations (the foreign key
# names the index's table, as the grants' do)
worklist_opened = Table(
    "worklist_opened",
    metadata,
    Column("institution_id", Integer, ForeignKey("institutions.id"), primary_key=True),
    Column("study_uid", String(64), primary_key=True),
    Column("opened_at", Float, nullable=False),
    Column("opened_by", String(256), nullable=False),
)


class Status(StrEnum):
    """A granted study's state for its grantee."""

    NEW = "new"
    OPENED = "opened"
    REPORTED = "reported"


def parse_statuses(values: Iterable[str]) -> frozenset[Status]:
    """The statuses named by ``status=`` query values (``new``, ``opened,reported``, ...).

    Case-insensitive; ``,`` or ``\\`` separate several. Raises :class:`InvalidInput` for
    anything else.
    """
    wanted: set[Status] = set()
    for value in values:
        for item in value.replace("\\", ",").split(","):
            name = item.strip().lower()
            if not name:
                continue
            try:
                wanted.add(Status(name))
            except ValueError:
                raise InvalidInput(
                    f"status {item.strip()!r} is not one of: new, opened, reported"
                ) from None
    return frozenset(wanted)


def openings() -> Subquery:
    """The recorded openings (``institution_id``, ``study_uid``, ``opened_at``,
    ``opened_by``) as a subquery, a fresh alias each call, for the worklist's SQL to join."""
    return select(worklist_opened).subquery()


def record_opening(
    engine: Engine, institution_id: int, study_uid: str, by: str, now: float | None = None
) -> bool:
    """Record that the institution ``institution_id`` opened ``study_uid``.

    The caller has checked that the study is granted to it and not yet noted
    (``query.api.record_opened``). Returns False when a concurrent request of the same
    institution noted it first.
    """
    now = time.time() if now is None else now
    try:
        with write_transaction(engine) as conn:
            conn.execute(
                worklist_opened.insert().values(
                    institution_id=institution_id, study_uid=study_uid, opened_at=now, opened_by=by
                )
            )
    except IntegrityError:
        return False
    return True
