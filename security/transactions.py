"""Write transactions that read first, on the catalog database.

SQLite cannot turn a read transaction into a write one while another connection writes:
it answers "database is locked" at once, whatever the busy timeout, since waiting could
deadlock. A transaction that reads before it writes must take the write lock when it
begins (``BEGIN IMMEDIATE``); then it waits its turn like any other writer. The
catalog's SQLite engines begin that way for a connection marked ``vna_write``
(``archive.catalog``); PostgreSQL needs nothing (row locks and re-checked conditions).
A transaction whose first statement writes needs none of this.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.engine import Connection, Engine

__all__ = ["writing"]


@contextmanager
def writing(engine: Engine) -> Iterator[Connection]:
    """A transaction on ``engine`` that holds the write lock from its start (SQLite)."""
    with engine.connect() as conn:
        conn.info["vna_write"] = True
        with conn.begin():
            yield conn
