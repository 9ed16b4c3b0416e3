"""Sharing's public face for the query model, the gateway, the CLI and the plugin.

The grants (:class:`Grants`; the active ones as SQL for the access rule:
:func:`active_grants`), the reading worklist's record of opened studies
(:func:`record_opening`, :func:`openings`; its statuses: :class:`Status`) and share links
(:class:`ShareLinks`; a link's study as SQL: :func:`link_reaches`). The access rule and
the worklist are queries over the study index, built by ``query`` (``query.api``).
Everything else in ``sharing`` is private: import from here.
"""

from sqlalchemy import Engine

from sharing.grants import (
    Grant,
    Grants,
    Permission,
    active_grants,
    create_tables,
    parse_duration,
)
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
    link_reaches,
    share_institution,
)
from sharing.links import create_tables as create_link_tables
from sharing.worklist import Status, openings, parse_statuses, record_opening

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
    "active_grants",
    "ensure_schema",
    "link_reaches",
    "openings",
    "parse_duration",
    "parse_statuses",
    "record_opening",
    "share_institution",
]


def ensure_schema(engine: Engine) -> None:
    """Create sharing's tables (grants, worklist openings, share links) if missing.

    Idempotent. A home's catalog already has them: ``archive.migrations.upgrade`` (run
    by ``open_store``) creates and evolves every table; this serves fresh databases
    opened without it (tests) and never alters an existing table.
    """
    create_tables(engine)
    create_link_tables(engine)
