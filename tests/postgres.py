"""A throwaway PostgreSQL cluster for the test session, and databases of their own in it.

The cluster is made with the machine's ``initdb``/``pg_ctl`` under a dedicated
unprivileged user (``initdb`` refuses to run as root) and removed afterwards. Each test
gets a new empty database (:func:`create_database`) or the session's migrated one
(:func:`create_migrated_database`) emptied of the rows an earlier test left
(:func:`empty`).
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, make_url, text

from archive import migrations
from tests.integration.harness import free_port

__all__ = ["cluster", "create_database", "create_migrated_database", "drop_database", "empty"]

PG_USER = "vnapgtest"
_names = itertools.count()


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def _as_pg_user(*args: str) -> subprocess.CompletedProcess[str]:
    command = list(args)
    if os.geteuid() == 0:
        command = ["runuser", "-u", PG_USER, "--", *command]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


@contextmanager
def cluster() -> Iterator[str]:
    """Start a cluster; yields the URL of its ``postgres`` database (user ``vna``)."""
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not (initdb and pg_ctl):
        # the scaled-out path must always be tested: a skip here would pass unseen
        pytest.fail(
            "PostgreSQL server binaries (initdb, pg_ctl) are not installed: `make install` "
            "installs Debian's postgresql package"
        )
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(PG_USER)
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", PG_USER], check=True)
    # pytest's temporary tree is private to root; the cluster's user needs its own directory
    root = Path(tempfile.mkdtemp(prefix="vna-pg-"))
    data, sockets = root / "data", root / "sock"
    sockets.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, PG_USER)
        shutil.chown(sockets, PG_USER)
    proc = _as_pg_user(initdb, "-D", str(data), "-U", "vna", "--auth=trust", "-E", "UTF8")
    assert proc.returncode == 0, proc.stderr
    port = free_port()
    proc = _as_pg_user(
        pg_ctl,
        "-D",
        str(data),
        "-l",
        str(root / "log"),
        "-w",
        "-o",
        f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off",
        "start",
    )
    assert proc.returncode == 0, proc.stderr + (root / "log").read_text()
    try:
        yield f"postgresql+psycopg://vna@127.0.0.1:{port}/postgres"
    finally:
        _as_pg_user(pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


def _admin(cluster_url: str, statement: str) -> None:
    admin = create_engine(cluster_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(statement))
    finally:
        admin.dispose()


def _url(cluster_url: str, name: str) -> str:
    return make_url(cluster_url).set(database=name).render_as_string(hide_password=False)


def create_database(cluster_url: str, prefix: str = "test") -> str:
    """A new, empty database in the cluster; returns its URL."""
    name = f"{prefix}_{os.getpid()}_{next(_names)}"
    _admin(cluster_url, f'CREATE DATABASE "{name}"')
    return _url(cluster_url, name)


def create_migrated_database(cluster_url: str) -> str:
    """A new database brought to the current schema by the migrations; returns its URL."""
    url = create_database(cluster_url, "catalog")
    migrations.upgrade(url)
    return url


def empty(url: str) -> None:
    """Delete every row of the database at ``url`` but its schema version, and restart its
    sequences: a migrated database as new, in milliseconds (making one takes a second)."""
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            # a test that left a transaction open fails here instead of hanging the run
            conn.execute(text("SET LOCAL lock_timeout = '10s'"))
            # no foreign-key triggers while deleting: the order of the tables does not matter
            conn.execute(text("SET LOCAL session_replication_role = replica"))
            tables = conn.execute(
                text(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                    "AND tablename <> 'alembic_version'"
                )
            ).scalars()
            for table in list(tables):
                conn.execute(text(f'DELETE FROM "{table}"'))  # noqa: S608 - catalog names
            sequences = conn.execute(
                text("SELECT sequencename FROM pg_sequences WHERE schemaname = 'public'")
            ).scalars()
            for sequence in list(sequences):
                conn.execute(text(f'ALTER SEQUENCE "{sequence}" RESTART'))
    finally:
        engine.dispose()


def drop_database(cluster_url: str, url: str) -> None:
    """Drop a test's database, ending any connection a test left open."""
    name = make_url(url).database
    _admin(cluster_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
