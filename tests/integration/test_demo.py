"""`vna demo` ends with a way in: the viewer URL, a demo reading user whose generated password
is printed once (never written to a file under the home), and a share link. A person signs
in with what was printed, as the viewer does (code flow with PKCE as ``vna-viewer``), and a
visitor opens the printed link; neither way shows anything but the demo's studies. While the
progress bar runs, pynetdicom's per-instance INFO lines are not emitted."""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import secrets
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from compose.settings import load_settings
from deploy.demo import DEMO_USER, load_demo
from tests.integration.harness import Archive, wait_until

_CSRF = re.compile(r"name='csrf_token' value='([^']+)'")


def _printed(stdout: str, label: str) -> str | None:
    match = re.search(rf"^\s*{label}:\s+(\S+)", stdout, re.MULTILINE)
    return match.group(1) if match else None


def _sign_in(base: str, user: str, password: str) -> str:
    """The viewer's sign-in (authorization code + PKCE); returns an access token."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    redirect_uri = f"{base}/viewer/callback"
    params = {
        "response_type": "code",
        "client_id": "vna-viewer",
        "redirect_uri": redirect_uri,
        "scope": "openid dicom.read",
        "state": secrets.token_urlsafe(8),
        "code_challenge": challenge.rstrip(b"=").decode(),
        "code_challenge_method": "S256",
    }
    session = requests.Session()
    page = session.get(f"{base}/oauth/authorize", params=params, timeout=30)
    assert page.status_code == 200, page.text
    csrf = _CSRF.search(page.text)
    assert csrf is not None
    answer = session.post(
        f"{base}/oauth/authorize",
        data={"csrf_token": csrf.group(1), "username": user, "password": password},
        allow_redirects=False,
        timeout=30,
    )
    assert answer.status_code == 303, answer.text
    location = answer.headers["Location"]
    assert location.startswith(redirect_uri)
    code = parse_qs(urlsplit(location).query)["code"][0]
    token = requests.post(
        f"{base}/oauth/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "client_id": "vna-viewer",
            "code_verifier": verifier,
        },
        timeout=30,
    )
    assert token.status_code == 200, token.text
    return str(token.json()["access_token"])


def _studies(base: str, token: str) -> dict[str, str]:
    """Study UID -> patient ID of what ``token`` finds."""
    answer = requests.get(
        f"{base}/dicom-web/studies",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    return {s["0020000D"]["Value"][0]: s["00100020"]["Value"][0] for s in answer.json()}


def _files_containing(home: Path, needle: bytes) -> list[Path]:
    return [p for p in home.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_the_demo_ends_with_a_way_in(fresh_archive: Callable[[], Archive]) -> None:
    arch = fresh_archive()
    base = f"http://127.0.0.1:{arch.http_port}"
    wait_until(lambda: requests.get(f"{base}/healthz", timeout=5).ok, "the gateway")

    first = arch.vna("demo", "--studies", "2", "--slices", "2")
    viewer, user = _printed(first.stdout, "viewer"), _printed(first.stdout, "sign in as")
    password, link = _printed(first.stdout, "password"), _printed(first.stdout, "share link")
    assert viewer == f"{base}/viewer/", first.stdout
    assert user == DEMO_USER
    assert password is not None and len(password) >= 16, first.stdout
    assert link is not None and link.startswith(f"{base}/share/"), first.stdout

    # the staff way: sign in as the printed user, see the demo hospital's studies
    assert requests.get(viewer, timeout=30).status_code == 200
    token = _sign_in(base, user, password)
    demo = _studies(base, token)
    assert len(demo) == 2 and all(p.startswith("DEMO") for p in demo.values()), demo

    # the visitor's way: the printed link's page, then its secret (the fragment) for a token
    parts = urlsplit(link)
    link_id = parts.path.rsplit("/", 1)[1]
    assert requests.get(f"{base}{parts.path}", timeout=30).status_code == 200
    opened = requests.post(
        f"{base}/share/{link_id}/open", json={"secret": parts.fragment, "pin": None}, timeout=30
    )
    assert opened.status_code == 200, opened.text
    shared = opened.json()["access_token"]
    (shared_study,) = _studies(base, shared)  # one study, the first demo study
    assert shared_study in demo

    # printed once, kept nowhere in clear: no log, database or file under the home has it
    assert _files_containing(arch.home, password.encode()) == []

    # a second demo does not fail on the existing user: it says so and prints a new link
    second = arch.vna("demo", "--studies", "1", "--slices", "2")
    assert _printed(second.stdout, "password") is None, second.stdout
    assert "made by an earlier demo" in second.stdout
    again = _printed(second.stdout, "share link")
    assert again is not None and again != link
    assert _studies(base, _sign_in(base, DEMO_USER, password)).keys() >= demo.keys()


def test_the_demo_does_not_log_each_instance(
    fresh_archive: Callable[[], Archive],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`vna up` logs at INFO; pynetdicom would add two lines per C-STORE under the bar."""
    arch = fresh_archive()
    for name, value in arch.env().items():
        if name.startswith("VNA_"):
            monkeypatch.setenv(name, value)
    settings = load_settings(arch.home)
    caplog.set_level(logging.INFO)
    loaded = load_demo(settings, 1, 3, lambda _total: None, lambda: None)
    assert loaded.stored == 6 and len(loaded.study_uids) == 1  # two series of 3
    chatty = [r for r in caplog.records if r.name.startswith("pynetdicom")]
    assert [r for r in chatty if r.levelno < logging.WARNING] == []
    assert logging.getLogger("pynetdicom").level == logging.NOTSET  # put back afterwards
