"""Sharing's public face for the gateway, the CLI and the plugin.

Which studies a principal reaches (:func:`reachable`), which it may store reports into
(:func:`reportable`, :func:`may_store_reports`), and the grants behind both
(:class:`Grants`), and share links (:class:`ShareLinks`). Everything else in ``sharing``
is private: import from here.
"""

from sqlalchemy import Engine

from sharing.access import may_store_reports, reachable, reportable
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
    "ensure_schema",
    "may_store_reports",
    "parse_duration",
    "reachable",
    "reportable",
    "share_institution",
]


def ensure_schema(engine: Engine) -> None:
    """Create sharing's tables (grants, share links) on the catalog's engine if missing.

    Called by every process that opens the catalog (gateway, plugin, CLI); idempotent.
    """
    create_tables(engine)
    create_link_tables(engine)
