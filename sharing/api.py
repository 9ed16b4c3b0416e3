"""Sharing's public face for the gateway, the CLI and the plugin.

Which studies a principal reaches (:func:`reachable`), which it may store reports into
(:func:`reportable`, :func:`may_store_reports`), the grants behind both
(:class:`Grants`), the reading worklist of granted studies (:func:`on_worklist`,
:func:`worklist_entries`, :func:`record_opened`) and share links (:class:`ShareLinks`).
Everything else in ``sharing`` is private: import from here.
"""

from sqlalchemy import Engine

from sharing.access import (
    claim_for_store,
    deletable,
    may_store_reports,
    reachable,
    reaches_study,
    reportable,
)
from sharing.grants import Grant, Grants, Permission, create_tables, parse_duration
from sharing.links import (
    SHARE_PREFIX,
    Action,
    LinkGone,
    LinkLocked,
    NewLink,
    PinRequired,
    ShareLink,
    ShareLinks,
    WrongPin,
    share_institution,
)
from sharing.links import create_tables as create_link_tables
from sharing.worklist import (
    Status,
    WorklistEntry,
    on_worklist,
    parse_statuses,
    record_opened,
    worklist_entries,
)

__all__ = [
    "SHARE_PREFIX",
    "Action",
    "Grant",
    "Grants",
    "LinkGone",
    "LinkLocked",
    "NewLink",
    "Permission",
    "PinRequired",
    "ShareLink",
    "ShareLinks",
    "WrongPin",
    "Status",
    "WorklistEntry",
    "claim_for_store",
    "deletable",
    "ensure_schema",
    "may_store_reports",
    "on_worklist",
    "parse_duration",
    "parse_statuses",
    "reachable",
    "reaches_study",
    "record_opened",
    "reportable",
    "share_institution",
    "worklist_entries",
]


def ensure_schema(engine: Engine) -> None:
    """Create sharing's tables (grants, worklist openings, share links) if missing.

    Idempotent. A home's catalog already has them: ``archive.migrations.upgrade`` (run
    by ``open_store``) creates and evolves every table; this serves fresh databases
    opened without it (tests) and never alters an existing table.
    """
    create_tables(engine)
    create_link_tables(engine)
