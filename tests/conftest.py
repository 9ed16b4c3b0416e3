"""Fixtures for unit and integration tests alike: a clock to move instead of sleeping, the
session's PostgreSQL cluster, and catalog databases on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import postgres
from tests.catalogdb import migrated
from tests.clock import Clock


@pytest.fixture
def clock() -> Clock:
    """A clock the test moves forward instead of sleeping (see tests/clock.py)."""
    return Clock()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[str]:
    """One throwaway PostgreSQL cluster for the whole session: the URL of its ``postgres``
    database. Tests take databases of their own in it (:func:`pg_database`)."""
    with postgres.cluster() as url:
        yield url


@pytest.fixture
def pg_database(pg_cluster: str) -> Iterator[str]:
    """A new, empty database of this test's own in the session's cluster."""
    url = postgres.create_database(pg_cluster)
    yield url
    postgres.drop_database(pg_cluster, url)


@pytest.fixture(scope="session")
def pg_session_catalog(pg_cluster: str) -> str:
    """The session's database at the current schema (made once by the migrations)."""
    return postgres.create_migrated_database(pg_cluster)


@pytest.fixture
def pg_catalog(pg_session_catalog: str) -> str:
    """The session's migrated database, emptied of what earlier tests left in it."""
    postgres.empty(pg_session_catalog)
    return pg_session_catalog


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)])
def catalog_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A catalog database at the current schema, once on SQLite and once on PostgreSQL
    (the scaled-out path): the same test holds on both."""
    if request.param == "sqlite":
        return migrated(f"sqlite:///{tmp_path / 'catalog.db'}")
    url: str = request.getfixturevalue("pg_catalog")
    return url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database (for migrations to make), on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'empty.db'}"
    url: str = request.getfixturevalue("pg_database")
    return url
