"""Case-insensitive person-name matching in every script on a real PostgreSQL catalog.

The same queries as tests/unit/test_pn_matching.py (SQLite), through the same code: QIDO's
search and the C-FIND handler, on a schema made by the migrations, and revision
0005_pn_fold's backfill of names indexed before it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from alembic import command
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from archive import migrations
from archive.api import FindRequest
from archive.catalog import Catalog
from dimse.api import find
from query.api import Level, parse_query, search
from tests.catalogdb import migrated
from tests.integration import test_postgres
from tests.unit.test_pn_matching import CASES, charset_name, index_names, matching, names

pg_url = test_postgres.pg_url  # the throwaway cluster fixture (a cluster for this module)


@pytest.fixture
def database(pg_url: str) -> Iterator[str]:
    """An empty database of its own in the cluster: tests share nothing."""
    name = f"vna_{uuid.uuid4().hex[:12]}"
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    yield make_url(pg_url).set(database=name).render_as_string(hide_password=False)


@pytest.fixture
def cat(database: str) -> Iterator[tuple[Catalog, dict[str, str]]]:
    migrations.upgrade(database)
    catalog = Catalog(migrated(database))
    a = catalog.add_institution("Hospital A", "HOSPA").id
    by_study = names()
    index_names(catalog, a, by_study)
    yield catalog, by_study
    catalog.close()


def test_pn_matching_in_every_script_on_postgresql(cat: tuple[Catalog, dict[str, str]]) -> None:
    catalog, by_study = cat
    for value, expected in CASES:
        assert matching(catalog, by_study, "PatientName", value) == sorted(expected), value
        assert matching(catalog, by_study, "ReferringPhysicianName", value) == sorted(expected)


def test_c_find_on_postgresql_answers_names_as_stored(cat: tuple[Catalog, dict[str, str]]) -> None:
    catalog, _ = cat
    for value, stem in (("ΔΙΟΝΥΣΙΟΣ", "chrGreek"), ("山田^太郎", "chrH31"), ("王^小东", "chrX2")):
        request = FindRequest("HOSPA", "Hospital A", "STUDY", ((0x00100010, value),))
        answers = find(catalog, request).datasets
        stored = charset_name(stem)
        assert stored in [str(a.PatientName) for a in answers], value
        assert all(a.SpecificCharacterSet == "ISO_IR 192" for a in answers)


def test_revision_0005_folds_names_indexed_before_it_on_postgresql(database: str) -> None:
    engine = migrations._engine(database)
    with engine.connect() as conn, conn.begin():
        command.upgrade(migrations._config(conn, []), "0004_races")
    engine.dispose()
    engine = create_engine(database)
    with engine.begin() as conn:
        pk = conn.execute(
            text(
                "INSERT INTO patients (issuer, patient_id, patient_name) "
                "VALUES ('Hospital A', 'PN1', :name) RETURNING pk"
            ),
            {"name": charset_name("chrH31")},
        ).scalar_one()
        conn.execute(
            text(
                "INSERT INTO studies (study_uid, patient_pk, referring_physician, created_at) "
                "VALUES ('1.2.9.1', :pk, :name, 0)"
            ),
            {"pk": pk, "name": charset_name("chrGreek")},
        )
    engine.dispose()
    assert migrations.upgrade(database) == ["0005_pn_fold"]
    catalog = Catalog(migrated(database))
    try:
        catalog.add_institution("Hospital A", "HOSPA")
        with catalog.engine.begin() as conn:
            conn.execute(
                text("UPDATE studies SET owner_institution_id = (SELECT id FROM institutions)")
            )
        for keyword, value in (("PatientName", "YAMADA^TAROU"), ("PatientName", "山田*")):
            query = parse_query([(keyword, value)], Level.STUDY)
            found = search(catalog, query, "Hospital A", "http://gw/dicom-web")
            assert [r["0020000D"]["Value"][0] for r in found] == ["1.2.9.1"], value
        query = parse_query([("ReferringPhysicianName", "ΔΙΟΝΥΣΙΟΣ")], Level.STUDY)
        assert len(search(catalog, query, "Hospital A", "http://gw/dicom-web")) == 1
    finally:
        catalog.close()
