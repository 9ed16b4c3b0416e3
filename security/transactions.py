"""Write transactions that read first, on the catalog database.

SQLite cannot turn a read transaction into a write one while another connection writes:
it answers "database is locked" at once, whatever the busy timeout, since waiting could
deadlock. A transaction that reads before it writes must take the write lock when it
begins (``BEGIN IMMEDIATE``); then it waits its turn like any other writer. The catalog's
SQLite engines begin with :func:`sqlite_begin`, which does that for a connection that
:func:`write_transaction` opened; PostgreSQL needs nothing (row locks and re-checked
conditions). A transaction whose first statement writes needs none of this.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.engine import Connection, Engine

__all__ = ["sqlite_begin", "write_transaction"]

# marks a connection for sqlite_begin; private to this module
_WRITE = "vna_write"


def sqlite_begin(conn: Connection) -> None:
    """The ``begin`` listener of a SQLite engine whose connections let SQLAlchemy decide
    transactions: ``BEGIN IMMEDIATE`` in :func:`write_transaction`, else ``BEGIN``."""
    # writers take the lock up front, so two of them never deadlock upgrading from read
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.info.pop(_WRITE, False) else "BEGIN")


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A transaction on ``engine`` that holds the write lock from its start (SQLite)."""
    with engine.connect() as conn:
        conn.info[_WRITE] = True
        with conn.begin():
            yield conn
