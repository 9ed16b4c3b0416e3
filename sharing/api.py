"""Sharing's public face for the gateway and the plugin: which studies a principal reaches.

Everything else in ``sharing`` is private: import from here.
"""

from sqlalchemy import Engine

from sharing.access import reachable

__all__ = ["ensure_schema", "reachable"]


def ensure_schema(engine: Engine) -> None:
    """Create sharing's tables (grants, share links) on the catalog's engine if missing.

    Called by every process that opens the catalog (gateway, plugin, CLI); idempotent.
    """
