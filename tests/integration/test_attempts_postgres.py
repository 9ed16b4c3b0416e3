"""Attempt counting and the failure throttle on a real PostgreSQL (the scaled-out path):
the checks of tests/unit/test_attempts.py and tests/unit/test_throttle.py, each on a
database of its own (made by the migrations) in a throwaway cluster."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from archive import migrations
from archive.catalog import Catalog
from tests.catalogdb import migrated
from tests.integration import test_postgres
from tests.unit.test_attempts import CHECKS
from tests.unit.test_throttle import (
    check_parallel_failures_all_count,
    check_window_and_expiry,
)

pg_url = test_postgres.pg_url  # the throwaway cluster fixture (a cluster for this module)
_names = itertools.count()


@pytest.fixture
def engine(pg_url: str) -> Iterator[Engine]:
    """The catalog engine of a new database brought to head by the migrations."""
    name = f"attempts_{next(_names)}"
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    admin.dispose()
    url = make_url(pg_url).set(database=name).render_as_string(hide_password=False)
    migrations.upgrade(url)
    catalog = Catalog(migrated(url))
    yield catalog.engine
    catalog.close()


@pytest.mark.parametrize(
    "check",
    [*CHECKS, check_window_and_expiry, check_parallel_failures_all_count],
    ids=lambda c: c.__name__.removeprefix("check_"),
)
def test_on_postgresql(engine: Engine, check: Callable[[Engine], None]) -> None:
    check(engine)
