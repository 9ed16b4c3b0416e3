"""Every table of the catalog database, for schema migrations and their tests.

The catalog database is shared: the archive, sharing and security each define their own
tables (their own ``MetaData``). Only a composition root may know all of them, so the list
lives here, not in ``archive.migrations`` (archive may not import sharing). Alembic's
autogenerate (``alembic revision --autogenerate``, see alembic.ini) compares the database
with them all (:func:`catalog_metadata`); ``tests/unit/test_migrations.py`` checks the
migrations against it.
"""

from __future__ import annotations

from sqlalchemy import MetaData

import archive.api as archive_api
import security.api as security_api
import security.identity as identity
import sharing.api as sharing_api

__all__ = ["all_metadata", "catalog_metadata"]


def all_metadata() -> list[MetaData]:
    """The ``MetaData`` of every module that owns tables in the catalog database."""
    return [
        *archive_api.table_metadata,
        *sharing_api.table_metadata,
        *security_api.table_metadata,
        *identity.table_metadata,
    ]


def catalog_metadata(*owners: MetaData) -> MetaData:
    """The tables of ``owners`` (default: every owner) copied into one ``MetaData``.

    A foreign key between owners names its table as a string (sharing's grants name the
    index's ``institutions`` and ``patients``: sharing may not import archive's tables),
    which resolves only among tables of one ``MetaData``.
    """
    combined = MetaData()
    for owner in owners or all_metadata():
        for table in owner.tables.values():
            table.to_metadata(combined)
    return combined
