"""The catalog: institutions, the study index, provenance and statistics (archive.catalog)."""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

import pytest
from sqlalchemy import text

from archive.blobstore import BlobStore
from archive.catalog import Catalog, InstanceRecord, SourceRecord, Stats
from security.errors import Conflict, InvalidInput, NotFound
from tests.catalogdb import migrated


def _rows(catalog: Catalog, query: str, **params: Any) -> list[Any]:
    with catalog.engine.connect() as conn:
        return list(conn.execute(text(query), params).all())


def _count(catalog: Catalog, table: str) -> int:
    return int(_rows(catalog, f"SELECT count(*) FROM {table}")[0][0])  # noqa: S608


def _record(sop: str, series: str = "1.2.3.1", study: str = "1.2.3", **kw: Any) -> InstanceRecord:
    values: dict[str, Any] = {
        "sop_uid": sop,
        "series_uid": series,
        "study_uid": study,
        "patient_id": "PID-1",
        "issuer": "Hospital A",
        "modality": "CT",
        "orthanc_id": f"orthanc-{sop}",
        "attachment_uuid": f"att-{sop}",
        "size": 1000,
    }
    values.update(kw)
    return InstanceRecord(**values)


# --------------------------------------------------------------------- the database


def test_sqlite_runs_in_wal_mode_with_foreign_keys(catalog: Catalog) -> None:
    with catalog.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_a_second_catalog_on_the_same_file_sees_the_data(catalog: Catalog) -> None:
    catalog.add_institution("Hospital A", "HOSPA")
    other = Catalog(catalog.url, durable=False)
    try:
        assert [i.name for i in other.list_institutions()] == ["Hospital A"]
    finally:
        other.close()


def test_existing_blobs_of_nothing(catalog: Catalog) -> None:
    assert catalog.existing_blobs([]) == set()
    assert catalog.existing_blobs([b"\x00" * 32]) == set()


# --------------------------------------------------------------------- institutions


def test_add_and_list_institutions(catalog: Catalog) -> None:
    b = catalog.add_institution("Hospital B", "HOSPB", "10.0.0.2", 104)
    a = catalog.add_institution("Hospital A", "HOSPA")
    assert a.id != b.id
    listed = catalog.list_institutions()
    assert [i.name for i in listed] == ["Hospital A", "Hospital B"]
    assert listed[1].ae_titles == (("HOSPB", "10.0.0.2", 104),)
    assert listed[0].ae_titles == (("HOSPA", None, None),)
    assert catalog.institution("Hospital B") == b


def test_institution_without_ae(catalog: Catalog) -> None:
    inst = catalog.add_institution("Reading Centre")
    assert inst.ae_titles == ()
    assert catalog.ae_map() == {}


def test_add_institution_is_idempotent(catalog: Catalog) -> None:
    first = catalog.add_institution("Hospital A", "HOSPA")
    again = catalog.add_institution("Hospital A", "HOSPA")
    assert again == first
    assert _count(catalog, "institutions") == 1
    assert _count(catalog, "institution_aes") == 1


def test_more_aes_and_a_new_address(catalog: Catalog) -> None:
    catalog.add_institution("Hospital A", "HOSPA_CT")
    catalog.add_institution("Hospital A", "HOSPA_MR", "mr.example", 11112)
    inst = catalog.add_institution("Hospital A", "HOSPA_CT", "ct.example", 104)
    assert inst.ae_titles == (
        ("HOSPA_CT", "ct.example", 104),
        ("HOSPA_MR", "mr.example", 11112),
    )
    assert set(catalog.ae_map()) == {"HOSPA_CT", "HOSPA_MR"}
    assert {i.name for i in catalog.ae_map().values()} == {"Hospital A"}


def test_an_ae_title_belongs_to_one_institution(catalog: Catalog) -> None:
    catalog.add_institution("Hospital A", "SHARED")
    with pytest.raises(Conflict, match="SHARED"):
        catalog.add_institution("Hospital B", "SHARED")
    assert catalog.institution_for_ae("SHARED").name == "Hospital A"  # type: ignore[union-attr]
    # the refused call must not leave half an institution behind
    assert [i.name for i in catalog.list_institutions()] == ["Hospital A"]


@pytest.mark.parametrize("ae", ["", "A" * 17])
def test_ae_title_length_is_validated(catalog: Catalog, ae: str) -> None:
    with pytest.raises(InvalidInput, match="1 to 16"):
        catalog.add_institution("Hospital A", ae)
    assert catalog.list_institutions() == []


def test_sixteen_characters_are_allowed(catalog: Catalog) -> None:
    inst = catalog.add_institution("Hospital A", "A" * 16)
    assert inst.ae_titles[0][0] == "A" * 16


@pytest.mark.parametrize("name", ["", "   "])
def test_an_institution_needs_a_name(catalog: Catalog, name: str) -> None:
    with pytest.raises(InvalidInput):
        catalog.add_institution(name, "X")


def test_unknown_institution_names_the_command(catalog: Catalog) -> None:
    with pytest.raises(NotFound, match="vna institution add"):
        catalog.institution("Nowhere")


def test_ae_lookup_ignores_padding_of_the_calling_ae(catalog: Catalog) -> None:
    catalog.add_institution("Hospital A", "HOSPA")
    assert catalog.institution_for_ae("HOSPA ").name == "Hospital A"  # type: ignore[union-attr]
    assert catalog.institution_for_ae("HOSPB") is None


def test_an_ae_registered_with_padding_is_found(catalog: Catalog) -> None:
    catalog.add_institution("Hospital A", "CT1 ")
    found = catalog.institution_for_ae("CT1 ")
    assert found is not None
    assert found.name == "Hospital A"


# --------------------------------------------------------------------- study index


def test_equal_patient_ids_from_two_issuers_stay_two_patients(catalog: Catalog) -> None:
    catalog.index_instance(_record("1.1", study="9.1", series="9.1.1", issuer="Hospital A"))
    catalog.index_instance(_record("2.1", study="9.2", series="9.2.1", issuer="Hospital B"))
    assert sorted(catalog.patients_with_id("PID-1")) == [
        ("Hospital A", "PID-1"),
        ("Hospital B", "PID-1"),
    ]
    assert catalog.instance("1.1").issuer == "Hospital A"  # type: ignore[union-attr]
    assert catalog.instance("2.1").issuer == "Hospital B"  # type: ignore[union-attr]
    assert catalog.patients_with_id("OTHER") == []


def test_same_issuer_and_id_is_one_patient(catalog: Catalog) -> None:
    catalog.index_instance(_record("1.1", study="9.1", series="9.1.1"))
    catalog.index_instance(_record("1.2", study="9.2", series="9.2.1"))
    assert catalog.patients_with_id("PID-1") == [("Hospital A", "PID-1")]
    assert _count(catalog, "studies") == 2


def test_instance_round_trip(catalog: Catalog) -> None:
    rec = _record(
        "1.2.840.1",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        instance_number=7,
        transfer_syntax="1.2.840.10008.1.2.1",
    )
    catalog.index_instance(rec)
    got = catalog.instance("1.2.840.1")
    assert got is not None
    for field in (
        "sop_uid",
        "series_uid",
        "study_uid",
        "patient_id",
        "issuer",
        "modality",
        "sop_class_uid",
        "instance_number",
        "transfer_syntax",
        "orthanc_id",
        "attachment_uuid",
        "size",
    ):
        assert getattr(got, field) == getattr(rec, field), field
    assert catalog.instance("1.2.840.2") is None


def test_re_indexing_refreshes_the_instance_row(catalog: Catalog) -> None:
    catalog.index_instance(_record("1.1"))
    catalog.index_instance(_record("1.1", orthanc_id="orthanc-new", attachment_uuid="att-new"))
    got = catalog.instance("1.1")
    assert got is not None
    assert (got.orthanc_id, got.attachment_uuid) == ("orthanc-new", "att-new")
    assert _count(catalog, "instances") == 1
    assert catalog.indexed_orthanc_ids() == {"orthanc-new"}


def test_indexed_orthanc_ids_skip_unknown_ones(catalog: Catalog) -> None:
    catalog.index_instance(_record("1.1"))
    catalog.index_instance(_record("1.2", orthanc_id=None))
    assert catalog.indexed_orthanc_ids() == {"orthanc-1.1"}


def test_remove_instance_cascades_empty_series_and_study(catalog: Catalog) -> None:
    catalog.add_institution("Hospital A", "HOSPA")
    inst = catalog.institution("Hospital A")
    catalog.index_instance(_record("1.1", series="S1"))
    catalog.index_instance(_record("1.2", series="S1"))
    catalog.index_instance(_record("2.1", series="S2"))
    catalog.record_source(SourceRecord("1.1", inst.id, "dimse", "HOSPA"))
    catalog.remove_instance("orthanc-1.1")
    assert catalog.instance("1.1") is None
    assert catalog.sources_of("1.1") == []
    assert (_count(catalog, "series"), _count(catalog, "studies")) == (2, 1)
    catalog.remove_instance("orthanc-1.2")
    assert _count(catalog, "series") == 1
    assert _count(catalog, "studies") == 1
    catalog.remove_instance("orthanc-2.1")
    assert (_count(catalog, "instances"), _count(catalog, "series")) == (0, 0)
    assert _count(catalog, "studies") == 0


def test_removing_an_unknown_instance_is_harmless(catalog: Catalog) -> None:
    catalog.index_instance(_record("1.1"))
    catalog.remove_instance("orthanc-nope")
    assert catalog.instance("1.1") is not None


# --------------------------------------------------------------------- provenance


def test_record_source_keeps_one_row_per_source(catalog: Catalog) -> None:
    a = catalog.add_institution("Hospital A", "HOSPA")
    b = catalog.add_institution("Hospital B", "HOSPB")
    catalog.index_instance(_record("1.1"))
    catalog.record_source(SourceRecord("1.1", a.id, "dimse", "HOSPA", "10.0.0.1"))
    catalog.record_source(SourceRecord("1.1", a.id, "dimse", "HOSPA", "10.0.0.9"))
    catalog.record_source(SourceRecord("1.1", b.id, "dimse", "HOSPB"))
    rows = _rows(
        catalog,
        "SELECT institution_id, via, sender, times, remote_address, first_received, "
        "last_received FROM instance_sources ORDER BY institution_id",
    )
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [
        (a.id, "dimse", "HOSPA", 2),
        (b.id, "dimse", "HOSPB", 1),
    ]
    assert rows[0][4] == "10.0.0.9"
    assert rows[0][6] >= rows[0][5]
    assert catalog.sources_of("1.1") == [
        ("Hospital A", "dimse", "HOSPA"),
        ("Hospital B", "dimse", "HOSPB"),
    ]


def test_another_route_from_the_same_institution_is_another_source(catalog: Catalog) -> None:
    a = catalog.add_institution("Hospital A", "HOSPA")
    catalog.index_instance(_record("1.1"))
    catalog.record_source(SourceRecord("1.1", a.id, "dimse", "HOSPA"))
    catalog.record_source(SourceRecord("1.1", a.id, "stow", "client-42"))
    assert sorted(catalog.sources_of("1.1")) == [
        ("Hospital A", "dimse", "HOSPA"),
        ("Hospital A", "stow", "client-42"),
    ]


# --------------------------------------------------------------------- statistics


def test_stats_of_an_empty_catalog(catalog: Catalog) -> None:
    stats = catalog.stats()
    assert stats == Stats(0, 0, 0, 0, 0, 0, 0, 0)
    assert (stats.dedup_ratio, stats.compression_ratio, stats.total_ratio) == (1.0, 1.0, 1.0)


def test_stats_ratios() -> None:
    stats = Stats(
        instances=1,
        studies=1,
        attachments=2,
        logical_bytes=1000,
        unique_bytes=500,
        stored_bytes=250,
        blobs=3,
        unreferenced_blobs=0,
    )
    assert stats.dedup_ratio == 2.0
    assert stats.compression_ratio == 2.0
    assert stats.total_ratio == 4.0


def test_stats_count_the_index(catalog: Catalog) -> None:
    catalog.index_instance(_record("1.1", series="S1", study="ST1"))
    catalog.index_instance(_record("1.2", series="S1", study="ST1"))
    catalog.index_instance(_record("2.1", series="S2", study="ST2"))
    stats = catalog.stats()
    assert (stats.instances, stats.studies) == (3, 2)
    assert (stats.attachments, stats.blobs, stats.logical_bytes) == (0, 0, 0)


def test_stats_count_attachments_and_blobs(store: BlobStore) -> None:
    catalog = store.catalog
    store.put("a", 2, bytes(10_000))
    store.put("b", 2, bytes(10_000))
    store.put("c", 2, b"\x01" * 3_000)
    store.remove("c")
    stats = catalog.stats()
    assert stats.attachments == 2
    assert stats.logical_bytes == 20_000
    assert stats.blobs == 2
    assert stats.unique_bytes == 13_000
    assert 0 < stats.stored_bytes < stats.unique_bytes
    assert stats.unreferenced_blobs == 1
    assert stats.dedup_ratio == pytest.approx(20_000 / 13_000)
    created = dict(catalog.attachments_created_before(float("inf")))
    assert created == {"a": 2, "b": 2}
    assert catalog.attachments_created_before(0.0) == []
    assert catalog.attachment_uuids() == {"a", "b"}


def test_records_are_frozen() -> None:
    rec = _record("1.1")
    with pytest.raises(dataclasses.FrozenInstanceError):
        rec.sop_uid = "2"  # type: ignore[misc]


def test_a_source_waits_for_its_instance(catalog: Catalog) -> None:
    a = catalog.add_institution("Hospital A", "HOSPA")
    src = SourceRecord("9.9", a.id, "dimse", "HOSPA")
    assert catalog.record_source(src) is False
    assert catalog.sources_of("9.9") == []
    assert catalog.index_batch([_record("9.9")], [src]) == []
    assert catalog.sources_of("9.9") == [("Hospital A", "dimse", "HOSPA")]


def test_reindexing_refreshes_descriptive_attributes(catalog: Catalog) -> None:
    catalog.index_instance(_record("7.1", patient_name="Wrong^Name"))
    catalog.index_instance(_record("7.1", patient_name="Right^Name"))
    with catalog.engine.connect() as conn:
        names = [r[0] for r in conn.exec_driver_sql("select patient_name from patients")]
    assert names == ["Right^Name"]


def test_a_re_send_from_another_institution_keeps_one_patient(catalog: Catalog) -> None:
    catalog.index_instance(_record("5.1", issuer="Hospital A"))
    # Orthanc calls the stored-instance callback for a re-send too; the fallback issuer is
    # then the second sender
    catalog.index_instance(_record("5.1", issuer="Hospital B"))
    assert _count(catalog, "patients") == 1
    assert catalog.patients_with_id("PID-1") == [("Hospital A", "PID-1")]


def _claim_together(
    catalog: Catalog,
    institution_id: int,
    study: str,
    i: int,
    start: threading.Barrier,
    outcome: dict[int, str | None],
) -> None:
    start.wait()
    outcome[i] = catalog.claim(study, f"{study}.{i}", institution_id, lambda c, u: False)


def test_two_processes_claiming_one_new_study_at_once_get_one_owner(tmp_path: Any) -> None:
    """Two catalogs on one database (as the plugin and the gateway hold) race on the first
    instance of each of 20 new studies: exactly one institution wins each study."""
    url = migrated(f"sqlite:///{tmp_path / 'claims.db'}")
    catalogs = [Catalog(url, durable=False), Catalog(url, durable=False)]
    try:
        ids = [catalogs[0].add_institution(name).id for name in ("A", "B")]
        for n in range(20):
            study = f"1.2.840.99.{n}"
            start = threading.Barrier(2)
            outcome: dict[int, str | None] = {}

            threads = [
                threading.Thread(
                    target=_claim_together, args=(catalogs[i], ids[i], study, i, start, outcome)
                )
                for i in (0, 1)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
            assert sorted(outcome.values(), key=str) == [None, "study"]
            winner = ids[0] if outcome[0] is None else ids[1]
            owners = _rows(
                catalogs[0], "select institution_id from study_claims where study_uid = :s", s=study
            )
            assert [r[0] for r in owners] == [winner]
            # the loser's SOP instance was not claimed (a refusal claims nothing)
            assert (
                _rows(
                    catalogs[0],
                    "select count(*) from instance_claims where study_uid = :s",
                    s=study,
                )[0][0]
                == 1
            )
    finally:
        for catalog in catalogs:
            catalog.close()


def test_a_claim_follows_the_index_and_the_index_follows_the_claim(catalog: Catalog) -> None:
    a, b = catalog.add_institution("A"), catalog.add_institution("B")
    # indexed without a claim (stored over Orthanc's REST API): claimed for its owner
    catalog.index_batch([_record("1.1", study="7.7")], [SourceRecord("1.1", a.id, "dimse", "AE")])
    assert catalog.claim("7.7", "1.2", b.id, lambda c, u: False) == "study"
    assert catalog.claim("9.9", "1.1", b.id, lambda c, u: False) == "instance"
    assert catalog.claim("7.7", "1.2", a.id, lambda c, u: False) is None
    # a claimed study is owned by its claimant even when another's copy is indexed first
    assert catalog.claim("8.8", "2.1", b.id, lambda c, u: False) is None
    catalog.index_batch([_record("2.2", study="8.8")], [SourceRecord("2.2", a.id, "stow", "x")])
    assert _rows(catalog, "select owner_institution_id from studies where study_uid = '8.8'") == [
        (b.id,)
    ]
