"""Schema migrations of the catalog database (archive.migrations), on SQLite.

tests/integration/test_migrations_postgres.py runs the same checks on a real PostgreSQL.
"""

from __future__ import annotations

import hashlib
import importlib
import multiprocessing
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Column, Float, LargeBinary, MetaData, String, Table, create_engine, text
from sqlalchemy.engine import Engine

import archive.catalog
import security.audit
import sharing.grants
from archive import migrations
from archive.plugin import open_store
from archive.settings import StorageSettings
from compose.settings import load_settings
from deploy.schema import all_metadata, catalog_metadata
from security.clients import ClientRegistry
from security.errors import Conflict

ROOT = Path(__file__).resolve().parents[2]


def revisions() -> list[str]:
    """Every revision, baseline first."""
    scripts = ScriptDirectory(str(migrations.SCRIPTS))
    return [script.revision for script in reversed(list(scripts.walk_revisions()))]


def schema_diff(engine: Engine) -> list[Any]:
    """What alembic's autogenerate would change to make the database match the code."""
    with engine.connect() as conn:
        return list(compare_metadata(MigrationContext.configure(conn), catalog_metadata()))


# -- a database as the last version before migrations left it ----------------------------

# oauth_clients as it first shipped, before public clients (public, redirect_uris)
_old = MetaData()
Table(
    "oauth_clients",
    _old,
    Column("client_id", String(64), primary_key=True),
    Column("name", String(128), nullable=False, unique=True),
    Column("institution", String(128), nullable=False),
    Column("scopes", String(512), nullable=False),
    Column("secret_sha256", LargeBinary(32), nullable=False),
    Column("created_at", Float, nullable=False),
)
CLIENT_SECRET = "an old client's secret"  # noqa: S105 - test data


def build_pre_migration_database(engine: Engine) -> None:
    """Tables as an older version's create_all made them, with rows: the plugin, the CLI
    (grants, audit, an OAuth client of the first kind) ran; the gateway's sign-in tables
    and share links were never created; the catalog predates ix_studies_date_uid and the
    study and instance claims (revision 0002_dimse_own)."""
    catalog_metadata(
        archive.catalog.metadata, sharing.grants.metadata, security.audit.metadata
    ).create_all(engine)
    _old.create_all(engine)
    with engine.begin() as conn:
        conn.execute(text("DROP INDEX ix_studies_date_uid"))
        conn.execute(text("DROP TABLE study_claims"))
        conn.execute(text("DROP TABLE instance_claims"))
        conn.execute(
            text("INSERT INTO institutions (id, name, created_at) VALUES (1, 'A', 1), (2, 'B', 1)")
        )
        conn.execute(text("INSERT INTO patients (pk, issuer, patient_id) VALUES (1, 'A', 'P1')"))
        conn.execute(
            text(
                "INSERT INTO studies (study_uid, patient_pk, study_date, created_at,"
                " owner_institution_id) VALUES ('1.2.3', 1, '20240101', 1, 1)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO grants (grantor_id, grantee_id, study_uid, permission,"
                " created_at, created_by) VALUES (1, 2, '1.2.3', 'read', 1, 'test')"
            )
        )
        conn.execute(
            _old.tables["oauth_clients"]
            .insert()
            .values(
                client_id="vna-old",
                name="pacs",
                institution="A",
                scopes="dicom.read",
                secret_sha256=hashlib.sha256(CLIENT_SECRET.encode()).digest(),
                created_at=1.0,
            )
        )
        conn.execute(
            security.audit.audit_head.insert().values(
                id=1, records=0, mac=security.audit.GENESIS, updated=1.0
            )
        )


def check_pre_migration_rows(engine: Engine) -> None:
    """The rows build_pre_migration_database wrote, read through the current code."""
    with engine.connect() as conn:
        assert conn.execute(text("SELECT name FROM institutions ORDER BY id")).scalars().all() == [
            "A",
            "B",
        ]
        assert conn.execute(text("SELECT study_date FROM studies")).scalar_one() == "20240101"
        assert conn.execute(text("SELECT grantee_id FROM grants")).scalar_one() == 2
        assert conn.execute(text("SELECT records FROM audit_head")).scalar_one() == 0
    client = ClientRegistry(engine).authenticate("vna-old", CLIENT_SECRET)
    assert client is not None
    assert (client.name, client.public, client.redirect_uris) == ("pacs", False, ())


# -- tests ----------------------------------------------------------------------------------


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'catalog.db'}"


def test_head_and_baseline_name_the_scripts() -> None:
    """HEAD spares a started archive the alembic import; it must follow new revisions."""
    scripts = ScriptDirectory(str(migrations.SCRIPTS))
    assert scripts.get_heads() == [migrations.HEAD], "set archive.migrations.HEAD to the new head"
    assert scripts.get_bases() == [migrations.BASELINE]


def test_every_table_owner_is_in_the_target_metadata() -> None:
    """A module with a MetaData of its own must be listed in deploy/schema.py, or neither
    autogenerate nor these tests would see its tables."""
    listed = all_metadata()
    owners = []
    for package in (
        "archive",
        "sharing",
        "security",
        "tiering",
        "query",
        "dimse",
        "dicomweb",
        "inference",
    ):
        for path in sorted((ROOT / package).rglob("*.py")):
            if "= MetaData(" in path.read_text():
                owners.append(".".join(path.relative_to(ROOT).with_suffix("").parts))
    assert owners
    for name in owners:
        assert any(importlib.import_module(name).metadata is m for m in listed), name


def test_an_empty_database_is_migrated_to_the_code_s_schema(url: str) -> None:
    assert migrations.upgrade(url) == revisions()
    assert migrations.current(url) == (migrations.HEAD,)
    assert schema_diff(create_engine(url)) == []


_CONSTRAINT = ("PRIMARY KEY", "FOREIGN KEY", "UNIQUE", "CHECK", "CONSTRAINT")


def _constraints_sorted(sql: str) -> str:
    """``sql`` on one line, with a CREATE TABLE's constraints sorted after its columns.

    The owners' tables are copied into one MetaData (``catalog_metadata``: foreign keys
    between owners resolve only there), and a copy lists a table's constraints in another
    order, which means nothing to the database; columns keep theirs.
    """
    sql = " ".join(sql.split())
    if not sql.startswith("CREATE TABLE"):
        return sql
    head, _, body = sql.partition("(")
    body = body[: body.rindex(")")]
    items, depth, start = [], 0, 0
    for i, char in enumerate(body):
        depth += (char == "(") - (char == ")")
        if char == "," and depth == 0:
            items.append(body[start:i].strip())
            start = i + 1
    items.append(body[start:].strip())
    columns = [item for item in items if not item.startswith(_CONSTRAINT)]
    constraints = sorted(item for item in items if item.startswith(_CONSTRAINT))
    return f"{head}( {', '.join(columns + constraints)} )"


def test_migrations_and_create_all_make_the_same_tables(tmp_path: Path) -> None:
    """The tables as the code declares them (``create_all``: what older versions made on
    open, and what the legacy adoption expects) are what the migrations make, statement
    for statement (a table's constraints in any order)."""
    migrated, created = tmp_path / "migrated.db", tmp_path / "created.db"
    migrations.upgrade(f"sqlite:///{migrated}")
    engine = create_engine(f"sqlite:///{created}")
    catalog_metadata().create_all(engine)
    engine.dispose()

    def schema(path: Path) -> set[tuple[str, str, str]]:
        with sqlite3.connect(path) as conn:
            rows = conn.execute("SELECT type, name, sql FROM sqlite_master WHERE sql NOT NULL")
            return {(t, n, _constraints_sorted(s)) for t, n, s in rows if n != "alembic_version"}

    assert schema(migrated) == schema(created)
    assert len(schema(created)) > 40  # tables and indexes: the comparison compared something


def test_a_pre_migration_database_is_adopted_and_keeps_its_rows(url: str) -> None:
    engine = create_engine(url)
    build_pre_migration_database(engine)
    assert schema_diff(engine) != []  # the fixture really is behind
    # adopted and stamped at the baseline, not built again
    assert migrations.upgrade(url) == revisions()[1:]
    assert migrations.current(url) == (migrations.HEAD,)
    assert schema_diff(engine) == []
    check_pre_migration_rows(engine)
    with engine.connect() as conn:
        indexes = conn.execute(text("SELECT name FROM sqlite_master WHERE type='index'"))
        assert "ix_studies_date_uid" in set(indexes.scalars())
        # an owned study is claimed for its owner: nobody else can file into it
        claims = conn.execute(text("SELECT study_uid, institution_id FROM study_claims"))
        assert claims.all() == [("1.2.3", 1)]


def test_upgrading_twice_changes_nothing(url: str, tmp_path: Path) -> None:
    migrations.upgrade(url)
    path = tmp_path / "catalog.db"
    with sqlite3.connect(path) as conn:
        before = conn.execute("SELECT * FROM sqlite_master").fetchall()
    assert migrations.upgrade(url) == []
    assert migrations.upgrade(create_engine(url)) == []  # an engine does as well as a URL
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT * FROM sqlite_master").fetchall() == before
        versions = conn.execute("SELECT version_num FROM alembic_version").fetchall()
        assert versions == [(migrations.HEAD,)]


def test_a_database_from_a_newer_version_is_refused(url: str) -> None:
    migrations.upgrade(url)
    with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
        conn.execute("UPDATE alembic_version SET version_num = 'f00d'")
    with pytest.raises(Conflict, match="f00d.*newer version"):
        migrations.upgrade(url)


def test_open_store_upgrades_the_home(tmp_path: Path) -> None:
    """Every process opens the home through open_store: a home of an older version is
    brought up to date before the catalog is used."""
    settings = load_settings(tmp_path, storage=StorageSettings(fsync=False))
    engine = create_engine(settings.resolved_catalog_url)
    build_pre_migration_database(engine)
    store = open_store(settings)
    store.catalog.close()
    assert migrations.current(settings.resolved_catalog_url) == (migrations.HEAD,)
    assert schema_diff(engine) == []


def upgrade_at(url: str, start: float) -> list[str]:
    """In a child process: wait for the common start, then upgrade."""
    time.sleep(max(0.0, start - time.time()))
    return migrations.upgrade(url)


def run_concurrently(url: str, processes: int = 4) -> list[list[str]]:
    context = multiprocessing.get_context("spawn")
    with context.Pool(processes) as pool:
        start = time.time() + 3  # after every child has imported the project
        return pool.starmap(upgrade_at, [(url, start)] * processes)


def check_concurrent_upgrade(url: str, pre_migration: bool) -> None:
    """Four processes upgrade ``url`` at once (SQLite here, PostgreSQL in the integration
    tests): exactly one does the work, the others wait for the lock and find head."""
    engine = create_engine(url)
    if pre_migration:
        build_pre_migration_database(engine)
    results = run_concurrently(url)
    applied = [rev for result in results for rev in result]
    assert applied == (revisions()[1:] if pre_migration else revisions())
    assert migrations.current(url) == (migrations.HEAD,)
    assert schema_diff(engine) == []
    if pre_migration:
        check_pre_migration_rows(engine)
    engine.dispose()


@pytest.mark.parametrize("pre_migration", [False, True], ids=["empty", "pre-migration"])
def test_processes_upgrading_at_once_do_not_fail(url: str, pre_migration: bool) -> None:
    check_concurrent_upgrade(url, pre_migration)
