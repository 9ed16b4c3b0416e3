"""QIDO-RS return attributes read from the stored headers (dicomweb/qido/includefield.py), on
pydicom's CT_small stored in a real blob store and catalog."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydicom
from pydicom.data import get_testdata_file

from archive.blobstore import BlobStore
from archive.catalog import InstanceRecord, SourceRecord
from dicomweb.qido.includefield import add_header_fields, needs_headers
from dicomweb.wado.instance_reader import ContentCache
from query.api import Level, element, parse_query

ROOT = "http://gw/dicom-web"


def _stored(store: BlobStore, ds: pydicom.Dataset, n: int, data: bytes) -> None:
    uuid = f"att-{n}"
    store.put(uuid, 1, data)
    institution = store.catalog.add_institution(f"Hospital {n}", f"HOSP{n}").id
    record = InstanceRecord(
        sop_uid=f"{ds.SOPInstanceUID}.{n}",
        series_uid=str(ds.SeriesInstanceUID),
        study_uid=str(ds.StudyInstanceUID),
        patient_id=str(ds.PatientID),
        issuer="Hospital A",
        attachment_uuid=uuid,
    )
    store.catalog.index_batch([record], [SourceRecord(record.sop_uid, institution, "dimse", "X")])


def _result(level: Level, ds: pydicom.Dataset, sop: str) -> dict[str, Any]:
    result = {"0020000D": element("UI", str(ds.StudyInstanceUID))}
    if level >= Level.SERIES:
        result["0020000E"] = element("UI", str(ds.SeriesInstanceUID))
    if level == Level.INSTANCE:
        result["00080018"] = element("UI", sop)
    return result


def test_unindexed_attributes_come_from_one_header_per_result(store: BlobStore) -> None:
    path = Path(str(get_testdata_file("CT_small.dcm", download=False)))
    data = path.read_bytes()
    ds = pydicom.dcmread(path)
    for n in (1, 2):
        _stored(store, ds, n, data)
    cache = ContentCache(1 << 20)
    params = [("includefield", "InstitutionName,SliceThickness,PatientSize,00091001,00771001")]
    for level in Level:
        query = parse_query(params, level)
        assert needs_headers(query)
        sop = f"{ds.SOPInstanceUID}.2"
        (answer,) = add_header_fields(store, cache, query, [_result(level, ds, sop)], ROOT)
        assert answer["00080080"] == {"vr": "LO", "Value": ["JFK IMAGING CENTER"]}
        assert answer["00180050"] == {"vr": "DS", "Value": [5.0]}
        assert answer["00101020"] == {"vr": "DS"}  # absent from the header: known, empty
        assert answer["00091001"] == {"vr": "LO", "Value": ["GE_GENESIS_FF"]}  # private
        assert "00771001" not in answer  # absent and private: no VR to give it
        assert list(answer) == sorted(answer)


def test_all_on_instances_is_the_header_without_bulk_data(store: BlobStore) -> None:
    path = Path(str(get_testdata_file("CT_small.dcm", download=False)))
    ds = pydicom.dcmread(path)
    _stored(store, ds, 1, path.read_bytes())
    query = parse_query([("includefield", "all")], Level.INSTANCE)
    assert needs_headers(query)
    assert not needs_headers(parse_query([("includefield", "all")], Level.STUDY))
    catalog_value = element("UI", f"{ds.SOPInstanceUID}.1")
    (answer,) = add_header_fields(
        store,
        ContentCache(1 << 20),
        query,
        [_result(Level.INSTANCE, ds, f"{ds.SOPInstanceUID}.1")],
        ROOT,
    )
    assert answer["00080018"] == catalog_value  # the catalog's value wins
    assert answer["00280030"]["vr"] == "DS"  # PixelSpacing, from the header
    assert "7FE00010" not in answer
    assert not any("BulkDataURI" in e or "InlineBinary" in e for e in answer.values())


def test_a_result_without_a_stored_instance_gets_empty_attributes(store: BlobStore) -> None:
    path = Path(str(get_testdata_file("CT_small.dcm", download=False)))
    ds = pydicom.dcmread(path)
    query = parse_query([("includefield", "InstitutionName")], Level.STUDY)
    (answer,) = add_header_fields(
        store, ContentCache(1 << 20), query, [_result(Level.STUDY, ds, "")], ROOT
    )
    assert answer["00080080"] == {"vr": "LO"}
