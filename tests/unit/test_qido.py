"""QIDO-RS query translation and DICOM JSON rendering, against a real SQLite catalog."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from archive import migrations
from archive.catalog import Catalog, InstanceRecord, SourceRecord, metadata
from query.api import (
    Level,
    build_select,
    element,
    instances_to_retrieve,
    lookup,
    parse_query,
    query_for_keys,
    search,
)
from security.errors import InvalidInput
from tests.catalogdb import migrated

ROOT = "http://gw/dicom-web"


def rec(n: int, **kw: object) -> InstanceRecord:
    base: dict[str, object] = {
        "sop_uid": f"1.2.3.{n}",
        "series_uid": "1.2.2.1",
        "study_uid": "1.2.1.1",
        "patient_id": "P1",
        "issuer": "Hospital A",
        "patient_name": "Doe^Jane",
        "study_date": "20250110",
        "study_time": "101500",
        "accession_number": "ACC1",
        "modality": "CT",
        "series_number": 1,
        "instance_number": n,
        "transfer_syntax": "1.2.840.10008.1.2.1",
        "attachment_uuid": f"att-{n}",
    }
    base.update(kw)
    return InstanceRecord(**base)  # type: ignore[arg-type]


@pytest.fixture
def cat(tmp_path: Path) -> Iterator[Catalog]:
    catalog = Catalog(migrated(f"sqlite:///{tmp_path / 'catalog.db'}"), durable=False)
    a = catalog.add_institution("Hospital A", "HOSPA").id
    b = catalog.add_institution("Hospital B", "HOSPB").id
    records = [
        rec(1),
        rec(2),
        rec(3, series_uid="1.2.2.2", modality="SR", series_number=2),
        rec(
            4,
            study_uid="1.2.1.2",
            series_uid="1.2.2.3",
            patient_id="P2",
            patient_name="Smith^John",
            study_date="20250301",
            accession_number="ACC2",
            modality="MR",
        ),
        rec(
            5,
            study_uid="1.2.1.3",
            series_uid="1.2.2.4",
            patient_id="P3",
            issuer="Hospital B",
            patient_name="Doe^John",
            study_date="20250115",
            modality="CT",
        ),
    ]
    sources = [SourceRecord(f"1.2.3.{n}", a, "dimse", "HOSPA") for n in (1, 2, 3, 4)]
    sources.append(SourceRecord("1.2.3.5", b, "dimse", "HOSPB"))
    catalog.index_batch(records, sources)
    yield catalog
    catalog.close()


def studies(cat: Catalog, institution: str = "Hospital A", **params: str) -> list[str]:
    query = parse_query(params.items(), Level.STUDY)
    return [r["0020000D"]["Value"][0] for r in search(cat, query, institution, ROOT)]


def test_institution_sees_only_its_studies(cat: Catalog) -> None:
    assert studies(cat) == ["1.2.1.1", "1.2.1.2"]
    assert studies(cat, "Hospital B") == ["1.2.1.3"]
    assert studies(cat, "Nobody") == []


def test_an_injected_instance_does_not_open_another_institutions_study(cat: Catalog) -> None:
    """Hospital B stores one made-up instance carrying Hospital A's Study Instance UID."""
    b = cat.institution("Hospital B").id
    forged = rec(99, series_uid="1.2.2.99", issuer="Hospital B", patient_name="Forged^Name")
    assert cat.index_batch([forged], [SourceRecord("1.2.3.99", b, "dimse", "HOSPB")]) == []
    assert studies(cat, "Hospital B") == ["1.2.1.3"]
    assert studies(cat) == ["1.2.1.1", "1.2.1.2"]


def test_study_level_rendering(cat: Catalog) -> None:
    query = parse_query([("StudyInstanceUID", "1.2.1.1")], Level.STUDY)
    (result,) = search(cat, query, "Hospital A", ROOT)
    assert result["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane"}]}
    assert result["00080061"] == {"vr": "CS", "Value": ["CT", "SR"]}
    assert result["00201206"] == {"vr": "IS", "Value": [2]}
    assert result["00201208"] == {"vr": "IS", "Value": [3]}
    assert result["00081190"]["Value"] == [f"{ROOT}/studies/1.2.1.1"]
    assert result["00080050"] == {"vr": "SH", "Value": ["ACC1"]}
    assert result["00100030"] == {"vr": "DA"}  # known attribute, no value
    assert list(result) == sorted(result)


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"PatientID": "P2"}, ["1.2.1.2"]),
        ({"00100020": "P1"}, ["1.2.1.1"]),
        ({"PatientName": "doe*"}, ["1.2.1.1"]),
        ({"PatientName": "SMITH^J?HN"}, ["1.2.1.2"]),
        ({"PatientName": "*"}, ["1.2.1.1", "1.2.1.2"]),
        ({"StudyDate": "20250110"}, ["1.2.1.1"]),
        ({"StudyDate": "20250111-20251231"}, ["1.2.1.2"]),
        ({"StudyDate": "20250201-"}, ["1.2.1.2"]),
        ({"StudyDate": "-20250110"}, ["1.2.1.1"]),
        ({"StudyTime": "1000-1100"}, ["1.2.1.1", "1.2.1.2"]),
        ({"StudyInstanceUID": "1.2.1.2,1.2.1.3"}, ["1.2.1.2"]),
        ({"AccessionNumber": "ACC1"}, ["1.2.1.1"]),
        ({"AccessionNumber": "acc1"}, []),
        ({"AccessionNumber": "ACC?"}, ["1.2.1.1", "1.2.1.2"]),
        ({"ModalitiesInStudy": "MR"}, ["1.2.1.2"]),
        ({"ModalitiesInStudy": "SR,MR"}, ["1.2.1.1", "1.2.1.2"]),
        ({"limit": "1"}, ["1.2.1.1"]),
        ({"limit": "1", "offset": "1"}, ["1.2.1.2"]),
        ({"offset": "5"}, []),
    ],
)
def test_study_matching(cat: Catalog, params: dict[str, str], expected: list[str]) -> None:
    assert studies(cat, **params) == expected


def test_wildcard_metacharacters_are_literal(cat: Catalog) -> None:
    assert studies(cat, PatientName="Doe%") == []
    assert studies(cat, AccessionNumber="AC_1") == []


def test_includefield(cat: Catalog) -> None:
    query = parse_query([("includefield", "StudyDescription,00100021")], Level.STUDY)
    result = search(cat, query, "Hospital A", ROOT)[0]
    assert "00081030" in result and "00100021" in result
    everything = parse_query([("includefield", "all")], Level.STUDY)
    assert lookup("IssuerOfPatientID") is not None
    assert "00100021" in search(cat, everything, "Hospital A", ROOT)[0]


def test_series_and_instances(cat: Catalog) -> None:
    q = parse_query([], Level.SERIES, study_uid="1.2.1.1")
    found = search(cat, q, "Hospital A", ROOT)
    assert [s["0020000E"]["Value"][0] for s in found] == ["1.2.2.1", "1.2.2.2"]
    assert found[0]["00201209"] == {"vr": "IS", "Value": [2]}
    assert found[0]["00081190"]["Value"] == [f"{ROOT}/studies/1.2.1.1/series/1.2.2.1"]
    assert search(cat, q, "Hospital B", ROOT) == []
    q = parse_query([("Modality", "SR")], Level.SERIES)
    assert [s["0020000E"]["Value"][0] for s in search(cat, q, "Hospital A", ROOT)] == ["1.2.2.2"]
    q = parse_query([], Level.INSTANCE, study_uid="1.2.1.1", series_uid="1.2.2.1")
    found = search(cat, q, "Hospital A", ROOT)
    assert [i["00080018"]["Value"][0] for i in found] == ["1.2.3.1", "1.2.3.2"]
    assert found[0]["00200013"] == {"vr": "IS", "Value": [1]}
    q = parse_query([("PatientID", "P3")], Level.INSTANCE)
    assert search(cat, q, "Hospital A", ROOT) == []
    assert len(search(cat, q, "Hospital B", ROOT)) == 1


def test_retrieval_lookup_hides_unreachable(cat: Catalog) -> None:
    assert [i.sop_uid for i in instances_to_retrieve(cat, "Hospital A", "1.2.1.1")] == [
        "1.2.3.1",
        "1.2.3.2",
        "1.2.3.3",
    ]
    assert instances_to_retrieve(cat, "Hospital B", "1.2.1.1") == []
    assert instances_to_retrieve(cat, "Hospital A", "1.2.1.1", "1.2.2.2", "1.2.3.3")
    assert instances_to_retrieve(cat, "Hospital A", "9.9.9") == []


@pytest.mark.parametrize(
    "params",
    [
        {"StudyDate": "2025-01-01"},
        {"StudyDate": "yesterday"},
        {"StudyInstanceUID": "1.2.x"},
        {"limit": "-1"},
        {"offset": "a"},
        {"NoSuchAttribute": "x"},
        {"includefield": "Nonsense"},
        {"SOPInstanceUID": "1.2"},  # instance-level key in a study search
        {"SeriesNumber": "two"},
    ],
)
def test_invalid_queries(params: dict[str, str]) -> None:
    level = Level.SERIES if "SeriesNumber" in params else Level.STUDY
    with pytest.raises(InvalidInput):
        parse_query(params.items(), level)


def test_unindexed_includefields_are_read_from_headers_and_paths_are_reported() -> None:
    query = parse_query(
        [
            ("includefield", "InstitutionName,00101030"),
            ("includefield", "00091001"),  # private: by tag
            ("includefield", "institutionname"),  # a keyword in any case is the catalog's only
            ("includefield", "ReferencedImageSequence.ReferencedSOPInstanceUID"),
            ("includefield", "StudyDescription"),  # indexed: from the catalog
        ],
        Level.STUDY,
    )
    assert query.header_fields == ("00080080", "00101030", "00091001")
    assert query.ignored == ("ReferencedImageSequence.ReferencedSOPInstanceUID",)
    assert "00081030" in {a.tag for a in query.returned}
    assert not query.include_all
    assert parse_query([("includefield", "all")], Level.INSTANCE).include_all


def test_unsupported_but_valid_keys_are_reported(cat: Catalog) -> None:
    query = parse_query([("BodyPartExamined", "CHEST"), ("fuzzymatching", "true")], Level.STUDY)
    assert set(query.ignored) == {"BodyPartExamined", "fuzzymatching"}


def test_a_dimse_identifier_s_keys_make_the_query_its_parameters_would() -> None:
    """C-FIND's typed keys and QIDO-RS's parameters meet in the same Query: each key is
    returned, a non-empty value matched, a computed count ignored."""
    name, date, uid, count = (
        lookup(k)
        for k in ("PatientName", "StudyDate", "StudyInstanceUID", "NumberOfStudyRelatedSeries")
    )
    issuer = lookup("IssuerOfPatientID")
    assert name and date and uid and count and issuer
    keys = [(name, "Doe*"), (date, "20250101-"), (uid, ""), (count, "3")]
    by_keys = query_for_keys(Level.STUDY, keys, [issuer], limit=11)
    by_params = parse_query(
        [
            ("includefield", "PatientName"),
            ("PatientName", "Doe*"),
            ("includefield", "StudyDate"),
            ("StudyDate", "20250101-"),
            ("includefield", "StudyInstanceUID"),
            ("includefield", "NumberOfStudyRelatedSeries"),
            ("NumberOfStudyRelatedSeries", "3"),
            ("includefield", "IssuerOfPatientID"),
            ("limit", "11"),
        ],
        Level.STUDY,
        max_results=11,
    )
    assert by_keys == by_params
    assert [c.kind for c in by_keys.conditions] == ["wildcard", "range"]
    assert by_keys.ignored == ("NumberOfStudyRelatedSeries",)
    with pytest.raises(InvalidInput):
        query_for_keys(Level.STUDY, [(lookup("SOPInstanceUID") or uid, "1.2")], limit=1)


def test_limit_is_capped() -> None:
    assert parse_query([("limit", "99999")], Level.STUDY, max_results=100).limit == 100


def test_limit_zero_means_the_server_maximum(cat: Catalog) -> None:
    assert parse_query([("limit", "0")], Level.STUDY, max_results=100).limit == 100
    assert studies(cat, limit="0") == ["1.2.1.1", "1.2.1.2"]


@pytest.mark.parametrize(
    ("vr", "value", "expected"),
    [
        ("PN", "Doe^Jane", {"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane"}]}),
        # component groups (PS3.18 F.2.2), as WADO-RS metadata renders them
        (
            "PN",
            "Yamada^Tarou=山田^太郎=やまだ^たろう",
            {
                "vr": "PN",
                "Value": [
                    {
                        "Alphabetic": "Yamada^Tarou",
                        "Ideographic": "山田^太郎",
                        "Phonetic": "やまだ^たろう",
                    }
                ],
            },
        ),
        (
            "PN",
            ["Wang^XiaoDong=王^小東", "Doe^J"],
            {
                "vr": "PN",
                "Value": [
                    {"Alphabetic": "Wang^XiaoDong", "Ideographic": "王^小東"},
                    {"Alphabetic": "Doe^J"},
                ],
            },
        ),
        ("IS", "12", {"vr": "IS", "Value": [12]}),
        ("US", 64, {"vr": "US", "Value": [64]}),
        ("DS", "1.5", {"vr": "DS", "Value": [1.5]}),
        ("CS", ["CT", "MR"], {"vr": "CS", "Value": ["CT", "MR"]}),
        ("DA", None, {"vr": "DA"}),
        ("LO", "", {"vr": "LO"}),
        ("CS", [], {"vr": "CS"}),
    ],
)
def test_dicom_json_elements(vr: str, value: object, expected: dict[str, object]) -> None:
    assert element(vr, value) == expected


def test_study_list_reads_the_date_uid_index_without_sorting(cat: Catalog) -> None:
    """A limited study list must not sort the whole catalog (the 100k-study benchmark)."""
    query = parse_query([("limit", "25")], Level.STUDY)
    stmt = build_select(query, "Hospital A")
    sql = str(stmt.compile(cat.engine, compile_kwargs={"literal_binds": True}))
    with cat.engine.connect() as conn:
        plan = " | ".join(str(row[3]) for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql))
    assert "ix_studies_date_uid" in plan
    assert "TEMP B-TREE" not in plan


def test_an_existing_catalog_gets_the_new_index(tmp_path: Path) -> None:
    """A catalog made before the index existed gets it when the schema is upgraded."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    old = create_engine(url)
    metadata.create_all(old)  # as the Catalog of a version before the migrations did
    old.dispose()
    with sqlite3.connect(tmp_path / "old.db") as conn:
        conn.execute("DROP INDEX ix_studies_date_uid")
        # nor the claim tables of revision 0002_dimse_own (a pre-migration catalog)
        conn.execute("DROP TABLE study_claims")
        conn.execute("DROP TABLE instance_claims")
    migrations.upgrade(url)
    with sqlite3.connect(tmp_path / "old.db") as conn:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert "ix_studies_date_uid" in names
