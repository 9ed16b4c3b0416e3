"""A SOP instance sent again in another transfer syntax and with a changed header
(issue 11, item 1), over C-STORE (dcmtk storescu) and over STOW-RS.

The archive keeps the first copy (Orthanc's ``OverwriteInstances`` is false) and answers
the re-send with success; the index must describe that first copy: the transfer syntax
WADO-RS labels the body with, the attributes QIDO answers. The data are pydicom's
``MR_small.dcm`` (Explicit VR Little Endian) and ``MR_small_RLE.dcm`` (the same image,
RLE Lossless), under UIDs of this test so that no other test's data interferes.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from email import message_from_bytes
from email.policy import HTTP
from pathlib import Path

import pydicom
import pytest
import requests
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid

from security.issuer import EmbeddedIssuer
from tests.integration.harness import Archive, gateway_process

SCOPES = ("dicom.read", "dicom.write")
BOUNDARY = "resend-test-boundary"
WADO_DICOM = 'multipart/related; type="application/dicom"'


@dataclass
class Gateway:
    url: str
    issuer: EmbeddedIssuer

    @property
    def root(self) -> str:
        return f"{self.url}/dicom-web"

    def headers(self, **extra: str) -> dict[str, str]:
        token = self.issuer.mint(
            subject="resend-client", institution="Hospital A", scopes=list(SCOPES)
        )
        return {"Authorization": f"Bearer {token}", **extra}


@pytest.fixture(scope="module")
def gateway(archive: Archive) -> Iterator[Gateway]:
    with gateway_process(archive, "resend") as (url, _log):
        yield Gateway(
            url, EmbeddedIssuer.open_or_create(archive.home / "keys", url, f"{url}/dicom-web")
        )


@dataclass(frozen=True)
class Pair:
    """The same SOP instance twice: first as Explicit VR LE, then as RLE with a
    changed SeriesDescription."""

    study: str
    series: str
    sop: str
    first: bytes
    second: bytes


def _pair() -> Pair:
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    patient = f"RS{uuid.uuid4().hex[:10].upper()}"
    copies = []
    for name, description in (("MR_small.dcm", "first copy"), ("MR_small_RLE.dcm", "second copy")):
        ds = pydicom.dcmread(get_testdata_file(name, download=False))
        ds.PatientID = patient
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = study, series, sop
        ds.file_meta.MediaStorageSOPInstanceUID = sop
        ds.SeriesDescription = description
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        copies.append(buffer.getvalue())
    return Pair(study, series, sop, copies[0], copies[1])


def _parts(answer: requests.Response) -> list[tuple[str, bytes]]:
    """(Content-Type, body) of each part of a multipart WADO-RS answer."""
    message = message_from_bytes(
        f"Content-Type: {answer.headers['Content-Type']}\r\n\r\n".encode() + answer.content,
        policy=HTTP,
    )
    return [(str(p["Content-Type"]), p.get_payload(decode=True)) for p in message.iter_parts()]


def _label(content_type: str) -> str | None:
    for param in content_type.split(";")[1:]:
        key, _, value = param.strip().partition("=")
        if key == "transfer-syntax":
            return value.strip('"')
    return None


def _check_index_describes_the_first(gw: Gateway, pair: Pair) -> None:
    url = f"{gw.root}/studies/{pair.study}/series/{pair.series}/instances/{pair.sop}"
    # as stored: the label is the stored body's syntax, and that is the first copy's
    answer = requests.get(url, headers=gw.headers(Accept=WADO_DICOM), timeout=60)
    assert answer.status_code == 200, answer.text
    [(content_type, body)] = _parts(answer)
    stored = pydicom.dcmread(io.BytesIO(body))
    assert str(stored.file_meta.TransferSyntaxUID) == ExplicitVRLittleEndian
    assert stored.SeriesDescription == "first copy"
    assert _label(content_type) in (None, ExplicitVRLittleEndian), content_type

    # asking for RLE: never the Explicit VR LE body labelled RLE
    rle = requests.get(
        url,
        headers=gw.headers(Accept=f"{WADO_DICOM}; transfer-syntax={RLELossless}"),
        timeout=60,
    )
    if rle.status_code == 200:
        for content_type, body in _parts(rle):
            got = str(pydicom.dcmread(io.BytesIO(body)).file_meta.TransferSyntaxUID)
            assert got == RLELossless and _label(content_type) in (None, got), content_type
    else:
        assert rle.status_code == 406, rle.text

    # QIDO: the attributes of the stored copy
    series = requests.get(
        f"{gw.root}/studies/{pair.study}/series",
        params={"includefield": "SeriesDescription"},
        headers=gw.headers(Accept="application/dicom+json"),
        timeout=60,
    )
    assert series.status_code == 200, series.text
    [found] = series.json()
    assert found["0008103E"]["Value"] == ["first copy"]


def test_a_c_store_re_send_in_rle_with_a_changed_header_keeps_the_first(
    archive: Archive, gateway: Gateway, tmp_path: Path
) -> None:
    pair = _pair()
    first, second = tmp_path / "le.dcm", tmp_path / "rle.dcm"
    first.write_bytes(pair.first)
    second.write_bytes(pair.second)
    sent = archive.storescu("HOSPA", first, extra=("-xe",))  # Explicit VR LE only
    assert sent.returncode == 0, sent.stderr
    archive.stats()
    # the re-send is answered with success: the archive holds the instance
    # RLE proposed (and uncompressed as fallback): the file travels and is kept as RLE
    again = archive.storescu("HOSPA", second, extra=("-v", "-xr"))
    assert again.returncode == 0, again.stderr
    assert "Success" in again.stderr, again.stderr
    archive.stats()
    _check_index_describes_the_first(gateway, pair)


def test_a_stow_re_send_in_rle_with_a_changed_header_keeps_the_first(
    archive: Archive, gateway: Gateway
) -> None:
    pair = _pair()
    for data in (pair.first, pair.second):
        body = (
            f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
            + data
            + f"\r\n--{BOUNDARY}--\r\n".encode()
        )
        content_type = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
        answer = requests.post(
            f"{gateway.root}/studies",
            data=body,
            headers=gateway.headers(**{"Content-Type": content_type}),
            timeout=120,
        )
        assert answer.status_code == 200, answer.text
        archive.stats()
    _check_index_describes_the_first(gateway, pair)
