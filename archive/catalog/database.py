"""The catalog database: engines, the write lock, and the plain-SQL hot path.

SQLAlchemy Core (not the ORM) on the hot path: an attachment is one short transaction.
SQLite in WAL mode by default; a PostgreSQL URL works unchanged for scaled-out nodes.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import (
    Table,
    create_engine,
    event,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from archive.perthread import PerThread
from security.api import sqlite_begin, write_transaction

__all__ = [
    "Database",
]

logger = logging.getLogger(__name__)


class _HotPath:
    """The few statements run for every attachment, as plain SQL.

    On SQLite they go straight to a per-thread ``sqlite3`` connection: SQLAlchemy's pool
    and compilation cost more than the statements themselves (tens of microseconds each,
    held under the GIL that Orthanc's other DICOM threads wait for). On other databases the
    same SQL runs through SQLAlchemy ``text()``. Named parameters suit both.
    """

    def __init__(self, catalog: Database, path: str | None, synchronous: str) -> None:
        self.catalog = catalog
        self.path = path
        self.synchronous = synchronous
        self._connections: PerThread[sqlite3.Connection] = PerThread(self._connect)

    def _connect(self) -> sqlite3.Connection:
        assert self.path is not None
        conn = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
        _sqlite_pragmas(self.synchronous)(conn, None)
        return conn

    def _sqlite(self) -> sqlite3.Connection:
        return self._connections.get()

    def close(self) -> None:
        for conn in self._connections.values():
            conn.close()

    @contextmanager
    def write(self) -> Iterator[Callable[[str, Any], Any]]:
        """A write transaction; yields ``run(sql, params) -> cursor-like``."""
        if self.path is None:
            with self.catalog.write_transaction() as sa_conn:
                yield lambda sql, params: sa_conn.execute(text(sql), params)
            return
        lite = self._sqlite()
        with self.catalog.write_lock:
            lite.execute("BEGIN IMMEDIATE")
            try:
                yield lambda sql, params: lite.execute(sql, params)
            except BaseException:
                lite.execute("ROLLBACK")
                raise
            lite.execute("COMMIT")

    def read(self, sql: str, params: Any) -> list[Any]:
        if self.path is None:
            with self.catalog.engine.connect() as conn:
                return list(conn.execute(text(sql), params))
        return self._sqlite().execute(sql, params).fetchall()


def _in_lists(values: Sequence[str], size: int = 500) -> Iterator[tuple[str, dict[str, str]]]:
    """``IN (...)`` placeholders and parameters for ``values``, ``size`` at a time
    (SQLite limits the parameters of one statement)."""
    for start in range(0, len(values), size):
        chunk = values[start : start + size]
        yield (
            ", ".join(f":v{i}" for i in range(len(chunk))),
            {f"v{i}": value for i, value in enumerate(chunk)},
        )


def _sqlite_pragmas(synchronous: str) -> Callable[[Any, Any], None]:
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # let SQLAlchemy's BEGIN below decide transactions (pysqlite's own handling defers them)
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA busy_timeout=60000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    return on_connect


class Database:
    """The catalog database that every part of the catalog works on."""

    def __init__(self, url: str, *, durable: bool = True) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        # SQLite admits one writer; queueing this process's writers on a mutex is immediate
        # and fair, where SQLite's busy handler sleeps in growing steps (1, 2, 5, ... ms)
        self.write_lock = threading.RLock()
        kwargs: dict[str, Any] = {}
        if self.is_sqlite:
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 60}
            kwargs["pool_size"] = 8
        self.engine: Engine = create_engine(url, **kwargs)
        # derived data (the study index) is written without waiting for the disk
        self.index_engine: Engine = self.engine
        if self.is_sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas("FULL" if durable else "NORMAL"))
            event.listen(self.engine, "begin", sqlite_begin)
            self.index_engine = create_engine(url, **kwargs)
            event.listen(self.index_engine, "connect", _sqlite_pragmas("NORMAL"))
            event.listen(self.index_engine, "begin", sqlite_begin)
        sqlite_path = self.engine.url.database if self.is_sqlite else None
        self._hot = _HotPath(self, sqlite_path, "FULL" if durable else "NORMAL")

    def close(self) -> None:
        self._hot.close()
        self.engine.dispose()
        self.index_engine.dispose()

    @contextmanager
    def write_transaction(self, engine: Engine | None = None) -> Iterator[Connection]:
        """A write transaction (BEGIN IMMEDIATE on SQLite) on ``engine`` (the catalog's by
        default), after this process's other writers."""
        with self.write_lock, write_transaction(engine or self.engine) as conn:
            yield conn

    def _insert_ignore(self, table: Table) -> Any:
        if self.engine.dialect.name == "postgresql":
            return postgresql.insert(table).on_conflict_do_nothing()
        return sqlite.insert(table).on_conflict_do_nothing()
