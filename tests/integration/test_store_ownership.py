"""Who may file instances under a Study Instance UID, over DIMSE and DICOMweb alike, and
what a stored file may carry, against a real archive with real clients.

* The first institution to store an instance of a study owns its UID: another's C-STORE or
  STOW-RS into it is refused with 0x0124 and stores nothing, whichever came first, even
  when both send the first instances of a new study at the same moment.
* A data set whose Pixel Data is shorter than its image, or whose declared lengths run
  past its end, is refused over C-STORE and STOW-RS.
* An executable preamble (CVE-2019-11687) never comes back out: it is zeroed at ingest.
"""

from __future__ import annotations

import copy
import io
import sqlite3
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pydicom
import pytest
import requests
import zstandard
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage

from security.issuer import EmbeddedIssuer
from synthetic import StudySpec, generate_study
from tests.integration.harness import INSTITUTIONS, Archive, gateway_process, multipart_parts

A, B = "Hospital A", "Hospital B"
AE_OF = {A: "HOSPA", B: "HOSPB"}
BOUNDARY = "ownership-test-boundary"
RELATED = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'


@dataclass
class Site:
    archive: Archive
    url: str
    issuer: EmbeddedIssuer

    def headers(self, institution: str, *scopes: str) -> dict[str, str]:
        token = self.issuer.mint(
            subject=f"own-{institution}",
            institution=institution,
            scopes=scopes or ("dicom.read", "dicom.write"),
        )
        return {"Authorization": f"Bearer {token}"}

    def stow(self, institution: str, *files: bytes) -> requests.Response:
        body = b""
        for data in files:
            body += f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
            body += data + b"\r\n"
        body += f"--{BOUNDARY}--\r\n".encode()
        return requests.post(
            f"{self.url}/dicom-web/studies",
            data=body,
            headers={**self.headers(institution), "Content-Type": RELATED},
            timeout=120,
        )

    def catalog(self, query: str, *params: Any) -> list[Any]:
        db = sqlite3.connect(self.archive.home / "catalog.db")
        try:
            return list(db.execute(query, params).fetchall())
        finally:
            db.close()

    def owner(self, study_uid: str) -> str | None:
        rows = self.catalog(
            "select i.name from study_claims c join institutions i on i.id = c.institution_id"
            " where c.study_uid = ?",
            study_uid,
        )
        return str(rows[0][0]) if rows else None


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    arch = Archive(tmp_path_factory.mktemp("vna-ownership") / "home")
    arch.write_config(INSTITUTIONS)
    arch.up()
    try:
        with gateway_process(arch, "ownership") as (url, _log):
            issuer = EmbeddedIssuer.open_or_create(arch.home / "keys", url, f"{url}/dicom-web")
            yield Site(arch, url, issuer)
    finally:
        arch.down()


def study(seed: int, slices: int = 2, patient_id: str = "OWN") -> list[Dataset]:
    spec = StudySpec(series=1, slices=slices, rows=32, columns=32, patient_id=patient_id, seed=seed)
    return list(generate_study(spec))


def part10(ds: Dataset, preamble: bytes | None = None) -> bytes:
    buffer = io.BytesIO()
    if preamble is not None:
        ds.preamble = preamble
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def renamed(ds: Dataset, **uids: str) -> Dataset:
    """A copy of ``ds`` with other UIDs: a new SOP instance unless told otherwise."""
    other = copy.deepcopy(ds)
    other.SOPInstanceUID = uids.pop("SOPInstanceUID", generate_uid())
    for keyword, value in uids.items():
        setattr(other, keyword, value)
    other.file_meta.MediaStorageSOPInstanceUID = other.SOPInstanceUID
    return other


def c_store(site: Site, institution: str, datasets: list[Dataset]) -> list[int]:
    """Send ``datasets`` over one association of the institution's AE (pynetdicom)."""
    ae = AE(ae_title=AE_OF[institution])
    # outcomes are asserted, not speed: a loaded CI machine once took over pynetdicom's
    # default 30 s to answer one of two parallel associations
    ae.dimse_timeout = 120
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", site.archive.dicom_port, ae_title=site.archive.aet)
    assert assoc.is_established
    try:
        statuses = []
        for ds in datasets:
            status = assoc.send_c_store(ds)
            assert status, "no C-STORE response"
            statuses.append(int(status.Status))
        return statuses
    finally:
        assoc.release()


def stored(site: Site, ds: Dataset) -> bool:
    return site.archive.lookup(str(ds.SOPInstanceUID)) is not None


def failure_reasons(answer: requests.Response) -> list[int]:
    body = pydicom.Dataset.from_json(answer.json())
    return [int(item.FailureReason) for item in body.get("FailedSOPSequence", [])]


# ------------------------------------------------------------------ items 1 and 2: ownership


def test_c_store_into_another_institutions_study_is_refused(site: Site) -> None:
    images = study(seed=101)
    assert c_store(site, A, images) == [0, 0]
    site.archive.stats()  # indexed
    before = site.archive.get(f"/studies/{_orthanc_study(site, images[0])}").json()

    intruder = renamed(images[0])
    assert c_store(site, B, [intruder, images[1]]) == [0x0124, 0x0124]
    assert not stored(site, intruder)
    # A's study is as it was: no instance joined, none replaced
    after = site.archive.get(f"/studies/{_orthanc_study(site, images[0])}").json()
    assert sorted(after["Series"]) == sorted(before["Series"])
    assert site.catalog(
        "select count(*) from instances where study_uid = ?", str(images[0].StudyInstanceUID)
    ) == [(2,)]
    assert site.catalog(
        "select count(*) from instance_sources s join institutions i"
        " on i.id = s.institution_id where i.name = ? and s.sop_uid = ?",
        B,
        str(images[1].SOPInstanceUID),
    ) == [(0,)]
    # the refusal is audited with its reason
    refused = [
        body
        for (body,) in site.catalog("select body from audit_events order by seq")
        if '"refused":"study owned by another"' in body and AE_OF[B] in body
    ]
    assert refused
    # the owner still re-sends and adds instances
    assert c_store(site, A, [images[0], renamed(images[1])]) == [0, 0]


def _orthanc_study(site: Site, ds: Dataset) -> str:
    orthanc_id = site.archive.lookup(str(ds.SOPInstanceUID))
    assert orthanc_id is not None
    return str(site.archive.get(f"/instances/{orthanc_id}/study").json()["ID"])


def test_a_study_uid_first_stored_by_b_is_never_handed_to_a_s_images(site: Site) -> None:
    images_a = study(seed=102, slices=3, patient_id="APATIENT")
    squat = renamed(study(seed=103, slices=1)[0], StudyInstanceUID=images_a[0].StudyInstanceUID)
    assert c_store(site, B, [squat]) == [0]
    assert site.owner(str(images_a[0].StudyInstanceUID)) == B

    # A's images of that study go nowhere: refused over DIMSE and over STOW-RS
    assert c_store(site, A, images_a[:2]) == [0x0124, 0x0124]
    answer = site.stow(A, part10(images_a[2]))
    assert answer.status_code == 409
    assert failure_reasons(answer) == [0x0124]
    assert not any(stored(site, ds) for ds in images_a)
    site.archive.stats()
    assert site.catalog("select count(*) from patients where patient_id = 'APATIENT'") == [(0,)]


def test_parallel_first_stores_of_a_new_study_have_one_winner(site: Site) -> None:
    images = study(seed=104, slices=8)
    study_uid = str(images[0].StudyInstanceUID)
    halves = {A: images[:4], B: [renamed(ds) for ds in images[4:]]}
    statuses: dict[str, list[int]] = {}
    start = threading.Barrier(2)

    def send(institution: str) -> None:
        start.wait()
        statuses[institution] = c_store(site, institution, halves[institution])

    threads = [threading.Thread(target=send, args=(name,)) for name in halves]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    winner = site.owner(study_uid)
    assert winner in (A, B)
    loser = B if winner == A else A
    assert statuses[winner] == [0, 0, 0, 0]
    assert statuses[loser] == [0x0124] * 4
    assert not any(stored(site, ds) for ds in halves[loser])
    site.archive.stats()  # the index agrees: the study is the winner's, with its 4 images
    assert site.catalog(
        "select i.name from studies s join institutions i on i.id = s.owner_institution_id"
        " where s.study_uid = ?",
        study_uid,
    ) == [(winner,)]
    assert site.catalog("select count(*) from instances where study_uid = ?", study_uid) == [(4,)]


def test_parallel_c_store_and_stow_of_a_new_study_have_one_winner(site: Site) -> None:
    images = study(seed=105, slices=6)
    study_uid = str(images[0].StudyInstanceUID)
    over_dimse, over_stow = images[:3], [renamed(ds) for ds in images[3:]]
    results: dict[str, Any] = {}
    start = threading.Barrier(2)

    def dimse() -> None:
        start.wait()
        results["dimse"] = c_store(site, A, over_dimse)

    def stow() -> None:
        start.wait()
        results["stow"] = site.stow(B, *(part10(ds) for ds in over_stow))

    threads = [threading.Thread(target=dimse), threading.Thread(target=stow)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    answer = results["stow"]
    if site.owner(study_uid) == A:
        assert results["dimse"] == [0, 0, 0]
        assert answer.status_code == 409 and failure_reasons(answer) == [0x0124] * 3
        assert not any(stored(site, ds) for ds in over_stow)
    else:
        assert site.owner(study_uid) == B
        assert answer.status_code == 200
        assert results["dimse"] == [0x0124] * 3
        assert not any(stored(site, ds) for ds in over_dimse)


def test_a_sop_instance_of_another_study_is_refused_under_a_new_study(site: Site) -> None:
    images = study(seed=106, slices=1)
    assert c_store(site, A, images) == [0]
    # B's own new study, but A's SOP Instance UID: it would be filed over A's instance
    copy = renamed(
        images[0], SOPInstanceUID=str(images[0].SOPInstanceUID), StudyInstanceUID=generate_uid()
    )
    assert c_store(site, B, [copy]) == [0x0124]
    assert failure_reasons(site.stow(B, part10(copy))) == [0x0124]
    assert site.owner(str(copy.StudyInstanceUID)) is None  # a refusal claims nothing


# ------------------------------------------------------------------ item 5: incomplete data


def test_c_store_with_short_pixel_data_is_refused(site: Site) -> None:
    ds = renamed(study(seed=107, slices=1)[0])
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]  # pynetdicom sends it as it is
    assert c_store(site, A, [ds]) == [0xA900]
    assert not stored(site, ds)
    assert site.owner(str(ds.StudyInstanceUID)) is None


def test_stow_of_a_truncated_file_is_refused(site: Site) -> None:
    whole, short = study(seed=108, slices=2)
    cut = part10(whole)[:-300]  # Pixel Data declares 300 bytes more than the file holds
    short.PixelData = short.PixelData[:100]
    answer = site.stow(A, cut, part10(short))
    assert answer.status_code == 409
    assert failure_reasons(answer) == [0xC000, 0xA900]
    assert not stored(site, whole) and not stored(site, short)


# ------------------------------------------------------------------ item 6: preambles

ELF = b"\x7fELF\x02\x01\x01" + bytes(9) + b"\x02\x00\x3e\x00" + b"\x01" * 108
PE = b"MZ\x90\x00" + b"\x41" * 124
TIFF = b"II*\x00\x08\x00\x00\x00" + bytes(120)


@pytest.mark.parametrize(("preamble", "kept"), [(ELF, False), (PE, False), (TIFF, True)])
def test_an_executable_preamble_never_comes_back(site: Site, preamble: bytes, kept: bool) -> None:
    ds = renamed(study(seed=109, slices=1)[0], StudyInstanceUID=generate_uid())
    sent = part10(ds, preamble)
    assert sent[:128] == preamble
    answer = site.stow(A, sent)
    assert answer.status_code == 200, answer.text
    expected = sent if kept else bytes(128) + sent[128:]
    study_uid, series_uid, sop_uid = (
        str(ds.StudyInstanceUID),
        str(ds.SeriesInstanceUID),
        str(ds.SOPInstanceUID),
    )
    site.archive.stats()

    # Orthanc's own REST API
    orthanc_id = site.archive.lookup(sop_uid)
    assert orthanc_id is not None
    assert site.archive.get(f"/instances/{orthanc_id}/file").content == expected
    # WADO-RS, identity and zstd transfer coding (stored frames sent as they are)
    url = f"{site.url}/dicom-web/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}"
    accept = {"Accept": 'multipart/related; type="application/dicom"'}
    plain = requests.get(
        url, headers={**site.headers(A), **accept, "Accept-Encoding": "identity"}, timeout=60
    )
    assert plain.status_code == 200
    assert multipart_parts(plain.content, plain.headers["Content-Type"]) == [expected]
    packed = requests.get(
        url, headers={**site.headers(A), **accept, "Accept-Encoding": "zstd"}, timeout=60,
        stream=True,
    )  # fmt: skip
    assert packed.status_code == 200
    assert packed.headers.get("Content-Encoding") == "zstd"
    raw = packed.raw.read(decode_content=False)
    body = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True).read()
    assert multipart_parts(body, packed.headers["Content-Type"]) == [expected]
    # WADO-URI
    uri = requests.get(
        f"{site.url}/wado",
        params={
            "requestType": "WADO",
            "studyUID": study_uid,
            "seriesUID": series_uid,
            "objectUID": sop_uid,
            "contentType": "application/dicom",
        },
        headers=site.headers(A),
        timeout=60,
    )
    assert uri.status_code == 200
    assert uri.content == expected
    # the ZIP download (Orthanc's DICOMDIR media of the stored files)
    download = requests.get(
        f"{site.url}/api/studies/{study_uid}/archive",
        headers=site.headers(A, "dicom.read", "export"),
        timeout=60,
    )
    assert download.status_code == 200
    with zipfile.ZipFile(io.BytesIO(download.content)) as media:
        (name,) = [n for n in media.namelist() if not n.endswith(("/", "DICOMDIR"))]
        assert media.read(name)[:132] == expected[:132]
