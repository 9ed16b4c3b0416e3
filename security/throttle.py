"""Failed attempts per client address, in the catalog database, forgotten after a window.

Share-link openings (unknown link, wrong secret or PIN) and client secrets at the token
endpoint are guessable from the network: an address that fails ``limit`` times within
``window`` seconds is refused until its window ends. The count lives in a table, not in
the process, so every gateway worker (``gateway.workers``) and a restarted gateway see
the same count, and a row is deleted once its window is over: the table holds only the
addresses that failed recently.

Each failure is one statement (an upsert whose increment happens in SQL), so parallel
failures from one address are all counted, on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import Column, Float, Index, Integer, MetaData, String, Table, case, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

__all__ = ["FailureThrottle", "failure_throttle", "metadata"]

metadata = MetaData()

failure_throttle = Table(
    "failure_throttle",
    metadata,
    Column("kind", String(16), primary_key=True),  # what was guessed: "share", "client"
    Column("address", String(64), primary_key=True),
    Column("window_start", Float, nullable=False),
    Column("failures", Integer, nullable=False),
    Column("expires_at", Float, nullable=False),
    Index("ix_failure_throttle_expires", "expires_at"),
)


class FailureThrottle:
    """Counts failures per (kind, address) within a fixed window.

    Parameters
    ----------
    engine : Engine
        The catalog's engine (the table is made by the migrations).
    limit : int
        Failures within a window after which an address is refused.
    window : float
        Seconds from an address's first failure until its count is forgotten.
    clock : callable
        Returns the time in seconds (injectable for tests).
    """

    def __init__(
        self,
        engine: Engine,
        *,
        limit: int,
        window: float = 600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.engine = engine
        self.limit = limit
        self.window = window
        self.clock = clock

    def failures(self, kind: str, address: str) -> int:
        """Failures of ``address`` in its current window (0 once the window is over)."""
        now = self.clock()
        with self.engine.connect() as conn:
            found = conn.execute(
                select(failure_throttle.c.failures).where(
                    failure_throttle.c.kind == kind,
                    failure_throttle.c.address == address[:64],
                    failure_throttle.c.expires_at > now,
                )
            ).scalar_one_or_none()
        return int(found or 0)

    def throttled(self, kind: str, address: str) -> bool:
        """True when ``address`` failed ``limit`` times or more in its current window."""
        return self.failures(kind, address) >= self.limit

    def failed(self, kind: str, address: str) -> int:
        """Count one failure; returns the address's failures in its window, this one
        included. Rows whose window is over are deleted in the same transaction."""
        now = self.clock()
        row = {
            "kind": kind,
            "address": address[:64],
            "window_start": now,
            "failures": 1,
            "expires_at": now + self.window,
        }
        insert: Any = (
            postgresql.insert(failure_throttle)
            if self.engine.dialect.name == "postgresql"
            else sqlite.insert(failure_throttle)
        ).values(**row)
        over = insert.excluded.window_start >= failure_throttle.c.expires_at
        # a window that is over starts again at this failure; otherwise the count grows
        upsert = insert.on_conflict_do_update(
            index_elements=[failure_throttle.c.kind, failure_throttle.c.address],
            set_={
                "failures": case((over, 1), else_=failure_throttle.c.failures + 1),
                "window_start": case((over, now), else_=failure_throttle.c.window_start),
                "expires_at": case((over, now + self.window), else_=failure_throttle.c.expires_at),
            },
        ).returning(failure_throttle.c.failures)
        with self.engine.begin() as conn:
            # the write comes first: on SQLite the transaction takes the write lock at
            # once (waiting on busy_timeout) instead of failing to upgrade from a read
            count = int(conn.execute(upsert).scalar_one())
            conn.execute(delete(failure_throttle).where(failure_throttle.c.expires_at <= now))
        return count
