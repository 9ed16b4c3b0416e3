"""QIDO-RS conformance: the gateway's answers against Orthanc's own DICOMweb plugin.

Both answer on the same data: a few synthetic studies (varied names, dates, modalities,
accession numbers; one study with two modalities) stored by Hospital A into one archive.
The gateway is asked with an admin-scoped token of Hospital A, which owns every study, so
both sides should see the same studies. For each query the matched UID sets must be equal
and every attribute both sides return must have the same value.

Normalised, because PS3.18 leaves it open: the order of results (compared as sets, and
paging as a partition of the full result), attributes only one side returns (listed per
side below with the reason), the order of ModalitiesInStudy's values, and the host part
of Retrieve URL.

Where our answer legitimately differs from Orthanc 1.10.1 / DICOMweb plugin 1.7, the case
says so with the reason and asserts *both* answers, so a change on either side shows up.

How the two are asked, and the comparison itself: ``tests/integration/dicomweb_compare.py``
(shared with the comparison against a stock Orthanc peer on real data,
``test_conformance_orthanc.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests

from security.issuer import EmbeddedIssuer
from synthetic import StudySpec, write_study
from tests.integration.dicomweb_compare import (
    Params,
    by_uid,
    check_paging,
    orthanc_version,
    raw_get,
    uid_tag,
)
from tests.integration.dicomweb_compare import compare as compare_answers
from tests.integration.dicomweb_compare import params as _p
from tests.integration.harness import Archive, wait_until


def _spec(modality: str, patient: str, name: str, date: str, seed: int, **size: int) -> StudySpec:
    shape = {"series": 2, "slices": 2, "rows": 16, "columns": 16} | size
    return StudySpec(
        modality, patient_id=patient, patient_name=name, study_date=date, seed=seed, **shape
    )


SPECS = (
    _spec("CT", "QP001", "Doe^Jane", "20200315", 101),
    _spec("MR", "QP001", "Doe^Jane", "20200101", 102),
    _spec("MR", "QP002", "Doe^John", "20201231", 103),
    _spec("CT", "QP003", "Smith^Anna", "20190101", 104),
    _spec("MR", "QP004", "van der Berg^Piet", "20210610", 105),
    _spec("CT", "QP005", "Smythe^Bob", "20211120", 106, series=1, slices=3),
)
# one CT series moved into the MR study of QP002: a study with ModalitiesInStudy CT and MR
EXTRA = _spec("CT", "QP002", "Doe^John", "20201231", 107, series=1)
N_INSTANCES = sum(s.series * s.slices for s in SPECS) + EXTRA.series * EXTRA.slices
STUDY_KEYS = ("StudyInstanceUID", "StudyDate", "StudyTime", "AccessionNumber", "StudyID")
STUDY_KEYS += ("StudyDescription",)
PATIENT_KEYS = ("PatientBirthDate", "PatientSex")

# Attributes Orthanc returns and the gateway does not, for every query: the reason.
ORTHANC_ONLY = {
    # DICOM JSON is always UTF-8 (PS3.18 F.2); the catalog keeps decoded text, not the
    # stored character set, so there is nothing for SpecificCharacterSet to say (with
    # includefield=all an instance answers its header's value, Orthanc its own default:
    # docs/conformance.md, qido-charset; compared by test_conformance_orthanc.py)
    "00080005": "SpecificCharacterSet",
}
# Orthanc also repeats the study's attributes in a search scoped to one study
# (/studies/{uid}/series, /studies/{uid}/instances); PS3.18 10.6.3.3 asks for the study
# attributes only when the search is not limited to one study, and the client has them.
STUDY_ATTRIBUTES = {"00080020", "00080030", "00080050", "00080090", "00100010", "00100020"}
STUDY_ATTRIBUTES |= {"00100030", "00100040", "00200010"}


def _normalise_patients(files: list[Path]) -> None:
    """Give every study of a patient the same birth date and sex.

    The generator derives them per study; the catalog keeps one row per patient (latest
    indexed wins) while Orthanc answers each study with that study's own copy, so
    contradicting demographics would differ by design, not by a matching bug.
    """
    first: dict[str, pydicom.Dataset] = {}
    for path in files:
        ds = pydicom.dcmread(path)
        seen = first.setdefault(str(ds.PatientID), ds)
        if seen is not ds:
            for keyword in PATIENT_KEYS:
                setattr(ds, keyword, getattr(seen, keyword))
            ds.save_as(path)


def write_dataset(directory: Path) -> list[Path]:
    """The synthetic studies, written once for both sides."""
    files: list[Path] = []
    for k, spec in enumerate(SPECS):
        files += write_study(spec, directory / f"study{k}")
    host = pydicom.dcmread(directory / "study2" / _first(directory / "study2"))
    for path in write_study(EXTRA, directory / "extra"):
        ds = pydicom.dcmread(path)
        for keyword in STUDY_KEYS:
            setattr(ds, keyword, getattr(host, keyword))
        ds.save_as(path)
        files.append(path)
    _normalise_patients(files)
    return files


def _first(directory: Path) -> Path:
    return min(p for p in directory.rglob("*") if p.is_file()).relative_to(directory)


@dataclass
class Pair:
    """The gateway and Orthanc's DICOMweb of one archive, holding the same data."""

    archive: Archive
    token: str
    study_uids: dict[str, str]  # study uid -> patient id

    @property
    def gateway_root(self) -> str:
        return f"http://127.0.0.1:{self.archive.http_port}/dicom-web"

    def ours(self, path: str, params: Params = ()) -> requests.Response:
        return requests.get(
            self.gateway_root + path,
            params=list(params),
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=60,
        )

    def orthanc(self, path: str, params: Params = ()) -> tuple[int, Any]:
        """GET from Orthanc's DICOMweb with the query string unencoded."""
        answer = raw_get(
            self.archive.orthanc_port, "/dicom-web" + path, params, auth=self.archive.auth
        )
        ok = answer.status == 200 and answer.body
        return answer.status, answer.json() if ok else answer.body

    def orthanc_version(self) -> tuple[int, ...]:
        return orthanc_version(self.archive.orthanc_url, self.archive.auth)

    def both(self, path: str, params: Params) -> tuple[list[Any], list[Any]]:
        ours = self.ours(path, params)
        assert ours.status_code == 200, ours.text
        status, theirs = self.orthanc(path, params)
        assert status == 200, theirs
        return list(ours.json()), list(theirs)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    # an archive of its own: the session archive holds other tests' studies, some of
    # another institution, which Orthanc's DICOMweb would show and the gateway would not
    arch = Archive(tmp_path_factory.mktemp("qido-home"))
    arch.write_config({"Hospital A": ["HOSPA"]})
    arch.up()
    try:
        files = write_dataset(tmp_path_factory.mktemp("qido-data"))
        sent = arch.storescu("HOSPA", *files)
        assert sent.returncode == 0, sent.stderr
        url = f"http://127.0.0.1:{arch.http_port}"
        wait_until(lambda: requests.get(f"{url}/healthz", timeout=5).ok, "the gateway")
        issuer = EmbeddedIssuer.open_or_create(arch.home / "keys", url, f"{url}/dicom-web")
        token = issuer.mint(
            subject="qido-conformance", institution="Hospital A", scopes=("dicom.read", "admin")
        )
        uids = {}
        for path in files:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            uids[str(ds.StudyInstanceUID)] = str(ds.PatientID)
        result = Pair(arch, token, uids)

        def indexed() -> bool:
            answer = result.ours("/instances")
            return answer.ok and len(answer.json()) == N_INSTANCES

        wait_until(indexed, "the catalog to index every instance")
        status, theirs = result.orthanc("/instances")
        assert status == 200 and len(theirs) == N_INSTANCES
        yield result
    finally:
        arch.down()


# --------------------------------------------------------------------------- comparing


def compare(path: str, ours: list[Any], theirs: list[Any]) -> set[str]:
    """Equal UID sets and equal common values; Orthanc's extra attributes as listed above."""
    scoped = path.startswith("/studies/")
    allowed = set(ORTHANC_ONLY) | (STUDY_ATTRIBUTES if scoped else set())
    return compare_answers(
        path, ours, theirs, theirs_only=allowed, skip=lambda tag, _a, _b: tag in ORTHANC_ONLY
    )


# --------------------------------------------------------------------------- equal answers

SAME = [
    # study level: exact, wildcards, ranges, lists, includefield
    ("/studies", ""),
    ("/studies", "PatientID=QP001"),
    ("/studies", "PatientName=Doe^Jane"),
    ("/studies", "PatientName=doe^JANE"),  # PN: case-insensitive on both sides
    ("/studies", "PatientName=Doe*"),
    ("/studies", "PatientName=*an*"),
    ("/studies", "PatientName=Sm?th*"),
    ("/studies", "PatientName=VAN*"),
    ("/studies", "PatientName="),  # universal matching
    ("/studies", "PatientName=*"),
    ("/studies", "PatientID=QP00?"),
    ("/studies", "AccessionNumber=SYN5*"),
    ("/studies", "StudyDescription=MR*"),
    ("/studies", "StudyDate=20200101-20201231"),
    ("/studies", "StudyDate=20200101"),
    ("/studies", "StudyDate=20201231-"),
    ("/studies", "StudyDate=-20200101"),
    ("/studies", "StudyTime=080000-120000"),
    ("/studies", "StudyTime=1200-"),
    ("/studies", "StudyTime=-0900"),
    ("/studies", "PatientBirthDate=19000101-19600101"),
    ("/studies", "PatientSex=F"),
    ("/studies", "ModalitiesInStudy=CT"),
    ("/studies", "ModalitiesInStudy=MR"),
    ("/studies", "ModalitiesInStudy=CT,MR"),
    ("/studies", "StudyDate=20200101-20201231&ModalitiesInStudy=MR"),
    ("/studies", "includefield=all"),
    ("/studies", "includefield=StudyDescription"),
    ("/studies", "includefield=00081030,00100021"),
    ("/studies", "limit=0"),  # no limit, the server's maximum (Orthanc: all)
    # series level
    ("/series", ""),
    ("/series", "Modality=CT"),
    ("/series", "Modality=CT,MR"),
    ("/series", "SeriesDescription=Ax*"),
    ("/series", "SeriesNumber=1"),
    ("/series", "PatientID=QP001"),
    ("/series", "StudyDate=20200101-20201231"),
    ("/series", "StudyDate=20201231-"),
    ("/series", "includefield=all"),
    # instance level
    ("/instances", ""),
    ("/instances", "SOPClassUID=1.2.840.10008.5.1.4.1.1.2"),
    ("/instances", "InstanceNumber=1"),
    ("/instances", "PatientName=Doe*"),
    ("/instances", "includefield=all"),
]


@pytest.mark.parametrize(("path", "query"), SAME, ids=[f"{p}?{q}" for p, q in SAME])
def test_same_answer_as_orthanc(pair: Pair, path: str, query: str) -> None:
    ours, theirs = pair.both(path, _p(query))
    compare(path, ours, theirs)


def test_uid_lists_and_study_scoped_searches(pair: Pair) -> None:
    s1, s2 = sorted(pair.study_uids)[:2]
    for path, query in [
        ("/studies", f"StudyInstanceUID={s1},{s2}"),
        ("/series", f"StudyInstanceUID={s1},{s2}"),
        ("/instances", f"StudyInstanceUID={s1}"),
        (f"/studies/{s1}/series", ""),
        (f"/studies/{s1}/series", "Modality=CT"),
        (f"/studies/{s1}/instances", ""),
    ]:
        ours, theirs = pair.both(path, _p(query))
        assert compare(path, ours, theirs), (path, query)
    series_uids = [r["0020000E"]["Value"][0] for r in pair.ours(f"/studies/{s1}/series").json()]
    path = f"/studies/{s1}/series/{series_uids[0]}/instances"
    ours, theirs = pair.both(path, ())
    sops = sorted(compare(path, ours, theirs))
    assert len(sops) >= 2
    path = f"/studies/{s1}/instances"
    ours, theirs = pair.both(path, _p(f"SOPInstanceUID={sops[0]},{sops[1]}"))
    assert compare(path, ours, theirs) == {sops[0], sops[1]}


def test_the_two_modality_study(pair: Pair) -> None:
    ours, theirs = pair.both("/studies", _p("PatientID=QP002"))
    compare("/studies", ours, theirs)
    (study,) = ours
    assert study["00080061"]["Value"] == ["CT", "MR"]
    assert study["00201206"]["Value"] == [3]


@pytest.mark.parametrize(
    ("path", "size"), [("/studies", 2), ("/series", 5), ("/instances", 7)], ids=str
)
def test_paging_partitions_the_same_results(pair: Pair, path: str, size: int) -> None:
    check_paging(pair.both, path, size)


# --------------------------------------------------------------------------- differences


def _uids(results: list[Any], path: str) -> set[str]:
    return set(by_uid(results, uid_tag(path)))


@pytest.mark.parametrize(
    ("query", "upper"),
    [
        ("AccessionNumber=syn5*", "AccessionNumber=SYN5*"),
        ("PatientID=qp001", "PatientID=QP001"),
        ("StudyDescription=mr*", "StudyDescription=MR*"),
    ],
)
def test_non_pn_matching_is_case_sensitive_unlike_orthanc(
    pair: Pair, query: str, upper: str
) -> None:
    """PS3.4 C.2.2.2.1 and C.2.2.2.4: single value and wild card matching are
    case-sensitive for every VR except PN. Orthanc 1.10 compares identifiers and its
    other main DICOM tags case-insensitively, so it matches the upper-case values."""
    ours, theirs = pair.both("/studies", _p(query))
    assert ours == []
    exact_case, _ = pair.both("/studies", _p(upper))
    assert _uids(theirs, "/studies") == _uids(exact_case, "/studies") != set()


@pytest.mark.parametrize("key", ["ModalitiesInStudy", "StudyInstanceUID"])
def test_backslash_value_lists_orthanc_drops_the_backslash(pair: Pair, key: str) -> None:
    """DICOM separates multiple values with a backslash; the gateway takes it in a QIDO
    list as it takes a comma. Orthanc 1.10's HTTP server removes ``\\`` from the query
    string (the plugin logs ``CTMR`` for ``CT\\MR``), so Orthanc matches nothing."""
    values = ("CT", "MR") if key == "ModalitiesInStudy" else tuple(sorted(pair.study_uids)[:2])
    query = ((key, "\\".join(values)),)
    ours, theirs = pair.both("/studies", query)
    comma, _ = pair.both("/studies", ((key, ",".join(values)),))
    assert _uids(ours, "/studies") == _uids(comma, "/studies") != set()
    assert theirs == []


@pytest.mark.parametrize(
    ("query", "orthanc_status", "why"),
    [
        ("NoSuchKey=1", 200, "not a DICOM attribute (PS3.18 8.3.4): Orthanc ignores it"),
        ("StudyDate=garbage", 200, "not a DA value or range: Orthanc matches nothing"),
        ("SeriesInstanceUID=1.2.3", 200, "a series key in a study search: Orthanc matches nothing"),
        # Orthanc 1.10 fails with an internal error (500); 1.12 ignores it (200)
        ("limit=-1", None, "not a non-negative integer"),
    ],
)
def test_malformed_queries_are_refused(
    pair: Pair, query: str, orthanc_status: int | None, why: str
) -> None:
    """The gateway answers 400 with a readable message rather than guessing."""
    ours = pair.ours("/studies", _p(query))
    assert ours.status_code == 400, why
    assert ours.json()["error"] == "invalid_input"
    status, _ = pair.orthanc("/studies", _p(query))
    if orthanc_status is None:
        orthanc_status = 500 if pair.orthanc_version() < (1, 12) else 200
    assert status == orthanc_status, why


@pytest.mark.parametrize("path", ["/studies", "/instances", "/studies/{study}/instances"])
def test_instance_availability_and_bits_allocated_are_returned(pair: Pair, path: str) -> None:
    """PS3.18 Table 10.6.3-3 and -5: Instance Availability (study and instance level) and
    Bits Allocated (instance level) are returned when known. Orthanc 1.12 returns both at
    instance level, 1.10 only Bits Allocated; where Orthanc has them, values must agree
    (``compare``)."""
    path = path.format(study=sorted(pair.study_uids)[0])
    ours, theirs = pair.both(path, ())
    compare(path, ours, theirs)
    assert ours
    for result in ours:
        assert result["00080056"] == {"vr": "CS", "Value": ["ONLINE"]}
        if path.endswith("/instances"):
            assert result["00280100"] == {"vr": "US", "Value": [16]}
        else:
            assert "00280100" not in result
