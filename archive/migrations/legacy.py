"""Adopting a catalog database made before migrations existed.

Until then each module ran ``create_all`` on open, which creates missing tables but never
alters one, plus two hand-written additive fixes for what changed in tables that existed.
A database of such a version therefore equals the baseline revision once it has:

* every baseline table (a module that never ran, e.g. the gateway's users and OAuth
  tables in a home only the plugin opened, never created its own);
* ``ix_studies_date_uid`` (the catalog's fix: create_all skips the indexes of tables that
  exist);
* ``oauth_clients.public`` and ``oauth_clients.redirect_uris`` (the client registry's fix,
  with the very statements it ran).

Only :func:`archive.migrations.upgrade` calls :func:`adopt`, inside its locked transaction;
every later change to the schema is a revision in ``versions/``.
"""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

__all__ = ["adopt"]

# columns added to oauth_clients after it first shipped, as the registry added them
_OAUTH_CLIENT_COLUMNS = {
    "public": "ALTER TABLE oauth_clients ADD COLUMN public BOOLEAN NOT NULL DEFAULT FALSE",
    "redirect_uris": "ALTER TABLE oauth_clients ADD COLUMN redirect_uris TEXT NOT NULL DEFAULT ''",
}
# indexes added to tables after they first shipped: (table, index, CREATE INDEX)
_LATE_INDEXES = (
    (
        "studies",
        "ix_studies_date_uid",
        "CREATE INDEX ix_studies_date_uid ON studies (study_date, study_uid)",
    ),
)


def adopt(conn: Connection, tables: Collection[str]) -> list[str]:
    """Make a pre-migration database (holding ``tables``) equal the baseline; returns what
    was added, for the log."""
    from alembic.operations import Operations
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from archive.migrations import BASELINE, SCRIPTS

    done: list[str] = []
    baseline = ScriptDirectory(str(SCRIPTS)).get_revision(BASELINE)
    assert baseline is not None
    missing = [name for name in baseline.module.TABLES if name not in tables]
    if missing:
        context = MigrationContext.configure(conn)
        with Operations.context(context):
            baseline.module.create_tables(skip=tables)
        done.append("created tables " + ", ".join(missing))
    if "oauth_clients" in tables:
        present = {c["name"] for c in inspect(conn).get_columns("oauth_clients")}
        for name, ddl in _OAUTH_CLIENT_COLUMNS.items():
            if name not in present:
                conn.execute(text(ddl))
                done.append(f"added oauth_clients.{name}")
    for table, index, ddl in _LATE_INDEXES:
        if table in tables and index not in {i["name"] for i in inspect(conn).get_indexes(table)}:
            conn.execute(text(ddl))
            done.append(f"added index {index}")
    return done
