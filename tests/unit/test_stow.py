"""STOW-RS without Orthanc: content types, the streamed multipart reader and its limits,
part inspection, the write-access rule, the response, and provenance through the indexer."""

from __future__ import annotations

import asyncio
import io
import json
import warnings
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pydicom
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from archive.catalog import Catalog, InstanceRecord, SourceRecord
from archive.headers import orthanc_instance_id
from archive.indexer import Indexer
from archive.plugin import ArchivePlugin
from dicomweb.http.middleware import error_middleware
from dicomweb.stow.store import (
    FailureReason,
    Outcome,
    StowLimits,
    check_content_type,
    inspect_part,
    receive_parts,
    refused,
    store_response,
)
from security.errors import InvalidInput, UnsupportedMediaType
from sharing.grants import Grants
from tests.unit.support import orthanc_c_store, rest_store, stow_part

ROOT = "http://gw/dicom-web"
BOUNDARY = "vna-test-boundary"
RELATED = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'


def multipart(
    parts: list[bytes], *, close: bool = True, part_type: str = "application/dicom"
) -> bytes:
    body = b""
    for data in parts:
        body += f"--{BOUNDARY}\r\nContent-Type: {part_type}\r\n\r\n".encode() + data + b"\r\n"
    if close:
        body += f"--{BOUNDARY}--\r\n".encode()
    return body


# --------------------------------------------------------------------- content type


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "application/dicom",
        "multipart/form-data; boundary=x",
        'multipart/related; type="application/dicom+json"; boundary=x',
        'multipart/related; type="application/octet-stream"; boundary=x',
    ],
)
def test_other_media_types_are_415(value: str | None) -> None:
    with pytest.raises(UnsupportedMediaType) as caught:
        check_content_type(value)
    assert "multipart/related" in str(caught.value)


@pytest.mark.parametrize(
    "value",
    ['multipart/related; type="application/dicom"', "multipart/related; boundary=" + "b" * 201],
)
def test_a_missing_or_overlong_boundary_is_invalid_input(value: str) -> None:
    with pytest.raises(InvalidInput, match="boundary"):
        check_content_type(value)


@pytest.mark.parametrize(
    "value",
    [
        RELATED,
        "Multipart/Related; Type=application/dicom; boundary=abc",
        "multipart/related; boundary=abc",  # no type: each part's own type is checked
        # Orthanc's DICOMweb plugin sends 73 characters, over RFC 2046's 70
        "multipart/related; type=application/dicom; boundary=" + "c" * 73,
    ],
)
def test_dicom_multiparts_are_accepted(value: str) -> None:
    check_content_type(value)


# --------------------------------------------------------------------- the answer


def _stored(sop: str, study: str = "1.2.3") -> Outcome:
    return Outcome("1.2.840.10008.5.1.4.1.1.2", sop, study, "1.2.3.4")


def test_all_stored_is_200_with_retrieve_urls() -> None:
    status, body = store_response([_stored("1.1"), _stored("1.2")], ROOT, None)
    assert status == 200
    assert body["00081190"] == {"vr": "UR", "Value": [f"{ROOT}/studies/1.2.3"]}
    assert "00081198" not in body
    items = body["00081199"]["Value"]
    assert [i["00081155"]["Value"][0] for i in items] == ["1.1", "1.2"]
    assert items[0]["00081190"]["Value"] == [f"{ROOT}/studies/1.2.3/series/1.2.3.4/instances/1.1"]
    assert items[0]["00081150"]["Value"] == ["1.2.840.10008.5.1.4.1.1.2"]
    # a valid DICOM JSON data set, as a client will parse it
    ds = pydicom.Dataset.from_json(json.dumps(body))
    assert len(ds.ReferencedSOPSequence) == 2


def test_some_failed_is_202_with_reasons() -> None:
    bad = Outcome(None, None, failure=FailureReason.CANNOT_UNDERSTAND)
    status, body = store_response([_stored("1.1"), bad], ROOT, "1.2.3")
    assert status == 202
    failed = body["00081198"]["Value"]
    assert failed == [
        {
            "00081150": {"vr": "UI"},
            "00081155": {"vr": "UI"},
            "00081197": {"vr": "US", "Value": [0xC000]},
        }
    ]
    ds = pydicom.Dataset.from_json(json.dumps(body))
    assert ds.FailedSOPSequence[0].FailureReason == 0xC000


def test_none_stored_is_409_and_names_the_url_study() -> None:
    mismatch = Outcome("1.2", "1.1", "9.9", "9.9.1", FailureReason.STUDY_MISMATCH)
    refusal = Outcome("1.2", "1.3", "8.8", "8.8.1", FailureReason.NOT_AUTHORIZED)
    status, body = store_response([mismatch, refusal], ROOT, "1.2.3")
    assert status == 409
    assert body["00081190"]["Value"] == [f"{ROOT}/studies/1.2.3"]
    reasons = [i["00081197"]["Value"][0] for i in body["00081198"]["Value"]]
    assert reasons == [0xC409, 0x0124]
    assert "00081199" not in body


def test_two_studies_leave_the_study_url_empty() -> None:
    status, body = store_response([_stored("1.1", "1.2.3"), _stored("1.2", "4.5.6")], ROOT, None)
    assert status == 200
    assert body["00081190"] == {"vr": "UR"}


def test_uids_are_answered_as_sent_without_warnings() -> None:
    """The answer is pydicom's DICOM JSON of a data set; a client's malformed UID is named
    back as it came, not refused or logged by pydicom's value validation."""
    odd = Outcome("1.2.840.10008.5.1.4.1.1.2", "1.2.x", "1.2.3", "1.2.3.4")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        status, body = store_response([odd], ROOT, None)
    assert status == 200
    assert body["00081199"]["Value"][0]["00081155"] == {"vr": "UI", "Value": ["1.2.x"]}


# --------------------------------------------------------------------- receiving


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _serve(limits: StowLimits, scenario: Callable[[TestClient[Any, Any]], Awaitable[None]]) -> None:
    """Run ``scenario`` against a tiny app whose handler reads the body with receive_parts."""

    async def handler(request: web.Request) -> web.Response:
        parts = await receive_parts(request, limits)
        try:
            answer = []
            for part in parts:
                part.data.seek(0)
                answer.append(
                    {
                        "size": part.size,
                        "type": part.content_type,
                        "in_memory": part.size <= part.memory_cap,
                        "data": part.data.read().decode("latin-1"),
                    }
                )
        finally:
            for part in parts:
                part.close()
        return web.json_response(answer)

    async def main() -> None:
        app = web.Application(middlewares=[error_middleware])
        app.router.add_post("/studies", handler)
        async with TestClient(TestServer(app)) as client:
            await scenario(client)

    asyncio.run(main())


@pytest.fixture
def limits(tmp_path: Path) -> StowLimits:
    return StowLimits(max_request_bytes=1024 * 1024, spool_dir=tmp_path / "spool")


def test_parts_arrive_whole_and_in_order(limits: StowLimits) -> None:
    parts = [b"first\r\n--not-the-boundary", bytes(range(256)) * 40, b""]

    async def scenario(client: TestClient[Any, Any]) -> None:
        answer = await client.post(
            "/studies", data=multipart(parts), headers={"Content-Type": RELATED}
        )
        assert answer.status == 200
        got = await answer.json()
        assert [p["data"].encode("latin-1") for p in got] == parts
        assert [p["size"] for p in got] == [len(p) for p in parts]
        assert {p["type"] for p in got} == {"application/dicom"}

    _serve(limits, scenario)


def test_a_73_character_boundary_as_orthanc_sends_it_is_read(limits: StowLimits) -> None:
    """Orthanc's DICOMweb plugin (1.7) sends two UUIDs joined by a hyphen: 73 characters."""
    boundary = "469c7e03-45da-4391-81ac-bd36adaa6361-469c7e03-45da-4391-81ac-bd36adaa6361"
    parts = [b"one", b"two"]
    body = b"".join(
        f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + p + b"\r\n"
        for p in parts
    )
    body += f"--{boundary}--".encode()  # Orthanc ends without a CRLF

    async def scenario(client: TestClient[Any, Any]) -> None:
        content_type = f'multipart/related; type="application/dicom"; boundary={boundary}'
        answer = await client.post("/studies", data=body, headers={"Content-Type": content_type})
        assert answer.status == 200, await answer.text()
        assert [p["data"].encode("latin-1") for p in await answer.json()] == parts

    _serve(limits, scenario)


def test_large_parts_spool_to_disk_intact(tmp_path: Path) -> None:
    small = StowLimits(
        max_request_bytes=4 * 1024 * 1024,
        spool_dir=tmp_path / "spool",
        memory_part_bytes=64 * 1024,
        memory_request_bytes=100 * 1024,
    )
    parts = [b"a" * 50_000, b"b" * 200_000, b"c" * 60_000]

    async def scenario(client: TestClient[Any, Any]) -> None:
        answer = await client.post(
            "/studies", data=multipart(parts), headers={"Content-Type": RELATED}
        )
        got = await answer.json()
        assert [p["data"].encode("latin-1") for p in got] == parts
        # the first fits; the second is over the part cap; the third over what is left
        assert [p["in_memory"] for p in got] == [True, False, False]

    _serve(small, scenario)
    assert list((tmp_path / "spool").iterdir()) == []  # unlinked temporary files only


def _body_chunks(body: bytes, size: int = 8192) -> Any:
    async def gen() -> Any:
        for start in range(0, len(body), size):
            yield body[start : start + size]

    return gen()


@pytest.mark.parametrize("declared", [True, False])
def test_a_body_over_the_limit_is_413(limits: StowLimits, declared: bool) -> None:
    body = multipart([b"x" * (limits.max_request_bytes + 10)])

    async def scenario(client: TestClient[Any, Any]) -> None:
        # declared: Content-Length says it at once; chunked: counted while streaming
        data: Any = body if declared else _body_chunks(body)
        answer = await client.post("/studies", data=data, headers={"Content-Type": RELATED})
        assert answer.status == 413
        message = (await answer.json())["message"]
        assert (
            "1 MiB" in message and "max_request_mb" in message and "nothing was stored" in message
        )

    _serve(limits, scenario)


def test_many_small_parts_count_towards_the_limit(limits: StowLimits) -> None:
    body = multipart([b"y" * 1000] * 1100)  # no part is large, the whole is

    async def scenario(client: TestClient[Any, Any]) -> None:
        answer = await client.post(
            "/studies", data=_body_chunks(body), headers={"Content-Type": RELATED}
        )
        assert answer.status == 413

    _serve(limits, scenario)


@pytest.mark.parametrize(
    ("body", "content_type", "status", "words"),
    [
        (multipart([b"abc"], close=False), RELATED, 400, "malformed"),
        (multipart([b"abc"])[:-30], RELATED, 400, "malformed"),
        (b"no boundary anywhere", RELATED, 400, "malformed"),
        (b"", RELATED, 400, "malformed"),
        (f"--{BOUNDARY}--\r\n".encode(), RELATED, 400, "no part"),
        (multipart([b"abc"]), 'multipart/related; type="application/dicom"', 400, "boundary"),
        (multipart([b"abc"]), "application/dicom", 415, "multipart/related"),
        (
            multipart(
                [b"--inner\r\nContent-Type: application/dicom\r\n\r\nabc\r\n--inner--\r\n"],
                part_type="multipart/related; boundary=inner",
            ),
            RELATED,
            400,
            "itself multipart",
        ),
    ],
)
def test_broken_requests_get_a_clear_4xx(
    limits: StowLimits, body: bytes, content_type: str, status: int, words: str
) -> None:
    async def scenario(client: TestClient[Any, Any]) -> None:
        answer = await client.post("/studies", data=body, headers={"Content-Type": content_type})
        assert answer.status == status
        assert words in (await answer.json())["message"]
        # and the server goes on answering
        again = await client.post(
            "/studies", data=multipart([b"ok"]), headers={"Content-Type": RELATED}
        )
        assert again.status == 200

    _serve(limits, scenario)


# --------------------------------------------------------------------- inspecting parts


def test_a_dicom_part_yields_the_identity_the_indexer_will_use(small_ct: list[bytes]) -> None:
    ds = pydicom.dcmread(io.BytesIO(small_ct[0]))
    checked = inspect_part(stow_part(small_ct[0]))
    assert not isinstance(checked, Outcome)
    assert checked.sop_uid == ds.SOPInstanceUID
    assert checked.study_uid == ds.StudyInstanceUID
    assert checked.sop_class_uid == ds.SOPClassUID
    assert checked.orthanc_id == orthanc_instance_id(
        str(ds.PatientID), ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID
    )


@pytest.mark.parametrize(
    ("mangle", "content_type"),
    [
        (lambda d: b"this is a text file, not DICOM", "application/dicom"),
        (lambda d: d[:132] + b"\xff" * 200, "application/dicom"),  # DICM, then garbage
        (lambda d: d[:128] + b"DICX" + d[132:], "application/dicom"),
        (lambda d: d, "text/plain"),
        (lambda d: d[:100], None),
    ],
)
def test_non_dicom_parts_cannot_be_understood(
    small_ct: list[bytes], mangle: Callable[[bytes], bytes], content_type: str | None
) -> None:
    checked = inspect_part(stow_part(mangle(small_ct[0]), content_type))
    assert isinstance(checked, Outcome)
    assert checked.failure == FailureReason.CANNOT_UNDERSTAND


# --------------------------------------------------------------------- who may store


def _indexed(catalog: Catalog, owner: str, sop: str, study: str) -> None:
    inst = catalog.add_institution(owner)
    record = InstanceRecord(sop, f"{study}.1", study, "PID", owner, orthanc_id=f"o-{sop}")
    catalog.index_batch([record], [SourceRecord(sop, inst.id, "dimse", "AE")])


def test_only_the_owner_stores_into_an_existing_study(catalog: Catalog) -> None:
    catalog.add_institution("Hospital B")
    _indexed(catalog, "Hospital A", "1.1", "1.2.3")
    assert not refused(catalog, "Hospital A", "1.2.3", "1.9")
    assert refused(catalog, "Hospital B", "1.2.3", "1.9")
    assert not refused(catalog, "Hospital B", "7.7.7", "7.7.7.1")  # a new study


def test_a_read_report_grant_allows_reports_a_read_grant_does_not(catalog: Catalog) -> None:
    catalog.add_institution("Reading Centre")
    _indexed(catalog, "Hospital A", "1.1", "1.2.3")
    grants = Grants(catalog.engine)
    read = grants.add(
        grantor="Hospital A", grantee="Reading Centre", created_by="t", study_uid="1.2.3"
    )
    assert refused(catalog, "Reading Centre", "1.2.3", "1.9")
    grants.revoke(read.id, by="t")
    grants.add(
        grantor="Hospital A",
        grantee="Reading Centre",
        created_by="t",
        study_uid="1.2.3",
        permission="read+report",
    )
    assert not refused(catalog, "Reading Centre", "1.2.3", "1.9")  # its report


def test_an_archived_instance_cannot_be_filed_into_another_study(catalog: Catalog) -> None:
    catalog.add_institution("Hospital B")
    _indexed(catalog, "Hospital A", "1.1", "1.2.3")
    # B's own new study, but A's SOP Instance UID: it would be filed over A's instance
    assert refused(catalog, "Hospital B", "7.7.7", "1.1")
    assert not refused(catalog, "Hospital A", "7.7.7", "1.1")


# --------------------------------------------------------------------- provenance


def test_an_announced_http_store_records_source_owner_and_issuer(
    plugin: ArchivePlugin, small_ct: list[bytes]
) -> None:
    catalog = plugin.catalog
    hospital = catalog.add_institution("Hospital B")
    checked = inspect_part(stow_part(small_ct[0]))
    assert not isinstance(checked, Outcome)
    catalog.announce_source(checked.orthanc_id, hospital.id, "stow", "client-b", "10.0.0.2")
    rest_store(plugin, "att-1", small_ct[0])
    Indexer(catalog).drain()
    rec = catalog.instance(checked.sop_uid)
    assert rec is not None and rec.issuer == "Hospital B"
    assert catalog.sources_of(checked.sop_uid) == [("Hospital B", "stow", "client-b")]
    assert catalog.announced_sources([checked.orthanc_id]) == {}  # consumed
    catalog.add_institution("Hospital A")
    assert refused(catalog, "Hospital A", checked.study_uid, "9.9")  # B owns the new study
    assert not refused(catalog, "Hospital B", checked.study_uid, "9.9")


def test_an_unannounced_http_store_stays_local_and_withdrawal_forgets(
    plugin: ArchivePlugin, small_ct: list[bytes]
) -> None:
    catalog = plugin.catalog
    hospital = catalog.add_institution("Hospital B")
    checked = inspect_part(stow_part(small_ct[1]))
    assert not isinstance(checked, Outcome)
    catalog.announce_source(checked.orthanc_id, hospital.id, "stow", "client-b")
    catalog.withdraw_source(checked.orthanc_id, hospital.id)  # Orthanc refused it
    rest_store(plugin, "att-2", small_ct[1])
    Indexer(catalog).drain()
    rec = catalog.instance(checked.sop_uid)
    assert rec is not None and rec.issuer == "local"
    assert catalog.sources_of(checked.sop_uid) == []


def test_a_c_store_ignores_announcements(plugin: ArchivePlugin, small_ct: list[bytes]) -> None:
    catalog = plugin.catalog
    catalog.add_institution("Hospital A", "HOSPA")
    other = catalog.add_institution("Hospital B")
    checked = inspect_part(stow_part(small_ct[2]))
    assert not isinstance(checked, Outcome)
    catalog.announce_source(checked.orthanc_id, other.id, "stow", "client-b")
    orthanc_c_store(plugin.sdk, "att-3", small_ct[2], "HOSPA")
    Indexer(catalog).drain()
    assert catalog.sources_of(checked.sop_uid) == [("Hospital A", "dimse", "HOSPA")]
    assert len(catalog.announced_sources([checked.orthanc_id])[checked.orthanc_id]) == 1
