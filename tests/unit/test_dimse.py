"""C-FIND and C-MOVE for the calling AE's institution: the handlers (dimse/) on a
real SQLite catalog, and the Orthanc adapter (archive.plugin) driven by a fake SDK."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from sqlalchemy import create_engine, inspect
from sqlalchemy.exc import OperationalError

from archive.catalog import Catalog, InstanceRecord, Institution, SourceRecord, metadata
from archive.credentials import OrthancCredentials
from archive.plugin import ArchivePlugin, MoveDestinationUnknown, register
from archive.scp import FindRequest, MoveRequest, modality_entry
from archive.settings import StorageSettings
from compose.settings import load_settings
from deploy.orthanc_config import orthanc_config
from dimse import handlers
from dimse.api import find, move
from query.api import ATTRIBUTES, Attribute, element
from security.audit import AuditLog
from security.errors import Forbidden, InvalidInput, NotFound, VnaError
from tests.catalogdb import migrated
from tests.unit.support import FakeSdk

pytestmark = pytest.mark.usefixtures("restore_root_logger")

STUDY_UID, SERIES_UID, SOP_UID = 0x0020000D, 0x0020000E, 0x00080018
PATIENT_ID, PATIENT_NAME, STUDY_DATE = 0x00100020, 0x00100010, 0x00080020
MODALITY, PERFORMING_PHYSICIAN = 0x00080060, 0x00081050


def rec(n: int, **kw: object) -> InstanceRecord:
    base: dict[str, object] = {
        "sop_uid": f"1.2.3.{n}",
        "series_uid": "1.2.2.1",
        "study_uid": "1.2.1.1",
        "patient_id": "P1",
        "issuer": "Hospital A",
        "patient_name": "Doe^Jane",
        "study_date": "20250110",
        "accession_number": "ACC1",
        "modality": "CT",
        "series_number": 1,
        "instance_number": n,
        "transfer_syntax": "1.2.840.10008.1.2.1",
        "attachment_uuid": f"att-{n}",
        "orthanc_id": f"orth-{n}",
    }
    base.update(kw)
    return InstanceRecord(**base)  # type: ignore[arg-type]


def fill(catalog: Catalog) -> None:
    """Hospital A owns studies 1.2.1.1 (two series) and 1.2.1.2; Hospital B owns 1.2.1.3."""
    a = catalog.add_institution("Hospital A", "HOSPA").id
    b = catalog.add_institution("Hospital B", "HOSPB").id
    records = [
        rec(1),
        rec(2),
        rec(3, series_uid="1.2.2.2", modality="SR", series_number=2),
        rec(4, study_uid="1.2.1.2", series_uid="1.2.2.3", study_date="20250301",
            accession_number="ACC2", modality="MR"),
        rec(5, study_uid="1.2.1.3", series_uid="1.2.2.4", patient_id="P3", issuer="Hospital B",
            patient_name="Doe^John", study_date="20250115"),
    ]  # fmt: skip
    sources = [SourceRecord(f"1.2.3.{n}", a, "dimse", "HOSPA") for n in (1, 2, 3, 4)]
    sources.append(SourceRecord("1.2.3.5", b, "dimse", "HOSPB"))
    catalog.index_batch(records, sources)


@pytest.fixture
def cat(tmp_path: Path) -> Iterator[Catalog]:
    catalog = Catalog(migrated(f"sqlite:///{tmp_path / 'catalog.db'}"), durable=False)
    fill(catalog)
    yield catalog
    catalog.close()


def test_queries_leave_the_schema_to_migrations_and_fixtures(tmp_path: Path) -> None:
    """C-FIND and C-MOVE create no table: the schema is the migrations' (and a test's
    fixture's). Creating it from the query path, remembered per ``id(engine)``, skipped
    the creation when Python reused the id of a closed engine for a new one."""
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    made = create_engine(url)
    metadata.create_all(made)  # the catalog's own tables only: no grants
    made.dispose()
    catalog = Catalog(url, durable=False)
    try:
        fill(catalog)
        before = set(inspect(catalog.engine).get_table_names())
        assert "grants" not in before
        request = MoveRequest("HOSPA", "Hospital A", "STUDY", study_uids=("1.2.1.1",))
        with pytest.raises(OperationalError, match="no such table"):
            move(catalog, request)
        assert set(inspect(catalog.engine).get_table_names()) == before
    finally:
        catalog.close()


def cfind(
    cat: Catalog, level: str, *keys: tuple[int, str], institution: str = "Hospital A"
) -> list[pydicom.Dataset]:
    answer = find(cat, FindRequest("AE", institution, level, tuple(keys)))
    assert answer.complete
    return list(answer.datasets)


def uids(datasets: list[pydicom.Dataset], keyword: str = "StudyInstanceUID") -> list[str]:
    return sorted(str(ds.get(keyword)) for ds in datasets)


# --------------------------------------------------------------------------- find


def test_study_level_sees_only_the_institutions_studies(cat: Catalog) -> None:
    assert uids(cfind(cat, "STUDY", (STUDY_UID, ""))) == ["1.2.1.1", "1.2.1.2"]
    assert uids(cfind(cat, "STUDY", (STUDY_UID, ""), institution="Hospital B")) == ["1.2.1.3"]
    assert cfind(cat, "STUDY", (STUDY_UID, "1.2.1.1"), institution="Hospital B") == []
    assert cfind(cat, "STUDY", (STUDY_UID, ""), institution="Nobody") == []


def test_matching_is_qidos(cat: Catalog) -> None:
    # PN wild card, case-insensitive; date range; UID list with backslashes
    assert uids(cfind(cat, "STUDY", (PATIENT_NAME, "doe*"))) == ["1.2.1.1", "1.2.1.2"]
    hits = cfind(cat, "STUDY", (STUDY_DATE, "20250101-20250131"), (STUDY_UID, ""))
    assert uids(hits) == ["1.2.1.1"]
    listed = cfind(cat, "STUDY", (STUDY_UID, "1.2.1.2\\1.2.1.3"))
    assert uids(listed) == ["1.2.1.2"]  # 1.2.1.3 is Hospital B's


def test_answers_carry_the_requested_keys_only(cat: Catalog) -> None:
    (answer,) = cfind(
        cat,
        "STUDY",
        (STUDY_UID, "1.2.1.2"),
        (PATIENT_NAME, ""),
        (PERFORMING_PHYSICIAN, ""),  # not indexed: returned empty
        (SOP_UID, ""),  # below the level: dropped
    )
    assert answer.QueryRetrieveLevel == "STUDY"
    assert answer.SpecificCharacterSet == "ISO_IR 192"
    assert str(answer.PatientName) == "Doe^Jane"
    assert PERFORMING_PHYSICIAN in answer and answer[PERFORMING_PHYSICIAN].value in (None, "")
    assert SOP_UID not in answer
    assert "AccessionNumber" not in answer and "StudyDate" not in answer


def test_series_and_image_levels_are_relational(cat: Catalog) -> None:
    series = cfind(cat, "SERIES", (STUDY_UID, "1.2.1.1"), (SERIES_UID, ""), (MODALITY, ""))
    assert [(str(s.SeriesInstanceUID), s.Modality) for s in series] == [
        ("1.2.2.1", "CT"),
        ("1.2.2.2", "SR"),
    ]
    images = cfind(cat, "IMAGE", (PATIENT_ID, "P1"), (MODALITY, "CT"), (SOP_UID, ""))
    assert uids(images, "SOPInstanceUID") == ["1.2.3.1", "1.2.3.2"]
    assert all(str(i.StudyInstanceUID) == "1.2.1.1" for i in images)  # unique keys


def test_patient_level_answers_each_patient_once(cat: Catalog) -> None:
    patients = cfind(cat, "PATIENT", (PATIENT_ID, ""), (PATIENT_NAME, ""), (STUDY_UID, ""))
    assert [(str(p.PatientID), str(p.PatientName)) for p in patients] == [("P1", "Doe^Jane")]
    assert STUDY_UID not in patients[0]  # a study key has no place in a patient answer
    b = cfind(cat, "PATIENT", (PATIENT_ID, ""), institution="Hospital B")
    assert [str(p.PatientID) for p in b] == ["P3"]


CATALOG_VALUES = {
    "PN": ["Doe^Jane", "Yamada^Tarou=山田^太郎=やまだ^たろう", "Doe^Jane=", "=Ideo", "a=b=c=d",
           "Doe^Jane\\Roe^Richard", "Doe^Jane\\\\Roe", ["Doe", "Roe"], "Müller^Jürgen"],
    "IS": ["3", 3, " 7 ", "3.0", ["1", "2"]],
    "US": [512, "512", 0],
    "CS": ["CT", ["CT", "MR"], ["MR", "", None], "ONLINE"],
    "UI": ["1.2.3", ["1.2", "3.4"]],
}  # fmt: skip


@pytest.mark.parametrize("attr", ATTRIBUTES, ids=lambda a: a.keyword)
def test_an_answer_holds_what_the_dicom_json_of_the_match_reads_back_as(attr: Attribute) -> None:
    """C-FIND answers are built from the catalog's values directly; each element is, to the
    byte, what QIDO-RS's DICOM JSON of the same value reads back as."""

    def encoded(element: pydicom.DataElement) -> bytes:
        dataset = pydicom.Dataset()
        dataset.SpecificCharacterSet = "ISO_IR 192"
        dataset[element.tag] = element
        out = pydicom.filebase.DicomBytesIO()
        out.is_little_endian, out.is_implicit_VR = True, False
        pydicom.filewriter.write_dataset(out, dataset)
        return out.getvalue()

    samples = CATALOG_VALUES.get(attr.vr, ["20250110", "Hospital A", "x\\y", "Ünïcode"])
    for value in [*samples, None, ""]:
        if attr.vr in ("DA", "TM") and isinstance(value, str) and not value.isdigit():
            continue
        via_json = pydicom.Dataset.from_json({attr.tag: element(attr.vr, value)})[attr.tag]
        assert encoded(handlers._element(attr, value)) == encoded(via_json), value


def test_too_many_matches_are_marked_incomplete(cat: Catalog) -> None:
    request = FindRequest("AE", "Hospital A", "STUDY", ((STUDY_UID, ""),))
    answer = find(cat, request, max_results=1)
    assert len(answer.datasets) == 1 and not answer.complete


def test_malformed_keys_and_levels_are_invalid(cat: Catalog) -> None:
    with pytest.raises(InvalidInput):
        find(cat, FindRequest("AE", "Hospital A", "STUDY", ((STUDY_DATE, "2025-01"),)))
    with pytest.raises(InvalidInput):
        find(cat, FindRequest("AE", "Hospital A", "FRAME", ()))


# --------------------------------------------------------------------------- move


def moved(cat: Catalog, level: str, institution: str = "Hospital A", **keys: Any) -> list[str]:
    return sorted(i.sop_uid for i in move(cat, MoveRequest("AE", institution, level, **keys)))


def test_move_sends_only_reachable_instances(cat: Catalog) -> None:
    assert moved(cat, "STUDY", study_uids=("1.2.1.1",)) == ["1.2.3.1", "1.2.3.2", "1.2.3.3"]
    assert moved(cat, "STUDY", "Hospital B", study_uids=("1.2.1.1",)) == []
    assert moved(cat, "STUDY", study_uids=("9.9.9",)) == []
    items = move(cat, MoveRequest("AE", "Hospital A", "STUDY", study_uids=("1.2.1.2",)))
    assert [(i.study_uid, i.orthanc_id) for i in items] == [("1.2.1.2", "orth-4")]


def test_move_levels(cat: Catalog) -> None:
    assert moved(cat, "SERIES", series_uids=("1.2.2.2",)) == ["1.2.3.3"]
    assert moved(cat, "IMAGE", sop_uids=("1.2.3.2", "1.2.3.5")) == ["1.2.3.2"]
    assert moved(cat, "STUDY", accession_numbers=("ACC2",)) == ["1.2.3.4"]
    assert moved(cat, "PATIENT", patient_ids=("P1",)) == [f"1.2.3.{n}" for n in (1, 2, 3, 4)]
    assert moved(cat, "PATIENT", "Hospital B", patient_ids=("P1",)) == []


def test_a_move_without_its_key_matches_nothing(cat: Catalog) -> None:
    for level in ("PATIENT", "STUDY", "SERIES", "IMAGE"):
        assert moved(cat, level) == []


@pytest.mark.parametrize("level", ["", "FRAME", "INSTANCE"])
def test_a_move_at_an_unknown_level_is_invalid(cat: Catalog, level: str) -> None:
    with pytest.raises(InvalidInput, match="PATIENT/STUDY/SERIES/IMAGE"):
        moved(cat, level, study_uids=("1.2.1.1",))


# --------------------------------------------------------------------------- adapter


class DimseSdk(FakeSdk):
    """The fake SDK plus the C-FIND/C-MOVE registrations and REST writes."""

    def __init__(self) -> None:
        super().__init__()
        self.find_callback: Any = None
        self.move_callback: Any = None
        self.puts: list[tuple[str, Any]] = []
        self.posts: list[tuple[str, Any]] = []
        self.job_states = ["Pending", "Running", "Success"]

    def RegisterFindCallback(self, callback: Any) -> None:  # noqa: N802
        self.find_callback = callback

    def RegisterMoveCallback(self, callback: Any) -> None:  # noqa: N802
        self.move_callback = callback

    def RestApiPut(self, uri: str, body: str) -> bytes:  # noqa: N802
        self.puts.append((uri, json.loads(body)))
        return b"{}"

    def RestApiPost(self, uri: str, body: str) -> bytes:  # noqa: N802
        self.posts.append((uri, json.loads(body)))
        return json.dumps({"ID": "job-1"}).encode()

    def RestApiGet(self, uri: str) -> bytes:  # noqa: N802
        if uri == "/jobs/job-1":
            self.rest_calls.append(uri)
            return json.dumps({"State": self.job_states.pop(0)}).encode()
        return super().RestApiGet(uri)


class FakeQuery:
    def __init__(self, *keys: tuple[int, str]) -> None:
        self.keys = keys

    def GetFindQuerySize(self) -> int:  # noqa: N802
        return len(self.keys)

    def GetFindQueryTagGroup(self, i: int) -> int:  # noqa: N802
        return self.keys[i][0] >> 16

    def GetFindQueryTagElement(self, i: int) -> int:  # noqa: N802
        return self.keys[i][0] & 0xFFFF

    def GetFindQueryValue(self, i: int) -> str:  # noqa: N802
        return self.keys[i][1]


class FakeAnswers:
    def __init__(self) -> None:
        self.datasets: list[pydicom.Dataset] = []
        self.incomplete = False

    def FindAddAnswer(self, dicom: bytes) -> None:  # noqa: N802
        self.datasets.append(pydicom.dcmread(io.BytesIO(dicom)))

    def FindMarkIncomplete(self) -> None:  # noqa: N802
        self.incomplete = True


@pytest.fixture
def sdk() -> DimseSdk:
    return DimseSdk()


@pytest.fixture
def plugin(sdk: DimseSdk, tmp_path: Path) -> Iterator[ArchivePlugin]:
    settings = load_settings(tmp_path, storage=StorageSettings(fsync=False))
    plug = register(sdk, settings, find=find, move=move)
    fill(plug.catalog)
    plug.catalog.add_institution("Hospital A", "HOSPA_WS", "10.0.0.5", 11112)
    plug.catalog.add_institution("Hospital B", "HOSPB_WS", "10.0.0.6", 11112)
    plug.catalog.add_institution("Hospital A", "HOSPA_CT")  # pushes only: no host or port
    try:
        yield plug
    finally:
        plug.catalog.close()


def audit(plugin: ArchivePlugin) -> list[dict[str, Any]]:
    assert plugin.audit_log is not None
    return [json.loads(e.canonical()) for _, e in plugin.audit_log.records()]


def test_register_wires_find_and_move(sdk: DimseSdk, plugin: ArchivePlugin) -> None:
    assert sdk.find_callback == plugin.on_find
    assert sdk.move_callback == plugin.on_move
    assert isinstance(plugin.audit_log, AuditLog)


def test_without_handlers_orthanc_keeps_answering(tmp_path: Path) -> None:
    bare = DimseSdk()
    plug = register(bare, load_settings(tmp_path, storage=StorageSettings(fsync=False)))
    try:
        assert bare.find_callback is None and bare.move_callback is None
    finally:
        plug.catalog.close()


def test_c_find_answers_and_audits(sdk: DimseSdk, plugin: ArchivePlugin) -> None:
    answers = FakeAnswers()
    query = FakeQuery((0x00080052, "STUDY"), (0x00080005, "ISO_IR 100"), (STUDY_UID, "1.2.1.1"))
    sdk.find_callback(answers, query, "HOSPA ", "VNA")
    assert [str(d.StudyInstanceUID) for d in answers.datasets] == ["1.2.1.1"]
    assert not answers.incomplete
    (record,) = audit(plugin)
    assert (record["event"], record["outcome"], record["user"], record["institution"]) == (
        "query",
        0,
        "HOSPA",
        "Hospital A",
    )
    assert record["study_uid"] == "1.2.1.1"
    assert record["detail"] == {"via": "dimse", "level": "STUDY", "called_ae": "VNA",
                                "matches": "1"}  # fmt: skip


def test_c_find_of_another_institutions_study_is_empty(
    sdk: DimseSdk, plugin: ArchivePlugin
) -> None:
    answers = FakeAnswers()
    sdk.find_callback(
        answers, FakeQuery((0x00080052, "IMAGE"), (STUDY_UID, "1.2.1.1")), "HOSPB", "VNA"
    )
    assert answers.datasets == []
    assert audit(plugin)[-1]["detail"]["matches"] == "0"


def test_c_find_from_an_unknown_ae_is_refused_and_audited(
    sdk: DimseSdk, plugin: ArchivePlugin
) -> None:
    answers = FakeAnswers()
    with pytest.raises(Forbidden):
        sdk.find_callback(answers, FakeQuery((0x00080052, "STUDY")), "STRANGER", "VNA")
    assert answers.datasets == []
    record = audit(plugin)[-1]
    assert (record["outcome"], record["user"], record["institution"]) == (4, "STRANGER", None)
    assert any("STRANGER" in m and "vna institution add" in m for m in sdk.warnings)


def test_c_find_keeps_patient_names_out_of_the_log(sdk: DimseSdk, plugin: ArchivePlugin) -> None:
    sdk.find_callback(FakeAnswers(), FakeQuery((0x00080052, "STUDY"), (PATIENT_NAME, "Doe*")),
                      "HOSPA", "VNA")  # fmt: skip
    assert "Doe" not in sdk.log
    assert "Doe" not in json.dumps(audit(plugin))


def move_request(**kw: Any) -> dict[str, Any]:
    base = {
        "Level": "STUDY",
        "PatientID": "",
        "AccessionNumber": "",
        "StudyInstanceUID": "1.2.1.1",
        "SeriesInstanceUID": "",
        "SOPInstanceUID": "",
        "OriginatorAET": "HOSPA",
        "SourceAET": "VNA",
        "TargetAET": "HOSPA_WS",
        "OriginatorID": 7,
    }
    base.update(kw)
    return base


def test_c_move_stores_reachable_instances_to_the_destination(
    sdk: DimseSdk, plugin: ArchivePlugin
) -> None:
    sdk.move_callback(**move_request())
    assert sdk.puts == [
        ("/modalities/HOSPA_WS", modality_entry("HOSPA_WS", "10.0.0.5", 11112, False))
    ]
    assert sdk.posts == [
        (
            "/modalities/HOSPA_WS/store",
            {
                "Resources": ["orth-1", "orth-2", "orth-3"],
                "Asynchronous": True,
                "MoveOriginatorAet": "HOSPA",
                "MoveOriginatorID": 7,
            },
        )
    ]
    assert sdk.rest_calls.count("/jobs/job-1") == 3  # waited for the job to succeed
    record = audit(plugin)[-1]
    assert (record["event"], record["action"], record["outcome"]) == (
        "instances-transferred",
        "R",
        0,
    )
    assert (record["user"], record["institution"], record["study_uid"]) == (
        "HOSPA",
        "Hospital A",
        "1.2.1.1",
    )
    assert record["detail"]["instances"] == "3"
    assert record["detail"]["destination"] == "HOSPA_WS"


def test_c_move_of_an_unreachable_study_sends_nothing(sdk: DimseSdk, plugin: ArchivePlugin) -> None:
    # failed, not "1 completed": python plugin 4.0 reports a C-MOVE as one sub-operation
    with pytest.raises(NotFound):
        sdk.move_callback(**move_request(OriginatorAET="HOSPB", TargetAET="HOSPB_WS"))
    with pytest.raises(NotFound):
        sdk.move_callback(**move_request(OriginatorAET="HOSPB", TargetAET="HOSPB_WS",
                                         StudyInstanceUID="9.9.9"))  # fmt: skip
    assert sdk.posts == []
    first, second = audit(plugin)[-2:]
    assert first["detail"]["instances"] == second["detail"]["instances"] == "0"
    assert first["outcome"] == second["outcome"] == 0


@pytest.mark.parametrize("target", ["NOWHERE", "HOSPB_WS", "HOSPA_CT", ""])
def test_c_move_to_an_unregistered_destination_is_refused(
    sdk: DimseSdk, plugin: ArchivePlugin, target: str
) -> None:
    """Unknown, another institution's, or without host and port: refused, audited."""
    with pytest.raises(MoveDestinationUnknown):
        sdk.move_callback(**move_request(TargetAET=target))
    assert sdk.posts == [] and sdk.puts == []
    record = audit(plugin)[-1]
    assert (record["outcome"], record["detail"]["reason"]) == (4, "move destination unknown")
    assert record["detail"]["destination"] == target


def test_c_move_from_an_unknown_ae_is_refused(sdk: DimseSdk, plugin: ArchivePlugin) -> None:
    with pytest.raises(Forbidden):
        sdk.move_callback(**move_request(OriginatorAET="STRANGER"))
    assert sdk.posts == []
    assert audit(plugin)[-1]["outcome"] == 4


def test_a_failed_store_job_fails_the_move_and_is_audited(
    sdk: DimseSdk, plugin: ArchivePlugin
) -> None:
    sdk.job_states = ["Running", "Failure"]
    with pytest.raises(VnaError):
        sdk.move_callback(**move_request())
    record = audit(plugin)[-1]
    assert (record["outcome"], record["study_uid"]) == (8, "1.2.1.1")
    assert any("answering a C-MOVE failed" in m for m in sdk.errors)


@pytest.mark.parametrize(
    ("level", "keys", "sent"),
    [
        (
            "PATIENT",
            {"PatientID": "P1", "StudyInstanceUID": ""},
            ["orth-1", "orth-2", "orth-3", "orth-4"],
        ),
        ("STUDY", {}, ["orth-1", "orth-2", "orth-3"]),
        ("SERIES", {"SeriesInstanceUID": "1.2.2.2"}, ["orth-3"]),
        # Orthanc passes the IMAGE level as its resource type, INSTANCE
        ("INSTANCE", {"SOPInstanceUID": "1.2.3.2"}, ["orth-2"]),
    ],
)
def test_c_move_at_every_level_as_orthanc_names_it(
    sdk: DimseSdk, plugin: ArchivePlugin, level: str, keys: dict[str, str], sent: list[str]
) -> None:
    sdk.move_callback(**move_request(Level=level, **keys))
    assert sdk.posts[0][1]["Resources"] == sent


@pytest.mark.parametrize("level", ["FRAME", ""])
def test_c_move_at_an_unknown_level_fails_with_a_reason(
    sdk: DimseSdk, plugin: ArchivePlugin, level: str
) -> None:
    with pytest.raises(InvalidInput):
        sdk.move_callback(**move_request(Level=level))
    assert sdk.posts == []
    record = audit(plugin)[-1]
    assert (record["outcome"], record["detail"]["reason"]) == (4, "unknown level")
    assert any("Query/Retrieve Level" in m for m in sdk.warnings)


def test_multi_valued_keys_are_split(sdk: DimseSdk, plugin: ArchivePlugin) -> None:
    sdk.move_callback(**move_request(Level="INSTANCE", StudyInstanceUID="",
                                     SOPInstanceUID="1.2.3.1\\1.2.3.5\\1.2.3.4"))  # fmt: skip
    assert sdk.posts[0][1]["Resources"] == ["orth-1", "orth-4"]  # not B's 1.2.3.5
    assert {r["study_uid"] for r in audit(plugin)} == {"1.2.1.1", "1.2.1.2"}


# --------------------------------------------------------------------------- C-GET


@pytest.mark.parametrize("allow_get", [False, True])
def test_orthanc_config_sets_c_get_per_modality(tmp_path: Path, allow_get: bool) -> None:
    """C-GET has no plugin hook on Orthanc 1.10: it is the modality's AllowGet, off unless
    ``dicom_allow_get``; C-FIND and C-MOVE stay allowed (the archive answers them)."""
    settings = load_settings(tmp_path, dicom_allow_get=allow_get)
    institution = Institution(1, "Hospital A", (("HOSPA", None, None), ("WS", "10.0.0.5", 104)))
    config = orthanc_config(settings, OrthancCredentials("u", "p"), [institution])
    # HOSPA has no registered host: with host binding (the default) Orthanc must refuse it
    assert config["DicomModalities"] == {"WS": modality_entry("WS", "10.0.0.5", 104, allow_get)}
    assert config["DicomModalities"]["WS"]["AllowGet"] is allow_get
    assert config["DicomModalities"]["WS"]["AllowMove"] is True
    assert not config["DicomAlwaysAllowGet"] and not config["DicomAlwaysAllowFind"]


def test_c_get_is_off_by_default(tmp_path: Path) -> None:
    assert load_settings(tmp_path).dicom_allow_get is False
