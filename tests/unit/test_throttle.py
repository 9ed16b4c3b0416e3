"""The failure throttle in the catalog database: counted in SQL, per (kind, address),
forgotten when the window ends; parallel failures all count. On SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import Engine, create_engine, func, select

from security.throttle import FailureThrottle, failure_throttle


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def engine(catalog_url: str) -> Iterator[Engine]:
    made = create_engine(catalog_url)  # the migrations made the throttle's table
    yield made
    made.dispose()


def rows(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(failure_throttle)).scalar_one())


def check_window_and_expiry(engine: Engine) -> None:
    clock = Clock()
    throttle = FailureThrottle(engine, limit=3, window=600.0, clock=clock)
    assert [throttle.failed("share", "10.0.0.1") for _ in range(2)] == [1, 2]
    assert not throttle.throttled("share", "10.0.0.1")
    assert throttle.failed("share", "10.0.0.1") == 3
    assert throttle.throttled("share", "10.0.0.1")
    assert not throttle.throttled("client", "10.0.0.1")  # another kind counts apart
    assert not throttle.throttled("share", "10.0.0.2")  # another address too
    clock.now += 599
    assert throttle.failed("share", "10.0.0.2") == 1
    assert throttle.failures("share", "10.0.0.1") == 3
    clock.now += 2  # 10.0.0.1's window is over: forgotten, a failure starts a new one
    assert throttle.failures("share", "10.0.0.1") == 0
    assert throttle.failed("share", "10.0.0.1") == 1
    clock.now += 600  # both windows over: the next failure deletes the old rows
    throttle.failed("client", "10.0.0.3")
    assert rows(engine) == 1


def check_parallel_failures_all_count(engine: Engine) -> None:
    throttle = FailureThrottle(engine, limit=100, window=600.0)
    with ThreadPoolExecutor(8) as pool:
        counts = list(pool.map(lambda _: throttle.failed("share", "10.9.9.9"), range(40)))
    assert sorted(counts) == list(range(1, 41))  # each failure saw its own count
    assert throttle.failures("share", "10.9.9.9") == 40


def test_window_and_expiry(engine: Engine) -> None:
    check_window_and_expiry(engine)


def test_parallel_failures_all_count(engine: Engine) -> None:
    check_parallel_failures_all_count(engine)
