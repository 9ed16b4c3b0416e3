"""WADO-RS (PS3.18 8.7.3) and WADO-URI (9.4.2.4) transfer syntaxes with real clients and
pydicom's test files stored in their own syntaxes: the default is Explicit VR Little
Endian, other syntaxes are converted on request, ``transfer-syntax=*`` sends the stored
bytes, a syntax nothing can produce is a 406 naming what can; part headers carry public
URLs only.

Checked on what comes back: it parses, its File Meta names the syntax its part is
labelled with, and lossless conversions decode to the original pixels."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from email import message_from_bytes
from email.policy import HTTP
from pathlib import Path

import numpy as np
import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from security.issuer import EmbeddedIssuer
from tests.integration.harness import Archive, gateway_process, wait_until
from tests.integration.stock_orthanc import StockOrthanc

EXPLICIT = "1.2.840.10008.1.2.1"
IMPLICIT = "1.2.840.10008.1.2"
BIG = "1.2.840.10008.1.2.2"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
JPEG_LOSSLESS = "1.2.840.10008.1.2.4.70"
JPEG_LS = "1.2.840.10008.1.2.4.80"
RLE = "1.2.840.10008.1.2.5"
J2K = "1.2.840.10008.1.2.4.90"

# pydicom test file -> the storescu option that proposes (only) its transfer syntax
FILES = {
    "implicit": ("MR_small_implicit.dcm", "-xi", IMPLICIT),
    "rtplan": ("rtplan.dcm", "-xi", IMPLICIT),
    "big": ("MR_small_bigendian.dcm", "-xb", BIG),
    "explicit": ("CT_small.dcm", "-xe", EXPLICIT),
    "jpeg": ("SC_rgb_jpeg_dcmtk.dcm", "-xy", JPEG_BASELINE),
    "jpeg_lossless": ("SC_rgb_jpeg_gdcm.dcm", "-xs", JPEG_LOSSLESS),
    "rle": ("MR_small_RLE.dcm", "-xr", RLE),
    "j2k": ("MR_small_jp2klossless.dcm", "-xv", J2K),
}


@dataclass
class Sent:
    path: Path
    study: str
    series: str
    sop: str
    syntax: str


@dataclass
class Gateway:
    url: str
    issuer: EmbeddedIssuer
    study: str
    sent: dict[str, Sent]
    log: Path

    @property
    def root(self) -> str:
        return f"{self.url}/dicom-web"

    def headers(self, **extra: str) -> dict[str, str]:
        token = self.issuer.mint(
            subject="client-syntaxes", institution="Hospital A", scopes=["dicom.read"]
        )
        return {"Authorization": f"Bearer {token}", **extra}

    def client(self) -> DICOMwebClient:
        return DICOMwebClient(url=self.root, headers=self.headers())

    def url_of(self, name: str) -> str:
        s = self.sent[name]
        return f"{self.root}/studies/{s.study}/series/{s.series}/instances/{s.sop}"


def _into_study(name: str, study: pydicom.Dataset, path: Path) -> Path:
    """A pydicom test file under new UIDs in ``study``, written in its own syntax."""
    ds = pydicom.dcmread(get_testdata_file(name, download=False))
    for keyword in ("PatientID", "PatientName", "StudyInstanceUID"):
        setattr(ds, keyword, getattr(study, keyword))
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture(scope="module")
def gateway(archive: Archive, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    work = tmp_path_factory.mktemp("wado-syntaxes")
    study = pydicom.Dataset()
    study.PatientID = f"WS{generate_uid()[-8:]}"
    study.PatientName = "Syntax^Test"
    study.StudyInstanceUID = generate_uid()
    sent: dict[str, Sent] = {}
    for key, (name, option, syntax) in FILES.items():
        path = _into_study(name, study, work / f"{key}.dcm")
        answer = archive.storescu("HOSPA", path, extra=(option,))
        assert answer.returncode == 0, answer.stderr
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        assert ds.file_meta.TransferSyntaxUID == syntax
        sent[key] = Sent(
            path,
            str(ds.StudyInstanceUID),
            str(ds.SeriesInstanceUID),
            str(ds.SOPInstanceUID),
            syntax,
        )
    with gateway_process(archive, "wado-syntaxes") as (url, log):
        issuer = EmbeddedIssuer.open_or_create(archive.home / "keys", url, f"{url}/dicom-web")
        gw = Gateway(url, issuer, str(study.StudyInstanceUID), sent, log)

        def indexed() -> bool:
            answer = requests.get(
                f"{gw.root}/studies/{gw.study}/instances", headers=gw.headers(), timeout=10
            )
            return answer.ok and len(answer.json()) == len(sent)

        wait_until(indexed, "the catalog to index the study")
        yield gw


def _parts(answer: requests.Response) -> list[tuple[dict[str, str], bytes]]:
    """(headers, body) of each part of a multipart answer, header names lower case."""
    assert answer.status_code == 200, answer.text
    message = message_from_bytes(
        f"Content-Type: {answer.headers['Content-Type']}\r\n\r\n".encode() + answer.content,
        policy=HTTP,
    )
    out = []
    for part in message.iter_parts():
        headers = {name.lower(): str(value) for name, value in part.items()}
        out.append((headers, part.get_payload(decode=True)))
    return out


def _label(content_type: str) -> str | None:
    for param in content_type.split(";")[1:]:
        name, _, value = param.strip().partition("=")
        if name.lower() == "transfer-syntax":
            return value.strip('"')
    return None


def _checked(headers: dict[str, str], body: bytes) -> pydicom.Dataset:
    """The part parses, and its File Meta names the syntax its Content-Type says."""
    ds = pydicom.dcmread(io.BytesIO(body))
    assert _label(headers["content-type"]) == ds.file_meta.TransferSyntaxUID
    return ds


def _original(gw: Gateway, name: str) -> pydicom.Dataset:
    return pydicom.dcmread(gw.sent[name].path)


def _same_pixels(got: pydicom.Dataset, original: pydicom.Dataset) -> None:
    assert np.array_equal(got.pixel_array, original.pixel_array)


def test_default_is_explicit_vr_little_endian(gateway: Gateway) -> None:
    """Without a transfer-syntax (asked by dicomweb-client, raw, or no Accept at all),
    Implicit VR LE and Explicit VR BE instances come back as Explicit VR LE."""
    client = gateway.client()
    for name in ("implicit", "rtplan", "big", "explicit"):
        s = gateway.sent[name]
        got = client.retrieve_instance(s.study, s.series, s.sop, media_types=("application/dicom",))
        assert got.file_meta.TransferSyntaxUID == EXPLICIT, name
        original = _original(gateway, name)
        assert got.SOPInstanceUID == original.SOPInstanceUID
        if "PixelData" in original:
            _same_pixels(got, original)
        else:  # an RT Plan: the whole data set survives the re-encoding
            assert got.BeamSequence[0].BeamName == original.BeamSequence[0].BeamName
            assert len(got.FractionGroupSequence) == len(original.FractionGroupSequence)
    for accept in (None, 'multipart/related; type="application/dicom"', "*/*"):
        headers = gateway.headers() if accept is None else gateway.headers(Accept=accept)
        answer = requests.get(gateway.url_of("implicit"), headers=headers, timeout=60)
        ((part_headers, body),) = _parts(answer)
        assert _checked(part_headers, body).file_meta.TransferSyntaxUID == EXPLICIT, accept
    # Implicit VR LE was re-encoded by the gateway itself, never handed to Orthanc
    assert "Orthanc converts it" not in gateway.log.read_text()


def test_study_default_converts_what_it_must(gateway: Gateway) -> None:
    """A study without transfer-syntax: every part Explicit VR LE and labelled so, the
    J2K instance (no codec in Orthanc) makes it a 406 that names the way out."""
    answer = requests.get(
        f"{gateway.root}/studies/{gateway.study}",
        headers=gateway.headers(Accept='multipart/related; type="application/dicom"'),
        timeout=120,
    )
    assert answer.status_code == 406
    message = answer.json()["message"]
    assert J2K in message and "transfer-syntax=*" in message
    # the series without the J2K instance: all Explicit VR LE, pixels kept where lossless
    for name in ("implicit", "big", "rle", "jpeg_lossless"):
        s = gateway.sent[name]
        series = gateway.client().retrieve_series(
            s.study, s.series, media_types=("application/dicom",)
        )
        assert [ds.file_meta.TransferSyntaxUID for ds in series] == [EXPLICIT], name
        if name in ("implicit", "big", "rle"):
            _same_pixels(series[0], _original(gateway, name))


def test_transcoding_on_request(gateway: Gateway) -> None:
    """transfer-syntax=1.2.840.10008.1.2.1 for compressed instances: converted (by
    Orthanc), labelled, and equal to the original where lossless."""
    client = gateway.client()
    for name in ("rle", "jpeg_lossless", "jpeg"):
        s = gateway.sent[name]
        got = client.retrieve_instance(
            s.study, s.series, s.sop, media_types=(("application/dicom", EXPLICIT),)
        )
        assert got.file_meta.TransferSyntaxUID == EXPLICIT, name
        original = _original(gateway, name)
        # pydicom here has no JPEG lossless decoder: the geometry, then pixels where it can
        assert (
            got.pixel_array.shape
            == (original.Rows, original.Columns, original.SamplesPerPixel)[
                : 2 if original.SamplesPerPixel == 1 else 3
            ]
        )
        if name == "rle":
            _same_pixels(got, original)
        if name == "jpeg":  # lossy: decoders may differ by a little
            diff = np.abs(got.pixel_array.astype(int) - original.pixel_array.astype(int))
            assert diff.max() <= 8
    accept = f'multipart/related; type="application/dicom"; transfer-syntax={EXPLICIT}'
    answer = requests.get(
        gateway.url_of("jpeg"), headers=gateway.headers(Accept=accept), timeout=60
    )
    ((headers, body),) = _parts(answer)
    assert _checked(headers, body).file_meta.TransferSyntaxUID == EXPLICIT
    # an uncompressed instance to JPEG-LS lossless, decoded back to the same pixels
    s = gateway.sent["explicit"]
    got = client.retrieve_instance(
        s.study, s.series, s.sop, media_types=(("application/dicom", JPEG_LS),)
    )
    assert got.file_meta.TransferSyntaxUID == JPEG_LS
    _same_pixels(got, _original(gateway, "explicit"))


def test_stored_bytes_with_any_syntax(gateway: Gateway, archive: Archive) -> None:
    """transfer-syntax=* (what a stock Orthanc asks for): every instance as stored."""
    accept = 'multipart/related; type="application/dicom"; transfer-syntax=*'
    answer = requests.get(
        f"{gateway.root}/studies/{gateway.study}",
        headers=gateway.headers(Accept=accept),
        timeout=120,
    )
    parts = _parts(answer)
    assert len(parts) == len(gateway.sent)
    by_sop = {s.sop: s for s in gateway.sent.values()}
    for headers, body in parts:
        ds = _checked(headers, body)
        s = by_sop[str(ds.SOPInstanceUID)]
        assert ds.file_meta.TransferSyntaxUID == s.syntax
        orthanc_id = archive.lookup(s.sop)
        assert orthanc_id is not None
        assert body == archive.get(f"/instances/{orthanc_id}/file").content


def test_406_names_what_is_available(gateway: Gateway) -> None:
    # J2K: no codec; an unknown UID; JPEG baseline is 8-bit only and the MR has 16 bits
    for name, asked in (("j2k", EXPLICIT), ("explicit", "1.2.3.4"), ("implicit", JPEG_BASELINE)):
        accept = f'multipart/related; type="application/dicom"; transfer-syntax={asked}'
        answer = requests.get(
            gateway.url_of(name), headers=gateway.headers(Accept=accept), timeout=60
        )
        assert answer.status_code == 406, name
        message = answer.json()["message"]
        assert gateway.sent[name].syntax in message and "transfer-syntax=*" in message
    # the J2K instance as stored is fine
    s = gateway.sent["j2k"]
    got = gateway.client().retrieve_instance(
        s.study, s.series, s.sop, media_types=(("application/dicom", J2K),)
    )
    assert got.file_meta.TransferSyntaxUID == J2K


def test_part_locations_are_public(gateway: Gateway, archive: Archive) -> None:
    """Frames decoded by Orthanc carry the gateway's URL, never Orthanc's loopback
    address; bulk data parts carry their bulk data URI."""
    rle = gateway.url_of("rle")
    accept = f'multipart/related; type="application/octet-stream"; transfer-syntax={EXPLICIT}'
    answer = requests.get(f"{rle}/frames/1", headers=gateway.headers(Accept=accept), timeout=60)
    ((headers, body),) = _parts(answer)
    assert body == _original(gateway, "rle").pixel_array.tobytes()
    internal = f":{archive.orthanc_port}"
    assert internal not in answer.text[:2000]
    assert headers["content-location"] == f"{rle}/frames/1"
    implicit = gateway.url_of("implicit")
    for url in (f"{implicit}/bulkdata/7FE00010", f"{implicit}/frames/1"):
        ((headers, _body),) = _parts(requests.get(url, headers=gateway.headers(), timeout=60))
        assert headers["content-location"] == url


def test_stock_orthanc_pulls_explicit_vr_little_endian(
    gateway: Gateway, stock_peer: StockOrthanc
) -> None:
    """A stock Orthanc pulling through its DICOMweb plugin: asking for Explicit VR LE it
    gets Explicit VR LE, from Implicit VR LE and from JPEG alike; with its default Accept
    (transfer-syntax=*) it stores what the archive stores."""
    token = gateway.headers()["Authorization"]
    stock_peer.add_dicomweb_server("archive", gateway.root, headers={"Authorization": token})
    resources = [
        {"Study": s.study, "Series": s.series, "Instance": s.sop}
        for s in (gateway.sent["implicit"], gateway.sent["jpeg_lossless"])
    ]
    accept = f'multipart/related; type="application/dicom"; transfer-syntax={EXPLICIT}'
    answer = stock_peer.post(
        "/dicom-web/servers/archive/retrieve",
        json={"Resources": resources, "HttpHeaders": {"Accept": accept}},
    )
    assert answer.ok, answer.text
    # and with its own default Accept (transfer-syntax=*): as stored
    rtplan, j2k = gateway.sent["rtplan"], gateway.sent["j2k"]
    answer = stock_peer.post(
        "/dicom-web/servers/archive/retrieve",
        json={
            "Resources": [
                {"Study": s.study, "Series": s.series, "Instance": s.sop} for s in (rtplan, j2k)
            ]
        },
    )
    assert answer.ok, answer.text
    for s, expected in (
        (gateway.sent["implicit"], EXPLICIT),
        (gateway.sent["jpeg_lossless"], EXPLICIT),
        (rtplan, IMPLICIT),
        (j2k, J2K),
    ):
        found = stock_peer.post("/tools/lookup", data=s.sop).json()
        ids = [item["ID"] for item in found if item["Type"] == "Instance"]
        assert len(ids) == 1, s.sop
        syntax = stock_peer.get(f"/instances/{ids[0]}/metadata/TransferSyntax").text
        assert syntax == expected, s.sop


def _wado_uri(gw: Gateway, name: str, **params: str) -> requests.Response:
    s = gw.sent[name]
    query = {
        "requestType": "WADO",
        "studyUID": s.study,
        "seriesUID": s.series,
        "objectUID": s.sop,
        "contentType": "application/dicom",
        **params,
    }
    return requests.get(f"{gw.url}/wado", params=query, headers=gw.headers(), timeout=60)


@pytest.mark.parametrize("name", ["implicit", "big", "rle"])
def test_wado_uri_default_is_explicit_vr_little_endian(gateway: Gateway, name: str) -> None:
    """WADO-URI without transferSyntax answers in Explicit VR Little Endian (PS3.18
    9.4.2.4), whatever the stored syntax; the pixels are the original ones."""
    answer = _wado_uri(gateway, name)
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"] == "application/dicom"
    assert int(answer.headers["Content-Length"]) == len(answer.content)
    ds = pydicom.dcmread(io.BytesIO(answer.content))
    assert ds.file_meta.TransferSyntaxUID == EXPLICIT
    original = _original(gateway, name)
    _same_pixels(ds, original)
    assert ds.SOPInstanceUID == original.SOPInstanceUID
    # named, the stored syntax is the stored file
    stored = _wado_uri(gateway, name, transferSyntax=gateway.sent[name].syntax)
    assert stored.status_code == 200
    assert pydicom.dcmread(io.BytesIO(stored.content)).file_meta.TransferSyntaxUID == (
        gateway.sent[name].syntax
    )


def test_wado_uri_names_what_it_can_send(gateway: Gateway, archive: Archive) -> None:
    """No codec for J2K here: the default is a 406 naming the stored syntax, which is
    then sent as stored when asked for; an Explicit VR Little Endian file is the stored
    file."""
    answer = _wado_uri(gateway, "j2k")
    assert answer.status_code == 406
    message = answer.json()["message"]
    assert J2K in message and "transferSyntax" in message
    stored = _wado_uri(gateway, "j2k", transferSyntax=J2K)
    assert stored.status_code == 200
    assert pydicom.dcmread(io.BytesIO(stored.content)).file_meta.TransferSyntaxUID == J2K
    orthanc_id = archive.lookup(gateway.sent["explicit"].sop)
    assert orthanc_id is not None
    stored_file = archive.get(f"/instances/{orthanc_id}/file").content
    assert _wado_uri(gateway, "explicit").content == stored_file
