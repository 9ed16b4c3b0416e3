"""Sharing's public face for the query model, the gateway, the CLI and the plugin.

The grants (:class:`Grants`; the active ones as SQL for the access rule:
:func:`active_grants`), the reading worklist's record of opened studies
(:func:`record_opening`, :func:`openings`; its statuses: :class:`Status`) and share links
(:class:`ShareLinks`; a link's study as SQL: :func:`link_reaches`). The access rule and
the worklist are queries over the study index, built by ``query`` (``query.api``).
Everything else in ``sharing`` is private: import from here.
"""

from sqlalchemy import MetaData

from sharing import grants, links
from sharing.grants import (
    Grant,
    Grants,
    Permission,
    active_grants,
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
from sharing.worklist import Status, openings, parse_statuses, record_opening

# the tables sharing owns in the catalog database (deploy/schema.py); the worklist's
# worklist_opened is defined in the grants' MetaData
table_metadata: tuple[MetaData, ...] = (grants.metadata, links.metadata)

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
    "link_reaches",
    "openings",
    "parse_duration",
    "parse_statuses",
    "record_opening",
    "share_institution",
    "table_metadata",
]
