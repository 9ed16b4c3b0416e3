"""DICOMweb answers as third-party clients read them (issue 11, items 5, 8, 9, 11, 12).

A stock Orthanc (Debian's, DICOMweb plugin only) pushes to the gateway with its STOW-RS
client; dicomweb-client searches with ``includefield``, reads person names in three
scripts, asks for XML and for rendered series; the stock Orthanc's own DICOMweb answers
on the same files are the reference where it has one. Every file is one nobody here made
(pydicom's test and character-set files), given fresh UIDs and patient IDs per test.
"""

from __future__ import annotations

import io
import json
import uuid
import xml.etree.ElementTree as ET  # noqa: S405 - parsing our own gateway's answers
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from PIL import Image
from pydicom.data import get_charset_files, get_testdata_file
from pydicom.uid import generate_uid

from security.issuer import EmbeddedIssuer
from tests.integration.dicomweb_compare import normalised
from tests.integration.harness import Archive, gateway_process, multipart_parts, wait_until
from tests.integration.stock_orthanc import StockOrthanc, stock_orthanc

READ_WRITE = ("dicom.read", "dicom.write")
NS = "{http://dicom.nema.org/PS3.19/models/NativeDICOM}"
XML_ACCEPT = 'multipart/related; type="application/dicom+xml"'


@dataclass
class Gateway:
    url: str
    issuer: EmbeddedIssuer

    @property
    def root(self) -> str:
        return f"{self.url}/dicom-web"

    def token(self, institution: str = "Hospital A") -> str:
        return self.issuer.mint(
            subject=f"clients-{institution}", institution=institution, scopes=READ_WRITE
        )

    def headers(self, institution: str = "Hospital A", **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(institution)}", **extra}

    def client(self, institution: str = "Hospital A") -> DICOMwebClient:
        return DICOMwebClient(url=self.root, headers=self.headers(institution))

    def get(self, path: str, **headers: str) -> requests.Response:
        return requests.get(f"{self.root}{path}", headers=self.headers(**headers), timeout=60)


@pytest.fixture(scope="module")
def gw(archive: Archive) -> Iterator[Gateway]:
    with gateway_process(archive, "clients") as (url, _log):
        yield Gateway(
            url, EmbeddedIssuer.open_or_create(archive.home / "keys", url, f"{url}/dicom-web")
        )


@pytest.fixture(scope="module")
def peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StockOrthanc]:
    """One stock Orthanc for the module (each test stores under its own UIDs)."""
    with stock_orthanc(tmp_path_factory.mktemp("stock-clients")) as started:
        yield started


def fresh(source: str | Path, folder: Path, patient_id: str) -> tuple[pydicom.Dataset, Path]:
    """``source`` under new study, series and instance UIDs and ``patient_id``, saved."""
    ds = pydicom.dcmread(source)
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = (
        generate_uid() for _ in range(3)
    )
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PatientID = patient_id
    path = folder / f"{patient_id}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return pydicom.dcmread(path), path


def unique_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def store(gw: Gateway, *datasets: pydicom.Dataset) -> None:
    """STOW with dicomweb-client, then wait until QIDO finds every instance."""
    answer = gw.client().store_instances(list(datasets))
    assert "FailedSOPSequence" not in answer
    for ds in datasets:
        wait_until(
            lambda ds=ds: gw.get(f"/instances?SOPInstanceUID={ds.SOPInstanceUID}").json(),
            "the stored instance to be indexed",
        )


def ct_file() -> str:
    return str(get_testdata_file("CT_small.dcm", download=False))


def charset_file(name: str) -> str:
    (path,) = [p for p in get_charset_files() if Path(p).name == name]
    return str(path)


# -- item 5: a stock Orthanc STOWs into the archive ---------------------------------------


def test_a_stock_orthanc_stows_into_the_archive(
    gw: Gateway, peer: StockOrthanc, tmp_path: Path
) -> None:
    ds, path = fresh(ct_file(), tmp_path, unique_id("STOWPEER"))
    (orthanc_id,) = peer.upload(path)
    study_id = peer.get(f"/instances/{orthanc_id}/study").json()["ID"]
    peer.add_dicomweb_server("vna", gw.root, headers={"Authorization": f"Bearer {gw.token()}"})
    answer = peer.post("/dicom-web/servers/vna/stow", json={"Resources": [study_id]})
    assert answer.status_code == 200, answer.text
    client = gw.client()
    wait_until(
        lambda: client.search_for_studies(search_filters={"PatientID": ds.PatientID}),
        "the study the stock Orthanc sent to be indexed",
    )
    got = client.retrieve_instance(
        str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)
    )
    assert got.PixelData == ds.PixelData
    assert got.InstitutionName == ds.InstitutionName


# -- item 8: return attributes the catalog does not index --------------------------------


@pytest.fixture(scope="module")
def ct_stored(
    gw: Gateway, peer: StockOrthanc, tmp_path_factory: pytest.TempPathFactory
) -> pydicom.Dataset:
    """CT_small under fresh UIDs, in the archive and in the stock Orthanc."""
    ds, path = fresh(ct_file(), tmp_path_factory.mktemp("ct"), unique_id("INCL"))
    store(gw, ds)
    peer.upload(path)
    return ds


def test_includefield_reads_unindexed_attributes_from_the_headers(
    gw: Gateway, peer: StockOrthanc, ct_stored: pydicom.Dataset
) -> None:
    ds = ct_stored
    fields = ["InstitutionName", "PatientWeight", "SliceThickness", "00180060"]
    (found,) = gw.client().search_for_instances(
        search_filters={"PatientID": ds.PatientID}, fields=fields
    )
    metadata = gw.client().retrieve_instance_metadata(
        str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)
    )
    for tag in ("00080080", "00101030", "00180050", "00180060"):
        assert found[tag] == metadata[tag], tag
    assert found["00080080"] == {"vr": "LO", "Value": ["JFK IMAGING CENTER"]}
    assert found["00180050"] == {"vr": "DS", "Value": [5]}
    # PS3.18 Table 10.6.3-5, "shall be present if known"
    assert found["00280100"] == {"vr": "US", "Value": [16]}
    assert found["00080056"] == {"vr": "CS", "Value": ["ONLINE"]}
    # the same values as a stock Orthanc gives, at study level too
    query = f"?PatientID={ds.PatientID}&includefield=InstitutionName&includefield=PatientWeight"
    (ours,) = gw.get(f"/studies{query}").json()
    (theirs,) = peer.get(f"/dicom-web/studies{query}").json()
    for tag in ("00080080", "00101030"):
        # DS as numbers (Orthanc 1.12 writes the file's strings, PS3.18 F.2.3.1 numbers)
        assert normalised(tag, ours[tag]) == normalised(tag, theirs[tag]), tag
    # an attribute the header lacks is "known, empty"; a sequence path is named in a Warning
    answer = gw.get(
        f"/instances?PatientID={ds.PatientID}"
        "&includefield=PatientSize&includefield=ReferencedImageSequence.ReferencedSOPClassUID"
    )
    assert answer.json()[0]["00101020"] == {"vr": "DS"}
    assert answer.headers["Warning"].startswith("299 ")
    assert "ReferencedImageSequence.ReferencedSOPClassUID" in answer.headers["Warning"]


def test_includefield_all_on_instances_is_the_whole_header_without_bulk_data(
    gw: Gateway, ct_stored: pydicom.Dataset
) -> None:
    ds = ct_stored
    (found,) = gw.get(f"/instances?PatientID={ds.PatientID}&includefield=all").json()
    (metadata,) = gw.get(
        f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}/metadata"
    ).json()
    for tag, element in metadata.items():
        if "BulkDataURI" in element or "InlineBinary" in element:
            assert tag not in found, tag
        elif tag not in ("00080056", "00083002", "00081190"):
            assert found[tag]["vr"] == element["vr"], tag
    assert "7FE00010" not in found
    assert found["00080080"]["Value"] == ["JFK IMAGING CENTER"]
    assert found["00080056"] == {"vr": "CS", "Value": ["ONLINE"]}
    (study,) = gw.get(f"/studies?PatientID={ds.PatientID}&includefield=all").json()
    assert study["00080056"] == {"vr": "CS", "Value": ["ONLINE"]}


# -- item 9: person names in three component groups ---------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "chrH31.dcm",
            {"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎", "Phonetic": "やまだ^たろう"},
        ),
        ("chrX1.dcm", {"Alphabetic": "Wang^XiaoDong", "Ideographic": "王^小東"}),
        (
            "chrI2.dcm",
            {"Alphabetic": "Hong^Gildong", "Ideographic": "洪^吉洞", "Phonetic": "홍^길동"},
        ),
    ],
)
def test_qido_person_names_have_their_component_groups(
    gw: Gateway, tmp_path: Path, name: str, expected: dict[str, str]
) -> None:
    ds, _path = fresh(charset_file(name), tmp_path, unique_id("PN"))
    store(gw, ds)
    client = gw.client()
    (study,) = client.search_for_studies(search_filters={"PatientID": ds.PatientID})
    assert study["00100010"] == {"vr": "PN", "Value": [expected]}
    metadata = client.retrieve_instance_metadata(
        str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)
    )
    assert study["00100010"] == metadata["00100010"]
    (instance,) = client.search_for_instances(
        search_filters={"PatientID": ds.PatientID}, fields=["PatientName"]
    )
    assert instance["00100010"] == metadata["00100010"]


# -- item 11: application/dicom+xml ------------------------------------------------------


def _xml_value(node: ET.Element) -> Any:
    """A DicomAttribute's values in DICOM JSON form, for comparison with the JSON answer."""
    vr = node.attrib["vr"]
    bulk = node.find(f"{NS}BulkData")
    if bulk is not None:
        return {"vr": vr, "BulkDataURI": bulk.attrib["uri"]}
    inline = node.find(f"{NS}InlineBinary")
    if inline is not None:
        return {"vr": vr, "InlineBinary": inline.text}
    values: list[Any] = []
    for child in node:
        number = int(child.attrib["number"])
        assert number == len(values) + 1  # numbered 1, 2, ... in order
        if child.tag == f"{NS}Item":
            values.append(_xml_dataset(child))
        elif child.tag == f"{NS}PersonName":
            groups = {}
            for group in child:
                order = ("FamilyName", "GivenName", "MiddleName", "NamePrefix", "NameSuffix")
                components = [c.tag.removeprefix(NS) for c in group]
                assert components == list(order[: len(components)])
                groups[group.tag.removeprefix(NS)] = "^".join(c.text or "" for c in group)
            values.append(groups)
        else:
            assert child.tag == f"{NS}Value"
            values.append(child.text or "")  # an empty value: no text
    return {"vr": vr, "Value": values} if values else {"vr": vr}


def _xml_dataset(node: ET.Element) -> dict[str, Any]:
    out = {}
    for attribute in node:
        assert attribute.tag == f"{NS}DicomAttribute"
        tag = attribute.attrib["tag"]
        keyword = pydicom.datadict.keyword_for_tag(int(tag, 16))
        assert attribute.attrib.get("keyword", "") == keyword, tag
        out[tag] = _xml_value(attribute)
    return out


def _json_as_text(element: dict[str, Any]) -> dict[str, Any]:
    """A DICOM JSON element with numbers as the text XML carries."""
    if "Value" not in element:
        return element
    values = []
    for value in element["Value"]:
        if element["vr"] == "SQ":
            values.append({t: _json_as_text(e) for t, e in value.items()})
        elif value is None:
            values.append("")  # XML has one form of an empty value
        elif isinstance(value, dict | str):
            values.append(value)
        else:
            values.append(str(value))
    return {**element, "Value": values}


def _xml_parts(answer: requests.Response) -> list[dict[str, Any]]:
    assert answer.status_code == 200, answer.text
    content_type = answer.headers["Content-Type"]
    assert content_type.startswith('multipart/related; type="application/dicom+xml"')
    documents = []
    for part in multipart_parts(answer.content, content_type):
        root = ET.fromstring(part)  # noqa: S314 - our own gateway's answer
        assert root.tag == f"{NS}NativeDicomModel"
        documents.append(_xml_dataset(root))
    return documents


def _compare(xml_documents: list[dict[str, Any]], json_documents: list[dict[str, Any]]) -> None:
    assert len(xml_documents) == len(json_documents)
    for from_xml, from_json in zip(xml_documents, json_documents, strict=True):
        assert from_xml == {tag: _json_as_text(e) for tag, e in from_json.items()}


def test_qido_and_metadata_answer_xml_with_the_json_values(
    gw: Gateway, tmp_path: Path, ct_stored: pydicom.Dataset
) -> None:
    japanese, _ = fresh(charset_file("chrH31.dcm"), tmp_path, unique_id("XML"))
    store(gw, japanese)
    for ds in (ct_stored, japanese):
        for path in (
            f"/studies?PatientID={ds.PatientID}",
            f"/instances?PatientID={ds.PatientID}&includefield=all",
            f"/studies/{ds.StudyInstanceUID}/metadata",
        ):
            as_json = gw.get(path).json()
            for accept in (XML_ACCEPT, "application/dicom+xml"):
                _compare(_xml_parts(gw.get(path, Accept=accept)), as_json)
    # nothing found: no parts to send (a multipart needs one), so 204; JSON stays []
    nobody = f"/studies?PatientID={unique_id('NOBODY')}"
    assert gw.get(nobody, Accept=XML_ACCEPT).status_code == 204
    assert gw.get(nobody).json() == []
    # person names by component (PS3.19 A.1.5)
    answer = gw.get(f"/studies?PatientID={japanese.PatientID}", Accept=XML_ACCEPT)
    part = multipart_parts(answer.content, answer.headers["Content-Type"])[0]
    root = ET.fromstring(part)  # noqa: S314 - our own gateway's answer
    name = root.find(f"{NS}DicomAttribute[@keyword='PatientName']/{NS}PersonName[@number='1']")
    assert name is not None
    assert name.findtext(f"{NS}Alphabetic/{NS}FamilyName") == "Yamada"
    assert name.findtext(f"{NS}Ideographic/{NS}GivenName") == "太郎"
    assert name.findtext(f"{NS}Phonetic/{NS}FamilyName") == "やまだ"


def test_xml_tags_match_the_stock_orthanc_answer(
    gw: Gateway, peer: StockOrthanc, ct_stored: pydicom.Dataset
) -> None:
    """The stock Orthanc answers QIDO XML too: the attributes both send agree."""
    ds = ct_stored
    query = f"/studies?PatientID={ds.PatientID}"
    (ours,) = _xml_parts(gw.get(query, Accept=XML_ACCEPT))
    # the DICOMweb plugin 1.7 answers JSON to the multipart Accept, XML to the bare one
    answers = [
        peer.get(f"/dicom-web{query}", headers={"Accept": accept})
        for accept in ("application/dicom+xml", XML_ACCEPT)
    ]
    xml = [a for a in answers if "application/dicom+xml" in a.headers.get("Content-Type", "")]
    assert xml, [a.headers.get("Content-Type") for a in answers]
    (reference,) = _xml_parts(xml[0])
    shared = (set(ours) & set(reference)) - {"00081190"}  # Retrieve URL names the host
    assert {"00100010", "00100020", "0020000D", "00080020"} <= shared
    for tag in shared:
        assert ours[tag] == reference[tag], tag


def test_other_media_types_are_406_with_the_supported_ones_named(
    gw: Gateway, ct_stored: pydicom.Dataset
) -> None:
    for path in (
        f"/studies?PatientID={ct_stored.PatientID}",
        f"/studies/{ct_stored.StudyInstanceUID}/metadata",
    ):
        answer = gw.get(path, Accept="text/html")
        assert answer.status_code == 406, path
        assert "application/dicom+json" in answer.json()["message"]
        assert gw.get(path, Accept="text/html, */*;q=0.1").status_code == 200


# -- item 12: a rendered series or study is one image -------------------------------------


def _decoded(data: bytes) -> np.ndarray[Any, Any]:
    image = Image.open(io.BytesIO(data))
    assert image.format == "JPEG"
    return np.asarray(image, dtype=np.int16)


def test_rendered_series_and_study_are_one_image_like_a_stock_orthanc(
    gw: Gateway, peer: StockOrthanc, ct_stored: pydicom.Dataset
) -> None:
    ds = ct_stored
    study, series = str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)
    client = gw.client()
    instance = _decoded(client.retrieve_instance_rendered(study, series, str(ds.SOPInstanceUID)))
    for ours, path in (
        (
            client.retrieve_series_rendered(study, series, media_types=("image/jpeg",)),
            "/series/" + series,
        ),
        # dicomweb-client has no rendered study: the request it would send
        (gw.get(f"/studies/{study}/rendered", Accept="image/jpeg").content, ""),
    ):
        image = _decoded(ours)
        assert image.shape == (ds.Rows, ds.Columns)
        assert np.array_equal(image, instance)
        theirs = peer.get(
            f"/dicom-web/studies/{study}{path}/rendered", headers={"Accept": "image/jpeg"}
        )
        assert theirs.status_code == 200
        reference = _decoded(theirs.content)
        assert reference.shape == image.shape
        assert np.abs(reference - image).mean() < 1.0
    # with no Accept at all, too (dicomweb-client without media types)
    plain = client.retrieve_series_rendered(study, series)
    assert np.array_equal(_decoded(plain), instance)
    # every instance, when asked for a multipart
    many = gw.get(f"/studies/{study}/rendered", Accept='multipart/related; type="image/png"')
    assert many.status_code == 200
    (png,) = multipart_parts(many.content, many.headers["Content-Type"])
    assert Image.open(io.BytesIO(png)).format == "PNG"
    assert (
        json.loads(gw.get(f"/studies/{study}/rendered", Accept="application/dicom").text)["error"]
        == "not_acceptable"
    )
