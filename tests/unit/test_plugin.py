"""The Orthanc adapter driven through a small fake SDK (archive.plugin)."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.data import get_testdata_file

from archive.blobstore import CONTENT_DICOM
from archive.headers import orthanc_instance_id
from archive.indexer import Indexer
from archive.plugin import (
    STATUS_NOT_AUTHORIZED,
    ArchivePlugin,
    OrthancLogHandler,
    instance_record,
    register,
)
from archive.settings import StorageSettings
from compose.settings import load_settings
from security.errors import IntegrityError, NotFound
from tests.unit.support import TAGS, FakeInstance, FakeSdk, orthanc_c_store

pytestmark = pytest.mark.usefixtures("restore_root_logger")


@pytest.fixture
def sdk() -> FakeSdk:
    return FakeSdk()


@pytest.fixture
def plugin(sdk: FakeSdk, tmp_path: Path) -> Iterator[ArchivePlugin]:
    settings = load_settings(tmp_path, storage=StorageSettings(fsync=False))
    plug = register(sdk, settings)
    try:
        yield plug
    finally:
        plug.catalog.close()


def _ct_bytes() -> bytes:
    return Path(get_testdata_file("CT_small.dcm")).read_bytes()


# --------------------------------------------------------------------- registration


def test_register_wires_the_callbacks(sdk: FakeSdk, plugin: ArchivePlugin) -> None:
    assert sdk.storage == (plugin.create, plugin.read, plugin.remove)
    assert sdk.cstore_filter == plugin.filter_cstore
    # no stored-instance callback: Orthanc serialises C-STOREs around it
    assert sdk.on_stored is None
    assert sdk.on_change == plugin.on_change
    assert any("archive storage area active" in m for m in sdk.infos)


def test_register_opens_the_home(plugin: ArchivePlugin, tmp_path: Path) -> None:
    assert (tmp_path / "catalog.db").exists()
    assert (tmp_path / "keys" / "dedup.key").exists()
    assert (tmp_path / "blobs").is_dir()


def test_python_logging_reaches_orthanc_by_level(sdk: FakeSdk, plugin: ArchivePlugin) -> None:
    log = logging.getLogger("archive.test")
    log.info("an info line")
    log.warning("a warning line")
    log.error("an error line")
    assert any(m.endswith("an info line") for m in sdk.infos)
    assert any(m.endswith("a warning line") for m in sdk.warnings)
    assert any(m.endswith("an error line") for m in sdk.errors)
    bridges = [h for h in logging.getLogger().handlers if isinstance(h, OrthancLogHandler)]
    assert len(bridges) == 1


# --------------------------------------------------------------------- storage area


def test_create_read_remove_through_the_registered_functions(
    sdk: FakeSdk, plugin: ArchivePlugin
) -> None:
    assert sdk.storage is not None
    create, read, remove = sdk.storage
    data = _ct_bytes()
    create("att-1", CONTENT_DICOM, data)
    assert read("att-1", CONTENT_DICOM) == data
    remove("att-1", CONTENT_DICOM)
    with pytest.raises(NotFound):
        read("att-1", CONTENT_DICOM)
    assert any("reading an attachment failed" in m for m in sdk.errors)


def test_content_type_may_arrive_as_an_enum_like_value(sdk: FakeSdk, plugin: ArchivePlugin) -> None:
    class ContentType:
        def __int__(self) -> int:
            return CONTENT_DICOM

    assert sdk.storage is not None
    create, read, _remove = sdk.storage
    create("att-enum", ContentType(), _ct_bytes())
    assert read("att-enum", ContentType()) == _ct_bytes()
    assert len(plugin.catalog.attachment_parts("att-enum")[2]) == 3  # split as DICOM


def test_integrity_failure_in_read_raises_and_logs(sdk: FakeSdk, plugin: ArchivePlugin) -> None:
    assert sdk.storage is not None
    create, read, _remove = sdk.storage
    create("att-1", CONTENT_DICOM, _ct_bytes())
    for key in plugin.store.hot.iter_keys():
        path = plugin.store.hot.path(key)
        raw = bytearray(path.read_bytes())
        raw[-1] ^= 0xFF
        path.write_bytes(bytes(raw))
    with pytest.raises(IntegrityError):
        read("att-1", CONTENT_DICOM)
    assert any("DATA INTEGRITY" in m and "vna fsck" in m for m in sdk.errors)


def test_unexpected_errors_are_logged_with_the_callback_name(
    sdk: FakeSdk, plugin: ArchivePlugin
) -> None:
    assert sdk.storage is not None
    create, _read, _remove = sdk.storage
    with pytest.raises(TypeError):
        create("att-x", CONTENT_DICOM, None)
    assert any("storing an attachment failed unexpectedly" in m for m in sdk.errors)


# --------------------------------------------------------------------- C-STORE admission


def test_filter_refuses_an_unknown_ae(sdk: FakeSdk, plugin: ArchivePlugin) -> None:
    status = plugin.filter_cstore(FakeInstance(TAGS, "STRANGER"))
    assert status == STATUS_NOT_AUTHORIZED == 0x0124
    refusal = [m for m in sdk.warnings if "STRANGER" in m]
    assert refusal
    assert "vna institution add" in refusal[0]


def test_filter_admits_a_known_ae(sdk: FakeSdk, plugin: ArchivePlugin) -> None:
    plugin.catalog.add_institution("Hospital A", "HOSPA")
    assert sdk.cstore_filter is not None
    assert sdk.cstore_filter(FakeInstance(TAGS, "HOSPA")) == 0
    assert sdk.cstore_filter(FakeInstance(TAGS, "HOSPA ")) == 0  # DICOM pads AE titles
    assert sdk.cstore_filter(FakeInstance(TAGS, "HOSPB")) == STATUS_NOT_AUTHORIZED
    assert not [m for m in sdk.warnings if "HOSPA" in m]


def test_an_ae_registered_after_a_lookup_is_known_at_once(plugin: ArchivePlugin) -> None:
    plugin.catalog.add_institution("Hospital A", "HOSPA")
    assert plugin.institution_for_ae("HOSPA") is not None  # fills the AE copy
    plugin.catalog.add_institution("Hospital A", "NEWPACS")  # `vna institution add`, now
    found = plugin.institution_for_ae("NEWPACS")
    assert found is not None and found.name == "Hospital A"
    assert plugin.institution_for_ae("STRANGER") is None


def test_a_c_store_is_indexed_with_its_sender(sdk: FakeSdk, plugin: ArchivePlugin) -> None:
    plugin.catalog.add_institution("Hospital A", "HOSPA")
    data = _ct_bytes()
    ds = pydicom.dcmread(io.BytesIO(data))
    orthanc_c_store(sdk, "att-1", data, "HOSPA")
    Indexer(plugin.catalog).drain()
    rec = plugin.catalog.instance(str(ds.SOPInstanceUID))
    assert rec is not None
    assert rec.attachment_uuid == "att-1"
    assert rec.size == len(data)
    assert rec.transfer_syntax == str(ds.file_meta.TransferSyntaxUID)
    assert rec.issuer == "Hospital A"  # no IssuerOfPatientID: the sending institution
    assert rec.orthanc_id == orthanc_instance_id(
        str(ds.PatientID),
        str(ds.StudyInstanceUID),
        str(ds.SeriesInstanceUID),
        str(ds.SOPInstanceUID),
    )
    assert plugin.catalog.sources_of(str(ds.SOPInstanceUID)) == [("Hospital A", "dimse", "HOSPA")]
    assert str(ds.PatientName) not in sdk.log, "patient names must never reach the log"


def test_a_re_send_keeps_the_instance_and_records_both_senders(
    sdk: FakeSdk, plugin: ArchivePlugin
) -> None:
    plugin.catalog.add_institution("Hospital A", "HOSPA")
    plugin.catalog.add_institution("Hospital B", "HOSPB")
    data = _ct_bytes()
    sop = str(pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID)
    orthanc_c_store(sdk, "att-1", data, "HOSPA")
    # Orthanc stores the duplicate, then removes it once its index finds the instance
    orthanc_c_store(sdk, "att-2", data, "HOSPB")
    assert sdk.storage is not None
    sdk.storage[2]("att-2", CONTENT_DICOM)
    Indexer(plugin.catalog).drain()
    rec = plugin.catalog.instance(sop)
    assert rec is not None and rec.attachment_uuid == "att-1"
    assert plugin.catalog.sources_of(sop) == [
        ("Hospital A", "dimse", "HOSPA"),
        ("Hospital B", "dimse", "HOSPB"),
    ]
    assert plugin.catalog.patients_with_id(str(pydicom.dcmread(io.BytesIO(data)).PatientID)) == [
        ("Hospital A", str(pydicom.dcmread(io.BytesIO(data)).PatientID))
    ]


def test_a_re_send_in_another_syntax_and_header_leaves_the_index_on_the_stored_copy(
    sdk: FakeSdk, plugin: ArchivePlugin
) -> None:
    """The same SOP instance sent again as RLE with a changed SeriesDescription: Orthanc
    keeps the first copy (OverwriteInstances false), so the index keeps describing it."""
    plugin.catalog.add_institution("Hospital A", "HOSPA")
    first = Path(get_testdata_file("MR_small.dcm", download=False)).read_bytes()
    rle = pydicom.dcmread(get_testdata_file("MR_small_RLE.dcm", download=False))
    rle.SeriesDescription = "corrected later"
    buffer = io.BytesIO()
    rle.save_as(buffer, enforce_file_format=True)
    sop = str(rle.SOPInstanceUID)
    orthanc_c_store(sdk, "att-1", first, "HOSPA")
    orthanc_c_store(sdk, "att-2", buffer.getvalue(), "HOSPA")
    assert sdk.storage is not None
    sdk.storage[2]("att-2", CONTENT_DICOM)  # Orthanc drops the duplicate's file
    Indexer(plugin.catalog).drain()
    rec = plugin.catalog.instance(sop)
    assert rec is not None and rec.attachment_uuid == "att-1"
    assert rec.transfer_syntax == "1.2.840.10008.1.2.1"  # the stored file's, not RLE
    with plugin.catalog.engine.connect() as conn:
        described = conn.exec_driver_sql(
            "select description from series where series_uid = ?", (str(rle.SeriesInstanceUID),)
        ).scalar_one()
    assert described is None  # MR_small.dcm has no SeriesDescription
    assert plugin.catalog.sources_of(sop) == [("Hospital A", "dimse", "HOSPA")]


def test_a_re_send_after_the_first_copy_was_deleted_is_indexed_anew(
    sdk: FakeSdk, plugin: ArchivePlugin
) -> None:
    first = Path(get_testdata_file("MR_small.dcm", download=False)).read_bytes()
    again = Path(get_testdata_file("MR_small_RLE.dcm", download=False)).read_bytes()
    sop = str(pydicom.dcmread(io.BytesIO(again)).SOPInstanceUID)
    orthanc_c_store(sdk, "att-1", first, None)
    Indexer(plugin.catalog).drain()
    assert sdk.storage is not None
    sdk.storage[2]("att-1", CONTENT_DICOM)  # deleted
    orthanc_c_store(sdk, "att-2", again, None)
    Indexer(plugin.catalog).drain()
    rec = plugin.catalog.instance(sop)
    assert rec is not None and rec.attachment_uuid == "att-2"
    assert rec.transfer_syntax == "1.2.840.10008.1.2.5"


def test_a_rest_upload_is_local_and_has_no_sender(sdk: FakeSdk, plugin: ArchivePlugin) -> None:
    data = _ct_bytes()
    sop = str(pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID)
    orthanc_c_store(sdk, "att-2", data, None)
    Indexer(plugin.catalog).drain()
    rec = plugin.catalog.instance(sop)
    assert rec is not None and rec.issuer == "local"
    assert plugin.catalog.sources_of(sop) == []


def test_removing_the_file_removes_the_index_row(sdk: FakeSdk, plugin: ArchivePlugin) -> None:
    data = _ct_bytes()
    sop = str(pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID)
    orthanc_c_store(sdk, "att-1", data, None)
    assert sdk.storage is not None
    sdk.storage[0]("att-3", 3, data[:100])  # another content type: not an instance
    sdk.storage[2]("att-3", 3)
    Indexer(plugin.catalog).drain()
    assert plugin.catalog.instance(sop) is not None
    sdk.storage[2]("att-1", CONTENT_DICOM)
    Indexer(plugin.catalog).drain()
    assert plugin.catalog.instance(sop) is None
    assert plugin.catalog.stats().studies == 0


def test_reindex_missing_fills_the_catalog(sdk: FakeSdk, plugin: ArchivePlugin) -> None:
    data = _ct_bytes()
    orthanc_c_store(sdk, "att-1", data, None)
    Indexer(plugin.catalog).drain()
    known = plugin.catalog.instance(str(pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID))
    assert known is not None and known.orthanc_id is not None
    other = dict(TAGS, SOPInstanceUID="1.2.826.0.1.3680043.8.498.9")
    sdk.rest["/instances"] = [known.orthanc_id, "orth-9"]
    sdk.rest["/instances/orth-9/simplified-tags"] = other
    sdk.rest["/instances/orth-9/metadata?expand"] = {"TransferSyntax": "1.2.840.10008.1.2"}
    sdk.rest["/instances/orth-9/attachments/dicom/info"] = {"Uuid": "att-9"}
    assert plugin.reindex_missing() == 1
    rec = plugin.catalog.instance(other["SOPInstanceUID"])
    assert rec is not None
    assert (rec.orthanc_id, rec.attachment_uuid) == ("orth-9", "att-9")
    assert rec.transfer_syntax == "1.2.840.10008.1.2"
    assert f"/instances/{known.orthanc_id}/simplified-tags" not in sdk.rest_calls
    assert plugin.reindex_missing() == 0


def test_reindex_missing_survives_a_failing_orthanc(sdk: FakeSdk, plugin: ArchivePlugin) -> None:
    # no canned answer for /instances: RestApiGet raises, the thread must not die loudly
    assert plugin.reindex_missing() == 0
    assert any("re-indexing after start failed" in m for m in sdk.errors)


# --------------------------------------------------------------------- instance_record


def _record(tags: dict[str, Any], fallback: str = "Hospital A") -> Any:
    return instance_record(
        tags, fallback, orthanc_id="o", attachment_uuid="a", size=1, transfer_syntax="ts"
    )


def test_instance_record_prefers_issuer_of_patient_id() -> None:
    assert _record(dict(TAGS, IssuerOfPatientID="NHS")).issuer == "NHS"
    assert _record(TAGS).issuer == "Hospital A"
    assert _record(dict(TAGS, IssuerOfPatientID="  ")).issuer == "Hospital A"
    assert _record(dict(TAGS, IssuerOfPatientID="")).issuer == "Hospital A"


def test_instance_record_fields() -> None:
    rec = _record(
        dict(
            TAGS,
            InstanceNumber="12\\13",
            NumberOfFrames="x",
            StudyDescription="  Chest  ",
            AccessionNumber="",
            PatientBirthDate=[],
        )
    )
    assert rec.sop_uid == TAGS["SOPInstanceUID"]
    assert rec.study_uid == TAGS["StudyInstanceUID"]
    assert rec.patient_id == "PID-7"
    assert rec.instance_number == 12
    assert rec.series_number == 2
    assert (rec.rows, rec.columns) == (64, 64)
    assert rec.number_of_frames is None
    assert rec.study_description == "Chest"
    assert rec.accession_number is None
    assert rec.birth_date is None
    assert (rec.orthanc_id, rec.attachment_uuid, rec.size, rec.transfer_syntax) == (
        "o",
        "a",
        1,
        "ts",
    )


def test_instance_record_without_patient_id() -> None:
    tags = {k: v for k, v in TAGS.items() if k != "PatientID"}
    assert _record(tags).patient_id == ""


def test_instance_record_from_a_real_file() -> None:
    ds = pydicom.dcmread(io.BytesIO(_ct_bytes()))
    tags = {
        "SOPInstanceUID": ds.SOPInstanceUID,
        "SeriesInstanceUID": ds.SeriesInstanceUID,
        "StudyInstanceUID": ds.StudyInstanceUID,
        "PatientID": ds.PatientID,
        "Modality": ds.Modality,
    }
    rec = _record(tags, "local")
    assert (rec.sop_uid, rec.modality, rec.issuer) == (ds.SOPInstanceUID, "CT", "local")


def test_the_index_queue_is_consumed_in_order(sdk: FakeSdk, plugin: ArchivePlugin) -> None:
    data = _ct_bytes()
    orthanc_c_store(sdk, "att-1", data, None)
    assert sdk.storage is not None
    sdk.storage[2]("att-1", CONTENT_DICOM)
    orthanc_c_store(sdk, "att-2", data, None)
    assert plugin.catalog.index_backlog() == 3
    assert Indexer(plugin.catalog, batch=2).drain() == 3
    assert plugin.catalog.index_backlog() == 0
    rec = plugin.catalog.instance(str(pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID))
    assert rec is not None and rec.attachment_uuid == "att-2"
