"""Revision 0005_pn_fold on a catalog of a few thousand rows (SQLite): every name indexed
before it is folded as the indexer folds it, read a page at a time rather than all at once.

tests/integration/test_charsets_postgres.py runs the revision on PostgreSQL.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import Engine, create_engine, event, text

from archive import migrations
from archive.names import folded_groups

PN_FOLD = importlib.import_module("archive.migrations.versions.v0005_pn_fold")
ROWS = 2_500  # more than two pages

NAMES = [
    "Yamada^Tarou=山田^太郎=やまだ^たろう",
    "Yamada^Tarou=山田^太郎",
    "=山田^太郎",
    "ÄNEAS^Ödipus",
    "ΔΙΟΝΥΣΙΟΣ",
    "Smith^John\\Doe^Jane",  # multi-valued: the first value is matched
    "",
    None,
]


def _name(i: int) -> str | None:
    name = NAMES[i % len(NAMES)]
    return None if name is None else f"{name}{i}" if name and "=" not in name else name


@pytest.fixture
def url(tmp_path: Path) -> Iterator[str]:
    """A catalog at 0004_races holding ROWS patients and ROWS studies with names."""
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    engine = migrations._engine(url)
    with engine.connect() as conn, conn.begin():
        command.upgrade(migrations._config(conn, []), "0004_races")
    engine.dispose()
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO patients (pk, issuer, patient_id, patient_name) "
                "VALUES (:pk, 'Hospital A', :id, :name)"
            ),
            [{"pk": i + 1, "id": f"P{i}", "name": _name(i)} for i in range(ROWS)],
        )
        conn.execute(
            text(
                "INSERT INTO studies (study_uid, patient_pk, referring_physician, created_at) "
                "VALUES (:uid, :pk, :name, 0)"
            ),
            [{"uid": f"1.2.9.{i}", "pk": i + 1, "name": _name(i + 3)} for i in range(ROWS)],
        )
    engine.dispose()
    yield url


def test_every_name_indexed_before_it_is_folded_a_page_at_a_time(url: str) -> None:
    selects: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "LIMIT" in statement.upper():
            selects.append(statement)

    event.listen(Engine, "before_cursor_execute", record)
    try:
        assert migrations.upgrade(url) == ["0005_pn_fold"]
    finally:
        event.remove(Engine, "before_cursor_execute", record)

    engine = create_engine(url)
    with engine.connect() as conn:
        patients = conn.execute(
            text(
                "SELECT patient_name, patient_name_fold_a, patient_name_fold_i, "
                "patient_name_fold_p FROM patients"
            )
        ).all()
        studies = conn.execute(
            text(
                "SELECT referring_physician, referring_physician_fold_a, "
                "referring_physician_fold_i, referring_physician_fold_p FROM studies"
            )
        ).all()
    engine.dispose()
    for rows in (patients, studies):
        assert len(rows) == ROWS
        for name, *folded in rows:
            expected = folded_groups(name)
            assert tuple(folded) == (expected or (None, None, None)), name
    assert ("山田^太郎", "やまだ^たろう") in {(row[2], row[3]) for row in patients}
    assert any(str(row[1]).startswith("äneas^ödipus") for row in patients)
    # each table is read in pages of _BATCH rows, plus the empty page that ends it
    for table, offset in (("patients", 0), ("studies", 3)):
        named = sum(1 for i in range(ROWS) if _name(i + offset) is not None)
        pages = math.ceil(named / PN_FOLD._BATCH) + 1
        assert sum(f"FROM {table}" in s for s in selects) == pages, table
