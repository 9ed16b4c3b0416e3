"""Schema migrations (archive.migrations) on a real PostgreSQL: the checks of
tests/unit/test_migrations.py, each on a database of its own in the session's throwaway cluster."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, text

from archive import migrations
from tests.unit.test_migrations import (
    build_pre_migration_database,
    check_concurrent_upgrade,
    check_pre_migration_rows,
    revisions,
    schema_diff,
)


@pytest.fixture
def url(pg_database: str) -> str:
    """A new, empty database in the session's cluster."""
    return pg_database


def tables(url: str) -> set[str]:
    engine = create_engine(url)
    with engine.connect() as conn:
        found = conn.execute(
            text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        ).scalars()
        names = set(found)
    engine.dispose()
    return names


def test_an_empty_database_is_migrated_to_the_code_s_schema(url: str) -> None:
    assert tables(url) == set()
    assert migrations.upgrade(url) == revisions()
    assert migrations.current(url) == (migrations.HEAD,)
    engine = create_engine(url)
    assert schema_diff(engine) == []
    engine.dispose()
    assert {"blobs", "grants", "share_links", "oauth_clients", "audit_head"} <= tables(url)


def test_a_pre_migration_database_is_adopted_and_keeps_its_rows(url: str) -> None:
    engine = create_engine(url)
    build_pre_migration_database(engine)
    assert schema_diff(engine) != []
    assert migrations.upgrade(url) == revisions()[1:]
    assert migrations.current(url) == (migrations.HEAD,)
    assert schema_diff(engine) == []
    check_pre_migration_rows(engine)
    with engine.connect() as conn:
        index = conn.execute(
            text("SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_studies_date_uid'")
        ).scalar_one()
    assert "(study_date, study_uid)" in index
    engine.dispose()


def test_upgrading_twice_changes_nothing(url: str) -> None:
    migrations.upgrade(url)
    before = tables(url)
    assert migrations.upgrade(url) == []
    assert migrations.upgrade(url) == []
    assert tables(url) == before
    assert migrations.current(url) == (migrations.HEAD,)


@pytest.mark.parametrize("pre_migration", [False, True], ids=["empty", "pre-migration"])
def test_processes_upgrading_at_once_do_not_fail(url: str, pre_migration: bool) -> None:
    check_concurrent_upgrade(url, pre_migration)
