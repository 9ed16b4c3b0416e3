"""Names in every script, end to end: pydicom's character-set files stored with dcmtk's
storescu, found again by dcmtk findscu, pynetdicom and dicomweb-client.

Person names match case-insensitively in every script (the exact stored value, another
case, wild cards, any one component group), and C-FIND answers carry the names as stored,
in a character set that can hold them and that the answer names (ISO_IR 192).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.data import get_charset_files
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

from security.issuer import EmbeddedIssuer
from tests.integration.harness import INSTITUTIONS, Archive, gateway_process, wait_until

STEMS = ("chrFren", "chrGerm", "chrGreek", "chrRuss", "chrH31", "chrH32", "chrX1", "chrX2")

# (query value, files expected): the stored value, another case, wild cards, one group
CASES = [
    ("Äneas^Rüdiger", ["chrGerm"]),
    ("ÄNEAS^RÜDIGER", ["chrGerm"]),
    ("Äneas*", ["chrGerm"]),
    ("buc^jérôme", ["chrFren"]),
    ("Διονυσιος", ["chrGreek"]),
    ("ΔΙΟΝΥΣΙΟΣ", ["chrGreek"]),
    ("διον*", ["chrGreek"]),
    ("Люкceмбypг", ["chrRuss"]),
    ("ЛЮК*", ["chrRuss"]),
    ("Yamada^Tarou=山田^太郎=やまだ^たろう", ["chrH31"]),
    ("yamada^tarou", ["chrH31"]),
    ("山田^太郎", ["chrH31", "chrH32"]),
    ("Wang^XiaoDong=王^小東", ["chrX1"]),
    ("王^小东", ["chrX2"]),
    ("WANG*", ["chrX1", "chrX2"]),
]


@dataclass
class Stored:
    archive: Archive
    gateway_url: str
    issuer: EmbeddedIssuer
    study_of: dict[str, str]  # file stem -> Study Instance UID as stored
    name_of: dict[str, str]  # file stem -> PatientName, decoded from the file's charset

    def stem(self, study_uid: str) -> str:
        return {uid: stem for stem, uid in self.study_of.items()}[study_uid]

    def client(self) -> DICOMwebClient:
        token = self.issuer.mint(
            subject="client-Hospital A", institution="Hospital A", scopes=("dicom.read",)
        )
        return DICOMwebClient(
            url=f"{self.gateway_url}/dicom-web", headers={"Authorization": f"Bearer {token}"}
        )


def _copy_with_new_uids(stem: str, out: Path) -> tuple[Path, str, str]:
    """The charset file under fresh UIDs and Patient ID, its name bytes untouched."""
    (source,) = get_charset_files(f"{stem}.dcm")
    ds = pydicom.dcmread(source)
    raw_name = ds.get_item(0x00100010).value  # never decoded: written back as read
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.PatientID = f"{stem.upper()}-{ds.StudyInstanceUID[-8:]}"
    path = out / f"{stem}.dcm"
    ds.save_as(path, enforce_file_format=True)
    assert pydicom.dcmread(path).get_item(0x00100010).value == raw_name
    return path, str(ds.StudyInstanceUID), str(pydicom.dcmread(source).PatientName)


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stored]:
    home = tmp_path_factory.mktemp("vna-charsets")
    arch = Archive(home / "home")
    arch.write_config(INSTITUTIONS)
    arch.up()
    try:
        files = home / "files"
        files.mkdir()
        study_of, name_of, paths = {}, {}, []
        for stem in STEMS:
            path, study_uid, name = _copy_with_new_uids(stem, files)
            paths.append(path)
            study_of[stem], name_of[stem] = study_uid, name
        sent = arch.storescu("HOSPA", *paths)
        assert sent.returncode == 0, sent.stderr
        arch.stats()  # indexed: the catalog answers
        with gateway_process(arch, "charsets") as (url, _log):
            issuer = EmbeddedIssuer.open_or_create(arch.home / "keys", url, f"{url}/dicom-web")
            yield Stored(arch, url, issuer, study_of, name_of)
    finally:
        arch.down()


def _joined(pn: dict[str, str]) -> str:
    """A DICOM JSON person name as one PN string (groups joined by ``=``)."""
    groups = [pn.get(k, "") for k in ("Alphabetic", "Ideographic", "Phonetic")]
    return "=".join(groups).rstrip("=")


@pytest.mark.parametrize(("value", "expected"), CASES)
def test_findscu_matches_and_returns_names(
    stored: Stored, tmp_path: Path, value: str, expected: list[str]
) -> None:
    out = tmp_path / "rsp"
    out.mkdir()
    keys = [
        "QueryRetrieveLevel=STUDY",
        "SpecificCharacterSet=ISO_IR 192",  # the value below as this process passes it
        f"PatientName={value}",
        "StudyInstanceUID",
    ]
    proc = subprocess.run(
        ["findscu", "-S", "-aet", "HOSPA", "-aec", stored.archive.aet, "-X", "-od", str(out),
         *[a for k in keys for a in ("-k", k)], "127.0.0.1", str(stored.archive.dicom_port)],
        capture_output=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    answers = [pydicom.dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]
    assert sorted(stored.stem(str(a.StudyInstanceUID)) for a in answers) == sorted(expected)
    for answer in answers:
        assert answer.SpecificCharacterSet == "ISO_IR 192"
        stem = stored.stem(str(answer.StudyInstanceUID))
        assert str(answer.PatientName) == stored.name_of[stem]


def _pynetdicom_find(arch: Archive, query: Dataset) -> list[Dataset]:
    ae = AE(ae_title="HOSPA")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", arch.dicom_port, ae_title=arch.aet)
    assert assoc.is_established
    answers, statuses = [], []
    try:
        for status, identifier in assoc.send_c_find(
            query, StudyRootQueryRetrieveInformationModelFind
        ):
            statuses.append(int(status.Status))
            if identifier is not None:
                answers.append(identifier)
    finally:
        assoc.release()
    assert statuses[-1] == 0x0000
    return answers


@pytest.mark.parametrize("stem", STEMS)
def test_c_find_answers_carry_every_name(stored: Stored, tmp_path: Path, stem: str) -> None:
    """Found by an ASCII key, the name comes back as stored, whatever its script, in a
    character set the answer names (PS3.4 C.4.1.1.3.2)."""
    study_uid = stored.study_of[stem]
    out = tmp_path / "rsp"
    out.mkdir()
    keys = ["QueryRetrieveLevel=STUDY", f"StudyInstanceUID={study_uid}", "PatientName"]
    proc = subprocess.run(
        ["findscu", "-S", "-aet", "HOSPA", "-aec", stored.archive.aet, "-X", "-od", str(out),
         *[a for k in keys for a in ("-k", k)], "127.0.0.1", str(stored.archive.dicom_port)],
        capture_output=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study_uid
    query.PatientName = ""
    answers = [pydicom.dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]
    answers += _pynetdicom_find(stored.archive, query)
    assert len(answers) == 2
    for answer in answers:
        assert str(answer.PatientName) == stored.name_of[stem]
        assert answer.SpecificCharacterSet == "ISO_IR 192"


# the query in the character set of the file it looks for, as that hospital's PACS sends it
QUERIES = [
    ("ISO_IR 100", "ÄNEAS^RÜDIGER", "chrGerm"),
    ("ISO_IR 100", "Buc^Jérôme", "chrFren"),
    ("ISO_IR 126", "ΔΙΟΝΥΣΙΟΣ", "chrGreek"),
    ("ISO_IR 144", "люкceмбypг", "chrRuss"),
    (["", "ISO 2022 IR 87"], "Yamada^Tarou=山田^太郎=やまだ^たろう", "chrH31"),
    # Orthanc decodes a query under "ISO 2022 IR 13\\ISO 2022 IR 87" by its first term
    # only, so kanji in it reach the archive garbled; half-width katakana arrive intact
    (["ISO 2022 IR 13", "ISO 2022 IR 87"], "ﾔﾏﾀﾞ^ﾀﾛｳ", "chrH32"),
    ("ISO_IR 192", "Wang^XiaoDong=王^小東", "chrX1"),
    ("GB18030", "Wang^XiaoDong=王^小东", "chrX2"),
]


@pytest.mark.parametrize(("charset", "value", "stem"), QUERIES)
def test_pynetdicom_finds_names_in_their_own_character_set(
    stored: Stored, charset: str | list[str], value: str, stem: str
) -> None:
    query = Dataset()
    query.SpecificCharacterSet = charset
    query.QueryRetrieveLevel = "STUDY"
    query.PatientName = value
    query.StudyInstanceUID = ""
    query.PatientID = ""
    answers = _pynetdicom_find(stored.archive, query)
    assert [str(a.StudyInstanceUID) for a in answers] == [stored.study_of[stem]]
    (answer,) = answers
    assert answer.SpecificCharacterSet == "ISO_IR 192"
    assert str(answer.PatientName) == stored.name_of[stem]


@pytest.mark.parametrize(("value", "expected"), CASES)
def test_qido_matches_and_returns_names(stored: Stored, value: str, expected: list[str]) -> None:
    client = stored.client()
    found = client.search_for_studies(search_filters={"PatientName": value})
    assert sorted(stored.stem(s["0020000D"]["Value"][0]) for s in found) == sorted(expected)
    for study in found:
        stem = stored.stem(study["0020000D"]["Value"][0])
        assert _joined(study["00100010"]["Value"][0]) == stored.name_of[stem]


def test_the_archive_answers_qido_once_indexed(stored: Stored) -> None:
    """Every stored file is searchable (guards the cases above against an empty index)."""

    def all_there() -> bool:
        return len(stored.client().search_for_studies()) == len(STEMS)

    wait_until(all_there, "every charset file in QIDO")


def test_answers_in_the_configured_character_set(tmp_path: Path) -> None:
    """``dicom_answer_charset``, for workstations that cannot read ISO_IR 192: Orthanc
    converts the answers, and names the set it used."""
    arch = Archive(tmp_path / "home")
    arch.write_config(INSTITUTIONS, dicom_answer_charset="ISO_IR 126")
    arch.up()
    try:
        path, study_uid, name = _copy_with_new_uids("chrGreek", tmp_path)
        sent = arch.storescu("HOSPA", path)
        assert sent.returncode == 0, sent.stderr
        arch.stats()
        query = Dataset()
        query.SpecificCharacterSet = "ISO_IR 126"
        query.QueryRetrieveLevel = "STUDY"
        query.PatientName = "ΔΙΟΝΥΣΙΟΣ"
        query.StudyInstanceUID = ""
        (answer,) = _pynetdicom_find(arch, query)
        assert str(answer.StudyInstanceUID) == study_uid
        assert answer.SpecificCharacterSet == "ISO_IR 126"
        assert str(answer.PatientName) == name
    finally:
        arch.down()
