"""Share links against a real archive and gateway: a link opens its one study and nothing
else, its PIN locks after the attempts, revocation and expiry end it (and its tokens),
guessing gets nothing and is audited, and the ZIP download holds exactly the stored files."""

from __future__ import annotations

import hashlib
import io
import json
import time
import zipfile
from dataclasses import dataclass
from urllib.parse import urlsplit

import pydicom
import pytest
import requests
from sqlalchemy import create_engine

from sharing.api import ShareLinks
from synthetic import StudySpec, write_study
from tests.integration.harness import Archive, session_from, wait_until
from tests.integration.sites import Gateway

OTHER = StudySpec(series=1, slices=2, rows=32, columns=32, patient_id="SHR0002", seed=77)


@dataclass
class Link:
    id: str
    secret: str
    url: str


def _create(archive: Archive, study_uid: str, *options: str) -> Link:
    made = archive.vna(
        "share", "create", study_uid, "--institution", "Hospital A", "--json", *options
    )
    doc = json.loads(made.stdout)
    parts = urlsplit(doc["url"])
    return Link(doc["id"], parts.fragment, doc["url"])


def _create_expired(archive: Archive, study_uid: str) -> Link:
    """A link of Hospital A that expired an hour ago: made with its clock set back (the
    ``now`` of ShareLinks.create) rather than waited for."""
    engine = create_engine(f"sqlite:///{archive.home / 'catalog.db'}")
    try:
        made = ShareLinks(engine).create(
            study_uid, "Hospital A", "test", expires_in=1, now=time.time() - 3600
        )
    finally:
        engine.dispose()
    return Link(made.link.id, made.secret, made.url(""))


def _open(
    gateway: Gateway, link: Link, secret: str | None = None, pin: str | None = None
) -> requests.Response:
    return requests.post(
        f"{gateway.url}/share/{link.id}/open",
        json={"secret": secret or link.secret, "pin": pin},
        timeout=30,
    )


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def other_study(
    archive: Archive, gateway: Gateway, tmp_path_factory: pytest.TempPathFactory
) -> str:
    """A second study of Hospital A that no link names."""
    files = write_study(OTHER, tmp_path_factory.mktemp("share-other"))
    assert archive.storescu("HOSPA", *files).returncode == 0
    uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    headers = _bearer(gateway.token("Hospital A"))
    wait_until(
        lambda: (
            len(
                requests.get(
                    f"{gateway.root}/studies/{uid}/instances", headers=headers, timeout=10
                ).json()
            )
            == 2
        ),
        "the second study to be indexed",
    )
    return uid


def test_a_link_opens_its_study_and_nothing_else(
    archive: Archive,
    gateway: Gateway,
    other_study: str,
) -> None:
    link = _create(archive, gateway.study_uid, "--download")
    # the CLI names the archive's own gateway (settings); this test's gateway is another port
    assert urlsplit(link.url).path == f"/share/{link.id}" and len(link.secret) >= 43
    # the page is the same for every id and sends no Referer anywhere
    page = requests.get(f"{gateway.url}/share/{link.id}", timeout=30)
    assert page.status_code == 200 and page.headers["Referrer-Policy"] == "no-referrer"
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert page.text == requests.get(f"{gateway.url}/share/not-a-link", timeout=30).text
    assert link.secret not in page.text

    opened = _open(gateway, link)
    assert opened.status_code == 200, opened.text
    body = opened.json()
    assert body["study_uid"] == gateway.study_uid and body["actions"] == ["download", "view"]
    headers = _bearer(body["access_token"])
    listed = requests.get(f"{gateway.root}/studies", headers=headers, timeout=30).json()
    assert [s["0020000D"]["Value"][0] for s in listed] == [gateway.study_uid]
    ok = requests.get(
        f"{gateway.root}/studies/{gateway.study_uid}/metadata", headers=headers, timeout=30
    )
    assert ok.status_code == 200

    # the other study of the same institution, through every kind of endpoint
    [instance] = requests.get(
        f"{gateway.root}/studies/{other_study}/instances",
        headers=_bearer(gateway.token("Hospital A")),
        params={"limit": "1"},
        timeout=30,
    ).json()
    series = instance["0020000E"]["Value"][0]
    sop = instance["00080018"]["Value"][0]
    inst = f"{gateway.root}/studies/{other_study}/series/{series}/instances/{sop}"
    for url in (
        f"{gateway.root}/studies/{other_study}",
        f"{gateway.root}/studies/{other_study}/metadata",
        f"{gateway.root}/studies/{other_study}/thumbnail",
        inst,
        f"{inst}/metadata",
        f"{inst}/frames/1",
        f"{inst}/rendered",
        f"{inst}/bulkdata/7FE00010",
        f"{gateway.url}/wado?requestType=WADO&studyUID={other_study}&seriesUID={series}"
        f"&objectUID={sop}&contentType=application/dicom",
        f"{gateway.url}/api/studies/{other_study}/archive",
    ):
        answer = requests.get(url, headers=headers, timeout=30)
        assert answer.status_code == 404, (url, answer.status_code)
    assert (
        requests.get(
            f"{gateway.root}/studies/{other_study}/series", headers=headers, timeout=30
        ).json()
        == []
    )
    # a link reads; it never writes, shares or reads the audit log
    for method, url in (
        ("POST", f"{gateway.root}/studies/{gateway.study_uid}"),
        ("POST", f"{gateway.url}/api/shares"),
        ("GET", f"{gateway.url}/api/audit"),
        ("GET", f"{gateway.url}/api/grants"),
    ):
        answer = requests.request(method, url, headers=headers, timeout=30)
        assert answer.status_code in (403, 415), (url, answer.status_code)


def test_the_zip_holds_exactly_the_stored_files(archive: Archive, gateway: Gateway) -> None:
    link = _create(archive, gateway.study_uid, "--download")
    token = _open(gateway, link).json()["access_token"]
    answer = requests.get(
        f"{gateway.url}/api/studies/{gateway.study_uid}/archive",
        headers=_bearer(token),
        timeout=120,
    )
    assert answer.status_code == 200, answer.text
    with zipfile.ZipFile(io.BytesIO(answer.content)) as archive_zip:
        names = archive_zip.namelist()
        assert "DICOMDIR" in names
        files = {n: archive_zip.read(n) for n in names if n != "DICOMDIR" and not n.endswith("/")}
    got = sorted(hashlib.sha256(data).hexdigest() for data in files.values())
    stored = []
    for path in gateway.files:
        sop = str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        orthanc_id = archive.lookup(sop)
        assert orthanc_id is not None
        stored.append(
            hashlib.sha256(archive.get(f"/instances/{orthanc_id}/file").content).hexdigest()
        )
    assert got == sorted(stored)  # every instance, once, byte for byte

    # a view-only link's token cannot download
    view_only = _open(gateway, _create(archive, gateway.study_uid)).json()["access_token"]
    refused = requests.get(
        f"{gateway.url}/api/studies/{gateway.study_uid}/archive",
        headers=_bearer(view_only),
        timeout=30,
    )
    assert refused.status_code == 403


def test_pin_use_limit_revocation_and_expiry(archive: Archive, gateway: Gateway) -> None:
    link = _create(archive, gateway.study_uid, "--pin", "4711", "--max-uses", "3")
    assert _open(gateway, link).json()["error"] == "pin_required"
    wrong = _open(gateway, link, pin="0000")
    assert wrong.status_code == 401 and wrong.json()["attempts_left"] == 4
    right = _open(gateway, link, pin="4711")
    assert right.status_code == 200
    token = right.json()["access_token"]
    for _ in range(4):
        assert _open(gateway, link, pin="9999").status_code == 401
    wrong = _open(gateway, link, pin="9999")
    assert wrong.status_code == 401 and wrong.json()["attempts_left"] == 0
    locked = _open(gateway, link, pin="4711")
    assert locked.status_code == 423 and "locked" in locked.json()["message"]
    # the lock also ends the token it issued
    gone = requests.get(
        f"{gateway.root}/studies/{gateway.study_uid}/metadata", headers=_bearer(token), timeout=30
    )
    assert gone.status_code == 404

    limited = _create(archive, gateway.study_uid, "--max-uses", "1")
    assert _open(gateway, limited).status_code == 200
    used = _open(gateway, limited)
    assert used.status_code == 410 and "used up" in used.json()["message"]

    revoked = _create(archive, gateway.study_uid)
    token = _open(gateway, revoked).json()["access_token"]
    archive.vna("share", "revoke", revoked.id)
    answer = _open(gateway, revoked)
    assert answer.status_code == 410 and "revoked" in answer.json()["message"]
    after = requests.get(f"{gateway.root}/studies", headers=_bearer(token), timeout=30)
    assert after.status_code == 200 and after.json() == []

    short = _create_expired(archive, gateway.study_uid)
    expired = _open(gateway, short)
    assert expired.status_code == 410 and "expired" in expired.json()["message"]

    listed = json.loads(archive.vna("share", "list", "--json").stdout)
    states = {doc["id"]: doc["state"] for doc in listed}
    assert states[link.id] == "locked" and states[revoked.id] == "revoked"
    assert states[short.id] == "expired" and states[limited.id] == "used-up"
    assert all("secret" not in json.dumps(doc) for doc in listed)


def test_management_api_is_per_institution(gateway: Gateway, other_study: str) -> None:
    a = _bearer(gateway.token("Hospital A", ("share",)))
    b = _bearer(gateway.token("Hospital B", ("share",)))
    made = requests.post(
        f"{gateway.url}/api/shares",
        json={"study_uid": other_study, "expires": "2h", "pin": "2468", "download": True},
        headers=a,
        timeout=30,
    )
    assert made.status_code == 201, made.text
    doc = made.json()
    assert doc["pin"] is True and doc["url"].startswith(f"{gateway.url}/share/{doc['id']}#")
    assert (
        requests.post(
            f"{gateway.url}/api/shares", json={"study_uid": other_study}, headers=b, timeout=30
        ).status_code
        == 404
    )  # B cannot share A's study
    assert (
        requests.post(
            f"{gateway.url}/api/shares",
            json={"study_uid": other_study, "bogus": 1},
            headers=a,
            timeout=30,
        ).status_code
        == 400
    )
    assert doc["id"] in [
        d["id"] for d in requests.get(f"{gateway.url}/api/shares", headers=a, timeout=30).json()
    ]
    assert doc["id"] not in [
        d["id"] for d in requests.get(f"{gateway.url}/api/shares", headers=b, timeout=30).json()
    ]
    assert (
        requests.delete(f"{gateway.url}/api/shares/{doc['id']}", headers=b, timeout=30).status_code
        == 404
    )
    revoked = requests.delete(f"{gateway.url}/api/shares/{doc['id']}", headers=a, timeout=30)
    assert revoked.status_code == 200 and revoked.json()["state"] == "revoked"
    # the secret was in the creation answer only, and is in no list
    secret = urlsplit(doc["url"]).fragment
    assert secret not in requests.get(f"{gateway.url}/api/shares", headers=a, timeout=30).text


def test_guessing_gets_nothing_is_audited_and_throttled(archive: Archive, gateway: Gateway) -> None:
    # a loopback address of its own: the catalog keeps the count for every gateway of the
    # archive, and no other test may find 127.0.0.1 throttled
    guesser = session_from("127.0.0.66")

    def guess(link_id: str, secret: str) -> requests.Response:
        return guesser.post(
            f"{gateway.url}/share/{link_id}/open", json={"secret": secret, "pin": None}, timeout=30
        )

    link = _create(archive, gateway.study_uid)
    unknown = guess("NoSuchLink123", link.secret)
    wrong_secret = guess(link.id, "x" * 43)
    assert unknown.status_code == wrong_secret.status_code == 404
    assert unknown.json()["message"] == wrong_secret.json()["message"]
    statuses = []
    for _ in range(30):
        statuses.append(guess(link.id, "y" * 43).status_code)
        if statuses[-1] == 429:
            break
    assert statuses[-1] == 429  # the address is throttled after the configured failures
    # throttled even with the right secret, while the window lasts; other addresses are not
    assert guess(link.id, link.secret).status_code == 429
    assert _open(gateway, link).status_code == 200

    bundle = json.loads(archive.vna("audit", "export", "--format", "fhir").stdout)
    text = json.dumps(bundle)
    assert link.secret not in text
    alerts = [
        e["resource"]
        for e in bundle["entry"]
        if e["resource"]["type"]["code"] == "110113"
        and e["resource"]["agent"][0]["who"]["identifier"]["value"] == "share:NoSuchLink123"
    ]
    assert alerts and alerts[0]["outcome"] == "4"
    assert archive.vna("audit", "verify").returncode == 0


def test_oversized_form_and_json_bodies_are_413(gateway: Gateway) -> None:
    big = b'{"study_uid": "' + b"1" * (2 * 1024 * 1024) + b'"}'
    share = _bearer(gateway.token("Hospital A", ("share",)))
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    for url, headers in (
        (f"{gateway.url}/api/shares", {"Content-Type": "application/json", **share}),
        (f"{gateway.url}/oauth/token", form),
    ):
        answer = requests.post(url, data=big, headers=headers, timeout=60)
        assert answer.status_code == 413, (url, answer.status_code)
    assert requests.get(f"{gateway.url}/healthz", timeout=10).ok
