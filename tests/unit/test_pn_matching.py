"""Case-insensitive person-name matching in every script (PS3.4 C.2.2.2), on SQLite and
on PostgreSQL: QIDO's search and the C-FIND handler, on a schema made by the migrations,
and revision 0005_pn_fold's backfill of names indexed before it.

The names are those of pydicom's character-set test files, decoded from their own
Specific Character Set (the way the indexer reads them).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_charset_files
from sqlalchemy import create_engine, select, text

from archive import migrations
from archive.api import FindRequest
from archive.catalog import Catalog, InstanceRecord, SourceRecord, patients
from archive.names import fold, fold_group, folded_groups
from dimse.api import find
from query.api import Level, parse_query, search

CHARSET_FILES = ("chrFren", "chrGerm", "chrGreek", "chrRuss", "chrH31", "chrH32", "chrX1", "chrX2")


def charset_name(stem: str) -> str:
    (path,) = get_charset_files(f"{stem}.dcm")
    return str(pydicom.dcmread(path, stop_before_pixels=True).PatientName)


def names() -> dict[str, str]:
    """Study Instance UID -> PatientName of each charset file, one study per file."""
    return {f"1.2.9.{i}": charset_name(stem) for i, stem in enumerate(CHARSET_FILES, 1)}


def index_names(catalog: Catalog, institution_id: int, by_study: dict[str, str]) -> None:
    records, sources = [], []
    for n, (study_uid, name) in enumerate(by_study.items(), 1):
        sop = f"{study_uid}.1.1"
        records.append(
            InstanceRecord(
                sop_uid=sop,
                series_uid=f"{study_uid}.1",
                study_uid=study_uid,
                patient_id=f"PN{n}",
                issuer="Hospital A",
                patient_name=name,
                referring_physician=name,
            )
        )
        sources.append(SourceRecord(sop, institution_id, "dimse", "HOSPA"))
    assert catalog.index_batch(records, sources) == []


# (query, file stems expected to match): the stored value, other case, wild cards, groups
CASES = [
    ("Äneas^Rüdiger", ["chrGerm"]),
    ("ÄNEAS^RÜDIGER", ["chrGerm"]),
    ("äneas^rüdiger", ["chrGerm"]),
    ("Äneas*", ["chrGerm"]),
    ("äNEAS^R?DIGER", ["chrGerm"]),
    ("BUC^JÉRÔME", ["chrFren"]),
    ("buc^j*", ["chrFren"]),
    ("Διονυσιος", ["chrGreek"]),
    ("ΔΙΟΝΥΣΙΟΣ", ["chrGreek"]),
    ("διον*", ["chrGreek"]),
    ("Люкceмбypг", ["chrRuss"]),
    ("ЛЮКCEМБYPГ", ["chrRuss"]),
    ("люк*", ["chrRuss"]),
    # PN component groups: the whole stored value, or any one group as a PACS user types it
    ("Yamada^Tarou=山田^太郎=やまだ^たろう", ["chrH31"]),
    ("YAMADA^TAROU", ["chrH31"]),
    ("山田^太郎", ["chrH31", "chrH32"]),
    ("山田*", ["chrH31", "chrH32"]),
    ("やまだ^たろう", ["chrH31", "chrH32"]),
    ("=山田^太郎", ["chrH31", "chrH32"]),
    ("yamada*=山田*", ["chrH31"]),
    ("ﾔﾏﾀﾞ^ﾀﾛｳ", ["chrH32"]),  # half-width katakana, as stored
    ("ヤマダ^タロウ", ["chrH32"]),  # full-width: folds alike (NFKC)
    ("wang^xiaodong", ["chrX1", "chrX2"]),
    ("王^小東", ["chrX1"]),
    ("王^小东", ["chrX2"]),
    ("王*", ["chrX1", "chrX2"]),
    ("Wang^XiaoDong=王^小東", ["chrX1"]),
    # no match: a single value is the whole group, wild cards are literal elsewhere
    ("Äneas", []),
    ("Ä%", []),
    ("Ä_eas^Rüdiger", []),
    ("?NEAS^RÜDIGER*", ["chrGerm"]),
    ("?NEAS^RÜDIGER＊", []),  # a full-width asterisk is a character, not a wild card
    ("山", []),
]


@pytest.fixture
def cat(catalog_url: str) -> Iterator[tuple[Catalog, dict[str, str]]]:
    catalog = Catalog(catalog_url, durable=False)
    a = catalog.add_institution("Hospital A", "HOSPA").id
    by_study = names()
    index_names(catalog, a, by_study)
    yield catalog, by_study
    catalog.close()


def matching(catalog: Catalog, by_study: dict[str, str], keyword: str, value: str) -> list[str]:
    stems = dict(zip(by_study, CHARSET_FILES, strict=True))
    query = parse_query([(keyword, value)], Level.STUDY)
    found = search(catalog, query, "Hospital A", "http://gw/dicom-web")
    return sorted(stems[r["0020000D"]["Value"][0]] for r in found)


@pytest.mark.parametrize(("value", "expected"), CASES)
def test_patient_name_matches_in_every_script(
    cat: tuple[Catalog, dict[str, str]], value: str, expected: list[str]
) -> None:
    assert matching(*cat, "PatientName", value) == sorted(expected)


@pytest.mark.parametrize(("value", "expected"), CASES[:3] + CASES[14:16])
def test_referring_physician_name_matches_alike(
    cat: tuple[Catalog, dict[str, str]], value: str, expected: list[str]
) -> None:
    assert matching(*cat, "ReferringPhysicianName", value) == sorted(expected)


def test_answers_carry_the_name_as_stored(cat: tuple[Catalog, dict[str, str]]) -> None:
    catalog, by_study = cat
    query = parse_query([("PatientName", "ΔΙΟΝΥΣΙΟΣ")], Level.STUDY)
    (found,) = search(catalog, query, "Hospital A", "http://gw/dicom-web")
    assert found["00100010"]["Value"][0]["Alphabetic"] == "Διονυσιος"


def test_fold() -> None:
    assert fold("ÄNEAS") == fold("äneas") == "äneas"
    assert fold("ΔΙΟΝΥΣΙΟΣ") == fold("Διονυσιος")  # final sigma too
    assert fold("Straße") == fold("STRASSE")
    assert fold("ＹＡＭＡＤＡ") == "yamada"
    assert fold_group(" Doe ^Jane^^") == "doe^jane"
    assert folded_groups("Yamada^Tarou=山田^太郎") == ("yamada^tarou", "山田^太郎", "")
    assert folded_groups("A=B=C=D") == ("a", "b", "c=d")
    assert folded_groups(None) is None


def test_revision_0005_folds_the_names_already_indexed(tmp_path: Path) -> None:
    """A catalog indexed before the folded columns existed matches after the upgrade."""
    from alembic import command

    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    # the catalog as revision 0004 left it, with a patient in it
    engine = migrations._engine(url)
    with engine.connect() as conn, conn.begin():
        command.upgrade(migrations._config(conn, []), "0004_races")
    engine.dispose()
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO patients (issuer, patient_id, patient_name) "
                "VALUES ('Hospital A', 'PN1', :name)"
            ),
            {"name": charset_name("chrGerm")},
        )
    engine.dispose()
    assert migrations.upgrade(url) == ["0005_pn_fold"]
    engine = create_engine(url)
    with engine.connect() as conn:
        row = conn.execute(
            select(
                patients.c.patient_name_fold_a,
                patients.c.patient_name_fold_i,
                patients.c.patient_name_fold_p,
            )
        ).one()
    engine.dispose()
    assert tuple(row) == ("äneas^rüdiger", "", "")


def test_c_find_answers_names_as_stored(cat: tuple[Catalog, dict[str, str]]) -> None:
    catalog, _ = cat
    for value, stem in (("ΔΙΟΝΥΣΙΟΣ", "chrGreek"), ("山田^太郎", "chrH31"), ("王^小东", "chrX2")):
        request = FindRequest("HOSPA", "Hospital A", "STUDY", ((0x00100010, value),))
        answers = find(catalog, request).datasets
        stored = charset_name(stem)
        assert stored in [str(a.PatientName) for a in answers], value
        assert all(a.SpecificCharacterSet == "ISO_IR 192" for a in answers)


def test_revision_0005_folds_names_indexed_before_it_for_search(empty_database_url: str) -> None:
    """Names a catalog indexed before revision 0005 are found by QIDO after the upgrade."""
    from alembic import command

    database = empty_database_url
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
    catalog = Catalog(database)
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
