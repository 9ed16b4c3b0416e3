"""Schema migrations of the catalog database (alembic).

One database holds the tables of the archive, sharing and security. :func:`upgrade` is the
one place that brings it to the schema this version of the code expects, whatever made it:

* an empty database: every revision from the baseline on;
* a database made before migrations existed (tables, no ``alembic_version``): first the
  additive fixes older versions applied by hand on open (:mod:`archive.migrations.legacy`),
  so that it equals the baseline, then ``stamp`` the baseline, then the later revisions;
* a database alembic already manages: the revisions it lacks.

Everything happens in one transaction under a lock, so processes starting together (the
plugin inside Orthanc, the indexer, the gateway, a ``vna`` command) never race: on SQLite
the transaction takes the write lock up front (``BEGIN IMMEDIATE``), on PostgreSQL a
transaction-level advisory lock. The later ones wait, then find nothing to do. A database
already at head costs one small query and no alembic import (``HEAD`` below, checked by
``tests/unit/test_migrations.py``).

Revision scripts live in ``versions/`` next to this file and are found through the
package's path, so an installed archive needs no alembic.ini; that file, at the
repository's root, is for developers writing revisions (docs/development.md, "Schema
migrations").
"""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import create_engine, event, inspect, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from security.api import Conflict

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = ["BASELINE", "HEAD", "SCRIPTS", "current", "upgrade"]

logger = logging.getLogger(__name__)

SCRIPTS = Path(__file__).resolve().parent
BASELINE = "0001"
"""The revision equal to the schema of the last version without migrations."""
HEAD = "0005_pn_fold"
"""The newest revision in ``versions/``; a new revision moves it (a test says so)."""

# any constant shared by every process of every archive on the server: pg_advisory_xact_lock
# serialises the upgrades of one PostgreSQL cluster, which are rare and short
_PG_LOCK_KEY = 0x766E615F736368  # "vna_sch"
# a process waiting for another's upgrade waits this long for SQLite's write lock
_SQLITE_WAIT_MS = 600_000


def current(target: Engine | str) -> tuple[str, ...]:
    """The revisions the database is at; empty before alembic manages it."""
    engine = _engine(target)
    try:
        with engine.connect() as conn:
            return _current(conn)
    finally:
        engine.dispose()


def upgrade(target: Engine | str) -> list[str]:
    """Bring the catalog database named by ``target`` to ``HEAD``; returns what was applied.

    ``target`` is an engine or a URL; the upgrade runs on connections of its own either
    way. Idempotent, and safe to call from several processes at once.

    Raises
    ------
    Conflict
        The database is at a revision this version does not know (made by a newer one).
    """
    engine = _engine(target)
    try:
        with engine.connect() as conn:
            if _current(conn) == (HEAD,):
                return []
        return _upgrade_locked(engine)
    finally:
        engine.dispose()


def _engine(target: Engine | str) -> Engine:
    """A private engine: its own connections, transactions and locks, whatever the caller's
    engine does on connect or begin."""
    url = target.url if isinstance(target, Engine) else make_url(target)
    if url.get_backend_name() != "sqlite":
        return create_engine(url, poolclass=NullPool)
    engine = create_engine(url, poolclass=NullPool)

    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # transactions as written below, DDL included (pysqlite would decide otherwise)
        dbapi_connection.isolation_level = None
        dbapi_connection.execute(f"PRAGMA busy_timeout={_SQLITE_WAIT_MS}")
        _wal(dbapi_connection)

    @event.listens_for(engine, "begin")
    def on_begin(conn: Connection) -> None:
        # the write lock up front: a second process waits here, then sees the first's work
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _wal(dbapi_connection: sqlite3.Connection) -> None:
    """The catalog's journal mode, set before the first table exists. Switching a new file
    to WAL needs it to itself and SQLite does not wait for that (busy_timeout does not
    apply), so processes opening a new catalog together retry here."""
    deadline = time.monotonic() + _SQLITE_WAIT_MS / 1000
    while True:
        try:
            dbapi_connection.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _current(conn: Connection) -> tuple[str, ...]:
    if not inspect(conn).has_table("alembic_version"):
        return ()
    return tuple(conn.execute(text("SELECT version_num FROM alembic_version")).scalars())


def _config(conn: Connection, applied: list[str]) -> Config:
    from alembic.config import Config

    def on_version_apply(*, ctx: Any, step: Any, heads: Any, run_args: Any) -> None:
        if step.is_upgrade and not step.is_stamp:
            applied.extend(step.up_revision_ids)

    config = Config()
    config.set_main_option("script_location", str(SCRIPTS))
    config.attributes["connection"] = conn
    config.attributes["on_version_apply"] = on_version_apply
    return config


def _upgrade_locked(engine: Engine) -> list[str]:
    from alembic import command
    from alembic.script import ScriptDirectory

    from archive.migrations import legacy

    applied: list[str] = []
    with engine.connect() as conn, conn.begin():
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
        config = _config(conn, applied)
        script = ScriptDirectory.from_config(config)
        found = _current(conn)  # again, under the lock: another process may have upgraded
        unknown = [rev for rev in found if rev not in {s.revision for s in script.walk_revisions()}]
        if unknown:
            raise Conflict(
                f"the catalog database is at schema revision {', '.join(unknown)}, which this "
                f"version of vna does not know (it knows up to {HEAD}): a newer version made "
                "it; run that version, or restore a backup taken before it ran"
            )
        if found == (HEAD,):
            return []
        if not found:
            tables = set(inspect(conn).get_table_names())
            if tables:
                fixes = legacy.adopt(conn, tables)
                command.stamp(config, BASELINE)
                logger.info(
                    "catalog schema: adopted a database made before migrations (%s); "
                    "stamped revision %s",
                    "; ".join(fixes) or "nothing to add",
                    BASELINE,
                )
        try:
            command.upgrade(config, "head")
        except SQLAlchemyError:
            logger.exception("catalog schema: upgrade failed, nothing was changed")
            raise
    if applied:
        logger.info(
            "catalog schema: applied %s (now at %s)",
            ", ".join(applied),
            HEAD,
        )
    return applied
