"""WADO-RS frames, bulk data, rendered, thumbnails and WADO-URI through the gateway, against
a real archive: frames equal pydicom's frame slices, images decode, files are byte-identical,
and institution B gets 404 on every one of these for institution A's study."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest
import requests
import zstandard
from dicomweb_client.api import DICOMwebClient
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.encaps import generate_frames
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from security.issuer import EmbeddedIssuer
from synthetic import StudySpec, write_study
from tests.integration.harness import Archive, gateway_process, multipart_parts, wait_until

SPEC = StudySpec(series=1, slices=3, rows=64, columns=64, patient_id="WM0001", seed=77)
MULTIFRAME_SC = "1.2.840.10008.5.1.4.1.1.7.2"  # Multi-frame Grayscale Byte SC Image Storage


@dataclass
class Sent:
    """One instance as sent, with its UIDs."""

    path: Path
    study: str
    series: str
    sop: str
    ds: pydicom.Dataset


@dataclass
class Gateway:
    url: str
    issuer: EmbeddedIssuer
    study_uid: str
    ct: list[Sent]
    multiframe: Sent
    rle: Sent
    jpeg: Sent

    @property
    def root(self) -> str:
        return f"{self.url}/dicom-web"

    def headers(self, institution: str = "Hospital A", **extra: str) -> dict[str, str]:
        token = self.issuer.mint(
            subject=f"client-{institution}", institution=institution, scopes=["dicom.read"]
        )
        return {"Authorization": f"Bearer {token}", **extra}

    def client(self, institution: str = "Hospital A") -> DICOMwebClient:
        return DICOMwebClient(url=self.root, headers=self.headers(institution))


def _multiframe(study: pydicom.Dataset, path: Path) -> Path:
    """An 8-bit, 3-frame image of 33x31 pixels: odd frame size, padded value."""
    ds = pydicom.Dataset()
    for keyword in ("PatientID", "PatientName", "StudyInstanceUID", "StudyDate", "StudyTime"):
        setattr(ds, keyword, getattr(study, keyword))
    ds.SOPClassUID = MULTIFRAME_SC
    ds.SOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "OT"
    ds.SeriesNumber = 90
    ds.InstanceNumber = 1
    ds.Rows, ds.Columns, ds.NumberOfFrames = 33, 31, 3
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    rng = np.random.default_rng(5)
    ds.PixelData = rng.integers(0, 255, size=(3, 33, 31), dtype=np.uint8).tobytes()
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return path


def _restudied(name: str, study: pydicom.Dataset, path: Path) -> Path:
    """A pydicom test file (compressed) moved into ``study`` under new UIDs."""
    ds = pydicom.dcmread(get_testdata_file(name))
    for keyword in ("PatientID", "PatientName", "StudyInstanceUID", "StudyDate", "StudyTime"):
        setattr(ds, keyword, getattr(study, keyword))
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(path, enforce_file_format=True)
    return path


def _sent(path: Path) -> Sent:
    ds = pydicom.dcmread(path)
    return Sent(
        path, str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID), ds
    )


@pytest.fixture(scope="module")
def gateway(archive: Archive, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with gateway_process(archive, "wado-more") as (url, _log):
        issuer = EmbeddedIssuer.open_or_create(archive.home / "keys", url, f"{url}/dicom-web")
        work = tmp_path_factory.mktemp("wado-more")
        ct_files = write_study(SPEC, work / "ct")
        first = pydicom.dcmread(ct_files[0], stop_before_pixels=True)
        extra = [
            (_multiframe(first, work / "mf.dcm"), ()),
            (_restudied("SC_rgb_rle_2frame.dcm", first, work / "rle.dcm"), ("-xr",)),
            (_restudied("SC_rgb_jpeg_dcmtk.dcm", first, work / "jpeg.dcm"), ("-xy",)),
        ]
        sent = archive.storescu("HOSPA", *ct_files)
        assert sent.returncode == 0, sent.stderr
        for path, propose in extra:  # compressed files: propose their own transfer syntax
            sent = archive.storescu("HOSPA", path, extra=propose)
            assert sent.returncode == 0, sent.stderr
        gw = Gateway(
            url,
            issuer,
            str(first.StudyInstanceUID),
            [_sent(p) for p in ct_files],
            *(_sent(p) for p, _ in extra),
        )
        total = len(ct_files) + len(extra)

        def indexed() -> bool:
            answer = requests.get(
                f"{gw.root}/studies/{gw.study_uid}/instances", headers=gw.headers(), timeout=10
            )
            return answer.ok and len(answer.json()) == total

        wait_until(indexed, "the catalog to index the study")
        yield gw


def _instance_url(gw: Gateway, sent: Sent) -> str:
    return f"{gw.root}/studies/{sent.study}/series/{sent.series}/instances/{sent.sop}"


def _frame_size(ds: pydicom.Dataset) -> int:
    return int(ds.Rows * ds.Columns * ds.SamplesPerPixel * ds.BitsAllocated // 8)


def test_frames_of_uncompressed_images_equal_pydicom_slices(gateway: Gateway) -> None:
    client = gateway.client()
    mf = gateway.multiframe
    size = _frame_size(mf.ds)
    assert size % 2 == 1 and len(mf.ds.PixelData) == 3 * size + 1  # odd, padded
    frames = client.retrieve_instance_frames(mf.study, mf.series, mf.sop, frame_numbers=[3, 1, 2])
    expected = [mf.ds.PixelData[(n - 1) * size : n * size] for n in (3, 1, 2)]
    assert frames == expected
    ct = gateway.ct[1]
    (one,) = client.retrieve_instance_frames(
        ct.study, ct.series, ct.sop, frame_numbers=[1], media_types=("application/octet-stream",)
    )
    assert one == ct.ds.PixelData


def test_compressed_frames_as_stored(gateway: Gateway) -> None:
    client = gateway.client()
    rle = gateway.rle
    expected = list(generate_frames(rle.ds.PixelData, number_of_frames=2))
    got = client.retrieve_instance_frames(
        rle.study, rle.series, rle.sop, frame_numbers=[2, 1], media_types=("image/dicom-rle",)
    )
    assert got == [expected[1], expected[0]]
    # transfer-syntax=* with octet-stream: compressed bytes as stored, labelled
    answer = requests.get(
        f"{_instance_url(gateway, rle)}/frames/1",
        headers=gateway.headers(
            Accept='multipart/related; type="application/octet-stream"; transfer-syntax=*'
        ),
        timeout=30,
    )
    assert answer.status_code == 200
    assert list(client._decode_multipart_message(answer, stream=False)) == [expected[0]]
    jpeg = gateway.jpeg
    (frame,) = client.retrieve_instance_frames(
        jpeg.study, jpeg.series, jpeg.sop, frame_numbers=[1], media_types=("image/jpeg",)
    )
    assert frame == next(generate_frames(jpeg.ds.PixelData, number_of_frames=1))
    assert frame[:2] == b"\xff\xd8"  # a JPEG stream


def test_frames_needing_decoding_go_through_orthanc(gateway: Gateway) -> None:
    """RLE frames asked for uncompressed: Orthanc decodes them."""
    rle = gateway.rle
    client = gateway.client()
    (frame,) = client.retrieve_instance_frames(
        rle.study,
        rle.series,
        rle.sop,
        frame_numbers=[2],
        media_types=(("application/octet-stream", "1.2.840.10008.1.2.1"),),
    )
    assert frame == rle.ds.pixel_array[1].tobytes()


def test_frame_refusals(gateway: Gateway) -> None:
    mf = gateway.multiframe
    url = _instance_url(gateway, mf)
    out_of_range = requests.get(f"{url}/frames/4", headers=gateway.headers(), timeout=30)
    assert out_of_range.status_code == 404
    assert "3 frame(s)" in out_of_range.json()["message"]
    bad = requests.get(f"{url}/frames/0,x", headers=gateway.headers(), timeout=30)
    assert bad.status_code == 400
    unacceptable = requests.get(
        f"{url}/frames/1", headers=gateway.headers(Accept="text/html"), timeout=30
    )
    assert unacceptable.status_code == 406
    assert "multipart/related" in unacceptable.json()["message"]


def test_metadata_bulk_data_uri_is_retrievable(gateway: Gateway) -> None:
    client = gateway.client()
    for sent in (gateway.multiframe, gateway.ct[0]):
        document = client.retrieve_instance_metadata(sent.study, sent.series, sent.sop)
        uri = document["7FE00010"]["BulkDataURI"]
        assert uri == f"{_instance_url(gateway, sent)}/bulkdata/7FE00010"
        assert client.retrieve_bulkdata(uri) == [sent.ds.PixelData]
    rle = gateway.rle
    document = client.retrieve_instance_metadata(rle.study, rle.series, rle.sop)
    frames = client.retrieve_bulkdata(document["7FE00010"]["BulkDataURI"])
    assert frames == list(generate_frames(rle.ds.PixelData, number_of_frames=2))


def _image(data: bytes, kind: str) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    assert image.format == kind
    return image


def test_rendered_and_thumbnails_decode(gateway: Gateway) -> None:
    client = gateway.client()
    ct = gateway.ct[0]
    jpeg = client.retrieve_instance_rendered(
        ct.study, ct.series, ct.sop, media_types=("image/jpeg",), params={"quality": 80}
    )
    assert _image(jpeg, "JPEG").size == (SPEC.columns, SPEC.rows)
    png = requests.get(
        f"{_instance_url(gateway, ct)}/rendered",
        headers=gateway.headers(Accept="image/png"),
        timeout=30,
    )
    assert png.status_code == 200 and png.headers["Content-Type"] == "image/png"
    _image(png.content, "PNG")
    mf = gateway.multiframe
    frame = client.retrieve_instance_frames_rendered(
        mf.study, mf.series, mf.sop, frame_numbers=[2], media_types=("image/jpeg",)
    )
    assert _image(frame, "JPEG").size == (31, 33)
    urls = [
        f"{gateway.root}/studies/{gateway.study_uid}/thumbnail",
        f"{gateway.root}/studies/{ct.study}/series/{ct.series}/thumbnail",
        f"{_instance_url(gateway, ct)}/thumbnail",
        f"{_instance_url(gateway, mf)}/frames/1/thumbnail",
    ]
    for url in urls:
        answer = requests.get(url, headers=gateway.headers(Accept="image/jpeg"), timeout=30)
        assert answer.status_code == 200, url
        assert max(_image(answer.content, "JPEG").size) <= 128, url
    refused = requests.get(urls[0], headers=gateway.headers(Accept="application/dicom"), timeout=30)
    assert refused.status_code == 406
    # a rendered series: one image per instance when asked for a multipart
    in_series = [c for c in gateway.ct if c.series == ct.series]
    assert len(in_series) > 1
    many = requests.get(
        f"{gateway.root}/studies/{ct.study}/series/{ct.series}/rendered",
        headers=gateway.headers(Accept='multipart/related; type="image/jpeg"'),
        timeout=60,
    )
    assert many.status_code == 200
    images = multipart_parts(many.content, many.headers["Content-Type"])
    assert len(images) == len(in_series)
    assert all(_image(data, "JPEG").size == (SPEC.columns, SPEC.rows) for data in images)


def test_wado_uri(gateway: Gateway, archive: Archive) -> None:
    ct = gateway.ct[2]
    params = {
        "requestType": "WADO",
        "studyUID": ct.study,
        "seriesUID": ct.series,
        "objectUID": ct.sop,
        "contentType": "application/dicom",
    }
    answer = requests.get(
        f"{gateway.url}/wado", params=params, headers=gateway.headers(), timeout=60
    )
    assert answer.status_code == 200
    assert answer.headers["Content-Type"] == "application/dicom"
    orthanc_id = archive.lookup(ct.sop)
    assert orthanc_id is not None
    assert answer.content == archive.get(f"/instances/{orthanc_id}/file").content
    image = requests.get(
        f"{gateway.url}/wado",
        params={**params, "contentType": "image/jpeg", "rows": "32", "columns": "32"},
        headers=gateway.headers(),
        timeout=60,
    )
    assert image.status_code == 200
    assert max(_image(image.content, "JPEG").size) <= 32
    assert (
        requests.get(
            f"{gateway.url}/wado",
            params={**params, "requestType": "OTHER"},
            headers=gateway.headers(),
            timeout=30,
        ).status_code
        == 400
    )
    token = gateway.headers()["Authorization"].split()[1]
    in_query = requests.get(
        f"{gateway.url}/wado", params={**params, "access_token": token}, timeout=30
    )
    assert in_query.status_code == 401


def test_other_institution_gets_404_everywhere(gateway: Gateway) -> None:
    ct, mf = gateway.ct[0], gateway.multiframe
    instance = _instance_url(gateway, ct)
    urls = [
        f"{instance}/frames/1",
        f"{_instance_url(gateway, mf)}/frames/1,2",
        f"{instance}/bulkdata/7FE00010",
        f"{instance}/rendered",
        f"{instance}/frames/1/rendered",
        f"{gateway.root}/studies/{ct.study}/series/{ct.series}/rendered",
        f"{gateway.root}/studies/{gateway.study_uid}/thumbnail",
        f"{gateway.root}/studies/{ct.study}/series/{ct.series}/thumbnail",
        f"{instance}/thumbnail",
        f"{instance}/frames/1/thumbnail",
        f"{gateway.url}/wado?requestType=WADO&studyUID={ct.study}&seriesUID={ct.series}"
        f"&objectUID={ct.sop}&contentType=application/dicom",
        f"{gateway.url}/wado?requestType=WADO&studyUID={ct.study}&seriesUID={ct.series}"
        f"&objectUID={ct.sop}",
    ]
    headers = gateway.headers("Hospital B")
    for url in urls:
        answer = requests.get(url, headers=headers, timeout=30)
        assert answer.status_code == 404, url
        assert answer.json()["error"] == "not_found", url
    # and the owner reaches each of them
    for url in urls:
        assert requests.get(url, headers=gateway.headers(), timeout=30).status_code == 200, url


def test_study_retrieval_with_zstd_content_encoding(gateway: Gateway) -> None:
    """A client that accepts zstd gets the stored frames; decoded, the same instances."""
    url = f"{gateway.root}/studies/{gateway.study_uid}"
    accept = 'multipart/related; type="application/dicom"; transfer-syntax=*'
    plain = requests.get(
        url, headers=gateway.headers(Accept=accept, **{"Accept-Encoding": "identity"}), timeout=60
    )
    assert plain.status_code == 200
    assert "Content-Encoding" not in plain.headers
    packed = requests.get(
        url,
        headers=gateway.headers(Accept=accept, **{"Accept-Encoding": "gzip, deflate, br, zstd"}),
        timeout=60,
        stream=True,
    )
    assert packed.status_code == 200
    assert packed.headers["Content-Encoding"] == "zstd"
    assert "Accept-Encoding" in packed.headers["Vary"]
    wire = packed.raw.read(decode_content=False)
    assert len(wire) < len(plain.content)
    body = zstandard.ZstdDecompressor().decompressobj(read_across_frames=True).decompress(wire)
    got = multipart_parts(body, packed.headers["Content-Type"])
    expected = multipart_parts(plain.content, plain.headers["Content-Type"])
    assert got == expected
    assert len(got) == len(gateway.ct) + 3
    sops = {str(pydicom.dcmread(io.BytesIO(part)).SOPInstanceUID) for part in got}
    assert sops == {s.sop for s in [*gateway.ct, gateway.multiframe, gateway.rle, gateway.jpeg]}
    # zstd refused with q=0: identity
    refused = requests.get(
        url,
        headers=gateway.headers(Accept=accept, **{"Accept-Encoding": "zstd;q=0, identity"}),
        timeout=60,
    )
    assert "Content-Encoding" not in refused.headers
    assert multipart_parts(refused.content, refused.headers["Content-Type"]) == expected
