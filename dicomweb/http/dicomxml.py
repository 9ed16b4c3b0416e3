"""DICOM JSON to the Native DICOM Model (PS3.19 A.1), and choosing JSON or XML by Accept.

QIDO-RS and WADO-RS metadata build DICOM JSON (PS3.18 F.2); a client that asks for
``multipart/related; type="application/dicom+xml"`` gets the same data sets as
``NativeDicomModel`` documents, one per part (PS3.18 8.7.3, Table 8.7.3-2). The writer
works on the JSON, not on pydicom data sets, so both answers carry the same values by
construction. pydicom has no XML writer; this one covers every JSON form: values, person
names by component, sequences, InlineBinary and BulkDataURI.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET  # noqa: S405 - writing XML only, never parsing input
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from aiohttp import web
from pydicom.datadict import keyword_for_tag

from dicomweb.http.multipart import Multipart
from security.api import NotAcceptable

__all__ = [
    "DICOM_JSON",
    "DICOM_XML",
    "dataset_response",
    "multipart_xml",
    "native_dicom_model",
    "negotiate_dataset_media",
]

DICOM_JSON = "application/dicom+json"
DICOM_XML = "application/dicom+xml"
NAMESPACE = "http://dicom.nema.org/PS3.19/models/NativeDICOM"
_PN_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")
_PN_COMPONENTS = ("FamilyName", "GivenName", "MiddleName", "NamePrefix", "NameSuffix")
_ACCEPTED = f'{DICOM_JSON} or multipart/related; type="{DICOM_XML}"'


def _params(parts: Iterable[str]) -> dict[str, str]:
    out = {}
    for param in parts:
        name, _, value = param.partition("=")
        out[name.strip().lower()] = value.strip().strip('"').strip().lower()
    return out


def negotiate_dataset_media(accept: str | None, what: str) -> str:
    """``DICOM_JSON`` or ``DICOM_XML``: the first acceptable of the two by ``Accept``.

    JSON for no Accept, ``*/*``, ``application/*``, ``application/json`` and
    ``application/dicom+json``; XML for ``multipart/related; type="application/dicom+xml"``
    and, as Orthanc's DICOMweb plugin reads it, for a bare ``application/dicom+xml``
    (the XML answer is always the multipart form: PS3.18 defines no other).

    Raises
    ------
    NotAcceptable
        When ``Accept`` names neither (for example ``text/html`` alone).
    """
    if not accept or not accept.strip():
        return DICOM_JSON
    offers = []
    for position, item in enumerate(accept.split(",")):
        media, *rest = (p.strip() for p in item.split(";"))
        params = _params(rest)
        try:
            quality = float(params.get("q", "1"))
        except ValueError:
            quality = 0.0
        if quality > 0:
            offers.append((-quality, position, media.lower(), params.get("type")))
    for _q, _p, media, part_type in sorted(offers):
        if media in (DICOM_JSON, "application/json", "*/*", "application/*"):
            return DICOM_JSON
        if media == DICOM_XML or (media == "multipart/related" and part_type == DICOM_XML):
            return DICOM_XML
    raise NotAcceptable(f"{what} is answered as {_ACCEPTED}; Accept names neither")


def _text(parent: ET.Element, name: str, text: str, **attrs: str) -> None:
    child = ET.SubElement(parent, name, attrs)
    child.text = text


def _person_name(parent: ET.Element, number: int, value: Any) -> None:
    name = ET.SubElement(parent, "PersonName", number=str(number))
    if not isinstance(value, Mapping):
        value = {"Alphabetic": str(value)}
    for group in _PN_GROUPS:
        text = value.get(group)
        if text is None:
            continue
        node = ET.SubElement(name, group)
        # every component up to the last one written, empty ones included, so the
        # value reads back as sent ("^^^^" stays five empty components)
        for component, part in zip(_PN_COMPONENTS, str(text).split("^"), strict=False):
            _text(node, component, part)


def _attributes(parent: ET.Element, dataset: Mapping[str, Any]) -> None:
    for tag in sorted(dataset):
        element = dataset[tag]
        vr = str(element.get("vr", "UN"))
        attrs = {"tag": tag.upper(), "vr": vr}
        keyword = keyword_for_tag(int(tag, 16))
        if keyword:
            attrs["keyword"] = keyword
        node = ET.SubElement(parent, "DicomAttribute", attrs)
        if "BulkDataURI" in element:
            ET.SubElement(node, "BulkData", uri=str(element["BulkDataURI"]))
            continue
        if "InlineBinary" in element:
            _text(node, "InlineBinary", str(element["InlineBinary"]))
            continue
        for number, value in enumerate(element.get("Value", ()), start=1):
            if vr == "SQ":
                item = ET.SubElement(node, "Item", number=str(number))
                _attributes(item, value or {})
            elif vr == "PN":
                _person_name(node, number, value or {})
            elif value is None:
                ET.SubElement(node, "Value", number=str(number))
            else:
                _text(node, "Value", _value_text(value), number=str(number))


def _value_text(value: Any) -> str:
    if isinstance(value, bool):
        return str(int(value))
    return str(value)


def native_dicom_model(dataset: Mapping[str, Any]) -> bytes:
    """One DICOM JSON data set as a PS3.19 ``NativeDicomModel`` document (UTF-8).

    Examples
    --------
    >>> xml = native_dicom_model({"00100020": {"vr": "LO", "Value": ["P1"]}}).decode()
    >>> xml[xml.index("<DicomAttribute") : xml.index("</DicomAttribute")]
    '<DicomAttribute tag="00100020" vr="LO" keyword="PatientID"><Value number="1">P1</Value>'
    """
    root = ET.Element("NativeDicomModel", {"xmlns": NAMESPACE, "xml:space": "preserve"})
    _attributes(root, dataset)
    document: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return document


def multipart_xml(datasets: Sequence[Mapping[str, Any]]) -> tuple[bytes, str]:
    """The body and Content-Type of ``multipart/related; type="application/dicom+xml"``,
    one part per data set."""
    message = Multipart(DICOM_XML)
    body = bytearray()
    for index, dataset in enumerate(datasets):
        body += message.head(first=index == 0) + native_dicom_model(dataset)
    body += message.end()
    return bytes(body), message.content_type


def dataset_response(datasets: Sequence[Mapping[str, Any]], media: str) -> web.Response:
    """``datasets`` as DICOM JSON, or as multipart XML when ``media`` is ``DICOM_XML``."""
    if media == DICOM_XML:
        if not datasets:
            return web.Response(status=204)  # a multipart needs at least one part
        body, content_type = multipart_xml(datasets)
        return web.Response(body=body, headers={"Content-Type": content_type})
    return web.json_response(list(datasets), content_type=DICOM_JSON)
