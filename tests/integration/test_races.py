"""Real parallel requests against a real gateway with two worker processes: wrong
passwords and PINs get no more checks than the limit, every request gets a proper answer
(no "database is locked"), parallel visitors of a valid link all get in, and failed
client secrets are throttled per address in the catalog, whichever worker answers.

Each test that makes the gateway count failures sends from a loopback address of its own
(127.0.0.x), so no other test is throttled by them, in any order."""

from __future__ import annotations

import json
import re
import secrets
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import pydicom
import pytest
import requests

from synthetic import StudySpec, write_study
from tests.integration.harness import Archive, session_from, start_gateway, wait_until

SPEC = StudySpec(series=1, slices=1, rows=32, columns=32, patient_id="RACE0001", seed=9101)
PASSWORD = "a long races password"
CLIENT_ID = "races-viewer"
REDIRECT_URI = "http://127.0.0.1:9/races-callback"
SECRET_LIMIT = 6
_CSRF = re.compile(r"name='csrf_token' value='([^']+)'")
T = TypeVar("T")


@dataclass
class Races:
    archive: Archive
    url: str
    study_uid: str
    client_id: str
    client_secret: str


def in_parallel(calls: list[Callable[[], T]]) -> list[T]:
    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(lambda call: call(), calls))


def audit_bodies(archive: Archive) -> list[dict[str, object]]:
    db = sqlite3.connect(archive.home / "catalog.db")
    try:
        rows = db.execute("SELECT body FROM audit_events ORDER BY seq").fetchall()
    finally:
        db.close()
    return [json.loads(body) for (body,) in rows]


def indexed(archive: Archive, study_uid: str) -> bool:
    db = sqlite3.connect(archive.home / "catalog.db")
    try:
        (count,) = db.execute(
            "SELECT count(*) FROM instances WHERE study_uid = ?", (study_uid,)
        ).fetchone()
    finally:
        db.close()
    return bool(count)


@pytest.fixture(scope="module")
def races(archive: Archive, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Races]:
    files = write_study(SPEC, tmp_path_factory.mktemp("races-study"))
    assert archive.storescu("HOSPA", *files).returncode == 0
    study_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    wait_until(lambda: indexed(archive, study_uid), "the study to be indexed")
    archive.vna(
        "client", "add", CLIENT_ID, "--public", "--redirect-uri", REDIRECT_URI,
        "--scopes", "dicom.read",
    )  # fmt: skip
    made = archive.vna(
        "client", "add", "races-system", "--institution", "Hospital A",
        "--scopes", "dicom.read", "--json",
    )  # fmt: skip
    system = json.loads(made.stdout)
    secret_file = tmp_path_factory.mktemp("races-pw") / "password"
    secret_file.write_text(PASSWORD + "\n")
    for user in ("erin", "frank"):
        archive.vna(
            "user", "add", user, "--institution", "Hospital A",
            "--password-file", str(secret_file), "--scopes", "dicom.read",
        )  # fmt: skip
    env = {"VNA_GATEWAY__CLIENT_SECRET_FAILURES_PER_ADDRESS": str(SECRET_LIMIT)}
    with start_gateway(archive, "races", env, workers=2) as gateway:
        yield Races(archive, gateway.url, study_uid, system["client_id"], system["client_secret"])


def login_form(races: Races, session: requests.Session) -> str:
    params = {
        "response_type": "code",
        "client_id": CLIENT_ID,
        "redirect_uri": REDIRECT_URI,
        "scope": "openid dicom.read",
        "state": secrets.token_urlsafe(8),
        "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        "code_challenge_method": "S256",
    }
    page = session.get(f"{races.url}/oauth/authorize", params=params, timeout=60)
    assert page.status_code == 200, page.text
    match = _CSRF.search(page.text)
    assert match is not None
    return match.group(1)


def refusals(archive: Archive, user: str) -> Counter[str]:
    return Counter(
        str(b["detail"]["refused"])  # type: ignore[index]
        for b in audit_bodies(archive)
        if b["event"] == "authentication" and b["user"] == user and b["outcome"] == 4
    )


def test_parallel_wrong_passwords_get_no_more_checks_than_the_limit(races: Races) -> None:
    browser = session_from("127.0.0.41")
    csrf = login_form(races, browser)
    cookies = browser.cookies.get_dict()

    def post(password: str) -> requests.Response:
        # a session per thread (requests' are not thread-safe), the same browser cookie
        session = session_from("127.0.0.41")
        return session.post(
            f"{races.url}/oauth/authorize",
            data={"csrf_token": csrf, "username": "erin", "password": password},
            cookies=cookies,
            allow_redirects=False,
            timeout=120,
        )

    answers = in_parallel([lambda: post("wrong password!!")] * 12)
    assert [a.status_code for a in answers] == [200] * 12  # the form again, never a 500
    assert not [a for a in answers if "Location" in a.headers]
    # the limit is 5: four wrong passwords refused as such, the fifth locked the account,
    # the other seven were refused without a check
    assert refusals(races.archive, "erin") == {"bad_credentials": 4, "locked": 8}
    right = post(PASSWORD)
    assert right.status_code == 200 and "Location" not in right.headers  # still locked
    assert refusals(races.archive, "erin")["locked"] == 9


def test_parallel_guesses_with_the_right_password_check_at_most_the_limit(
    races: Races,
) -> None:
    browser = session_from("127.0.0.42")
    csrf = login_form(races, browser)
    cookies = browser.cookies.get_dict()

    def post(password: str) -> requests.Response:
        return session_from("127.0.0.42").post(
            f"{races.url}/oauth/authorize",
            data={"csrf_token": csrf, "username": "frank", "password": password},
            cookies=cookies,
            allow_redirects=False,
            timeout=120,
        )

    guesses = ["wrong password!!"] * 11 + [PASSWORD]
    answers = in_parallel([lambda g=g: post(g) for g in guesses])
    assert sorted(a.status_code for a in answers) in ([200] * 12, [200] * 11 + [303])
    signed_in = sum(1 for a in answers if a.status_code == 303)
    refused = refusals(races.archive, "frank")
    assert refused["bad_credentials"] + signed_in <= 5  # never more checks than the limit
    assert refused.total() + signed_in == 12


def share(races: Races, *options: str) -> tuple[str, str]:
    made = races.archive.vna(
        "share", "create", races.study_uid, "--institution", "Hospital A", "--json", *options
    )
    doc = json.loads(made.stdout)
    return doc["id"], urlsplit(doc["url"]).fragment


def open_link(
    races: Races, link_id: str, secret: str, pin: str | None, address: str
) -> requests.Response:
    return session_from(address).post(
        f"{races.url}/share/{link_id}/open", json={"secret": secret, "pin": pin}, timeout=120
    )


def test_parallel_wrong_pins_are_counted_audited_and_lock_the_link(races: Races) -> None:
    link_id, secret = share(races, "--pin", "2468")
    answers = in_parallel([lambda: open_link(races, link_id, secret, "1357", "127.0.0.43")] * 20)
    statuses = Counter(a.status_code for a in answers)
    assert statuses == {401: 5, 423: 15}, [a.text for a in answers if a.status_code >= 500]
    left = sorted(a.json()["attempts_left"] for a in answers if a.status_code == 401)
    assert left == [0, 1, 2, 3, 4]  # every wrong PIN counted once
    opened = [
        b for b in audit_bodies(races.archive)
        if b["user"] == f"share:{link_id}" and b["event"] == "authentication"
    ]  # fmt: skip
    assert len(opened) == 20  # every answer audited
    # locked: the right PIN gets the same answer as any other
    assert open_link(races, link_id, secret, "2468", "127.0.0.43").status_code == 423


def test_parallel_visitors_of_a_valid_link_all_get_in(races: Races) -> None:
    plain_id, plain_secret = share(races)
    answers = in_parallel(
        [lambda: open_link(races, plain_id, plain_secret, None, "127.0.0.1")] * 10
    )
    assert [a.status_code for a in answers] == [200] * 10, [a.text for a in answers]
    pin_id, pin_secret = share(races, "--pin", "8642")
    answers = in_parallel([lambda: open_link(races, pin_id, pin_secret, "8642", "127.0.0.1")] * 10)
    assert [a.status_code for a in answers] == [200] * 10, [a.text for a in answers]
    listed = json.loads(races.archive.vna("share", "list", "--json").stdout)
    uses = {d["id"]: d["uses"] for d in listed}
    assert uses[plain_id] == 10 and uses[pin_id] == 10


def token(races: Races, secret: str, address: str) -> requests.Response:
    return session_from(address).post(
        f"{races.url}/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=(races.client_id, secret),
        timeout=60,
    )


def test_wrong_client_secrets_are_throttled_per_address_across_workers(races: Races) -> None:
    wrong = in_parallel([lambda: token(races, "not-the-secret", "127.0.0.44")] * SECRET_LIMIT)
    assert [a.status_code for a in wrong] == [401] * SECRET_LIMIT
    # new connections land on either worker: each sees the count kept in the catalog
    for _ in range(4):
        refused = token(races, "not-the-secret", "127.0.0.44")
        assert refused.status_code == 429 and refused.json()["error"] == "invalid_client"
    assert token(races, races.client_secret, "127.0.0.44").status_code == 429
    assert token(races, races.client_secret, "127.0.0.45").status_code == 200
    alerts = [
        b for b in audit_bodies(races.archive)
        if b["event"] == "security-alert" and b["user"] == races.client_id
    ]  # fmt: skip
    assert len(alerts) == 5
    assert races.client_secret not in Path(races.archive.home / "catalog.db").read_bytes().decode(
        "latin-1"
    )
