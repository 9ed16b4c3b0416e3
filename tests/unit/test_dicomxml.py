"""The Native DICOM Model writer (PS3.19 A.1) and the JSON/XML choice by Accept, on
pydicom's own files converted by pydicom's DICOM JSON writer."""

from __future__ import annotations

import xml.etree.ElementTree as ET  # noqa: S405 - parsing the writer's own output
from email import message_from_bytes
from email.policy import HTTP
from typing import Any

import pydicom
import pytest
from pydicom.data import get_charset_files, get_testdata_file

from dicomweb.http.dicomxml import (
    DICOM_JSON,
    DICOM_XML,
    multipart_xml,
    native_dicom_model,
    negotiate_dataset_media,
)
from security.errors import NotAcceptable

NS = "{http://dicom.nema.org/PS3.19/models/NativeDICOM}"


def _json(path: str) -> dict[str, Any]:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    document: dict[str, Any] = ds.to_json_dict(bulk_data_threshold=1024)
    return document


def _root(dataset: dict[str, Any]) -> ET.Element:
    root = ET.fromstring(native_dicom_model(dataset))  # noqa: S314 - our own output
    assert root.tag == f"{NS}NativeDicomModel"
    return root


def test_values_keywords_and_numbers() -> None:
    path = get_testdata_file("CT_small.dcm", download=False)
    assert path is not None
    dataset = _json(path)
    root = _root(dataset)
    rows = root.find(f"{NS}DicomAttribute[@tag='00280010']")
    assert rows is not None
    assert rows.attrib == {"tag": "00280010", "vr": "US", "keyword": "Rows"}
    assert [(v.attrib["number"], v.text) for v in rows] == [("1", "128")]
    image_type = root.find(f"{NS}DicomAttribute[@keyword='ImageType']")
    assert image_type is not None
    assert [v.text for v in image_type] == dataset["00080008"]["Value"]
    assert [v.attrib["number"] for v in image_type] == ["1", "2", "3"]
    # every attribute once, in tag order
    tags = [a.attrib["tag"] for a in root]
    assert tags == sorted(dataset)


def test_person_names_by_group_and_component() -> None:
    (path,) = [p for p in get_charset_files() if p.endswith("chrH31.dcm")]
    root = _root(_json(path))
    name = root.find(f"{NS}DicomAttribute[@keyword='PatientName']/{NS}PersonName")
    assert name is not None and name.attrib["number"] == "1"
    assert [g.tag.removeprefix(NS) for g in name] == ["Alphabetic", "Ideographic", "Phonetic"]
    assert name.findtext(f"{NS}Alphabetic/{NS}FamilyName") == "Yamada"
    assert name.findtext(f"{NS}Alphabetic/{NS}GivenName") == "Tarou"
    assert name.findtext(f"{NS}Ideographic/{NS}FamilyName") == "山田"
    assert name.findtext(f"{NS}Phonetic/{NS}GivenName") == "たろう"
    # empty components are kept in place: "^^^^" reads back as five empty components
    empty = _root({"00080090": {"vr": "PN", "Value": [{"Alphabetic": "^^^^"}]}})
    group = empty.find(f"{NS}DicomAttribute/{NS}PersonName/{NS}Alphabetic")
    assert group is not None and [c.text for c in group] == [None] * 5


def test_sequences_binary_and_bulk_data() -> None:
    dataset = {
        "00081115": {
            "vr": "SQ",
            "Value": [
                {"0020000E": {"vr": "UI", "Value": ["1.2.3"]}},
                {"0020000E": {"vr": "UI", "Value": ["1.2.4"]}},
            ],
        },
        "00091001": {"vr": "OB", "InlineBinary": "AAEC"},
        "7FE00010": {"vr": "OW", "BulkDataURI": "http://gw/dicom-web/x/bulkdata/7FE00010"},
        "00200032": {"vr": "DS", "Value": [1.5, None, -2]},
    }
    root = _root(dataset)
    items = root.findall(f"{NS}DicomAttribute[@tag='00081115']/{NS}Item")
    assert [i.attrib["number"] for i in items] == ["1", "2"]
    assert [i.findtext(f"{NS}DicomAttribute/{NS}Value") for i in items] == ["1.2.3", "1.2.4"]
    private = root.find(f"{NS}DicomAttribute[@tag='00091001']")
    assert private is not None and "keyword" not in private.attrib
    assert private.findtext(f"{NS}InlineBinary") == "AAEC"
    bulk = root.find(f"{NS}DicomAttribute[@tag='7FE00010']/{NS}BulkData")
    assert bulk is not None and bulk.attrib["uri"].endswith("/bulkdata/7FE00010")
    position = root.find(f"{NS}DicomAttribute[@tag='00200032']")
    assert position is not None
    assert [(v.attrib["number"], v.text) for v in position] == [
        ("1", "1.5"),
        ("2", None),
        ("3", "-2"),
    ]


def test_text_is_escaped_and_utf8() -> None:
    document = native_dicom_model({"00081030": {"vr": "LO", "Value": ["<a & b> Ü"]}})
    assert document.startswith(b"<?xml version='1.0' encoding='utf-8'?>")
    root = ET.fromstring(document)  # noqa: S314 - our own output
    assert root.findtext(f"{NS}DicomAttribute/{NS}Value") == "<a & b> Ü"


def test_multipart_has_one_document_per_data_set() -> None:
    body, content_type = multipart_xml(
        [{"00100020": {"vr": "LO", "Value": [p]}} for p in ("P1", "P2")]
    )
    assert content_type.startswith(f'multipart/related; type="{DICOM_XML}"; boundary=')
    message = message_from_bytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body, policy=HTTP
    )
    parts = list(message.iter_parts())
    assert [p.get_content_type() for p in parts] == [DICOM_XML, DICOM_XML]
    ids = [ET.fromstring(p.get_payload(decode=True)).findtext(f".//{NS}Value") for p in parts]  # noqa: S314
    assert ids == ["P1", "P2"]


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, DICOM_JSON),
        ("", DICOM_JSON),
        ("*/*", DICOM_JSON),
        ("application/dicom+json", DICOM_JSON),
        ("application/json, text/plain", DICOM_JSON),
        ('multipart/related; type="application/dicom+xml"', DICOM_XML),
        ("multipart/related; type=application/dicom+xml", DICOM_XML),
        ("application/dicom+xml", DICOM_XML),
        ("application/dicom+json;q=0.5, application/dicom+xml", DICOM_XML),
        ("text/html, */*;q=0.8", DICOM_JSON),
        ("application/dicom+xml;q=0, application/json", DICOM_JSON),
    ],
)
def test_negotiation(accept: str | None, expected: str) -> None:
    assert negotiate_dataset_media(accept, "QIDO-RS") == expected


@pytest.mark.parametrize(
    "accept",
    ["text/html", 'multipart/related; type="application/dicom"', "application/dicom+xml;q=0"],
)
def test_anything_else_is_406_naming_what_is_supported(accept: str) -> None:
    with pytest.raises(NotAcceptable) as caught:
        negotiate_dataset_media(accept, "QIDO-RS")
    assert "application/dicom+json" in str(caught.value)
    assert DICOM_XML in str(caught.value)
