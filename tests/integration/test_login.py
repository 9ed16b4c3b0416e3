"""People sign in through the embedded issuer: authorization code + PKCE against a real
gateway, then the tokens at work (QIDO with institution scoping), refresh rotation,
revocation, and the refusals (wrong password audited, lock-out, redirect URI, PKCE, code
reuse)."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import sqlite3
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from joserfc import jwt
from joserfc.jwk import KeySet

from tests.integration.harness import Archive
from tests.integration.sites import Gateway

PASSWORD = "a long test password 1"
CLIENT_ID = "viewer-test"
_CSRF = re.compile(r"name='csrf_token' value='([^']+)'")


@dataclass
class Login:
    gateway: Gateway
    redirect_uri: str

    def authorize_params(self, verifier: str, **extra: str) -> dict[str, str]:
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
        params = {
            "response_type": "code",
            "client_id": CLIENT_ID,
            "redirect_uri": self.redirect_uri,
            "scope": "openid dicom.read dicom.write",
            "state": secrets.token_urlsafe(8),
            "nonce": secrets.token_urlsafe(8),
            "code_challenge": challenge.rstrip(b"=").decode(),
            "code_challenge_method": "S256",
        }
        params.update(extra)
        return params

    def form(self, session: requests.Session, params: dict[str, str]) -> requests.Response:
        return session.get(
            f"{self.gateway.url}/oauth/authorize", params=params, allow_redirects=False, timeout=30
        )

    def post(
        self, session: requests.Session, csrf: str, user: str, password: str
    ) -> requests.Response:
        return session.post(
            f"{self.gateway.url}/oauth/authorize",
            data={"csrf_token": csrf, "username": user, "password": password},
            allow_redirects=False,
            timeout=30,
        )

    def sign_in(
        self, user: str, password: str = PASSWORD, **extra: str
    ) -> tuple[str, str, dict[str, str]]:
        """The whole browser part: returns (code, verifier, authorization params)."""
        verifier = secrets.token_urlsafe(48)
        params = self.authorize_params(verifier, **extra)
        session = requests.Session()
        page = self.form(session, params)
        assert page.status_code == 200, page.text
        match = _CSRF.search(page.text)
        assert match is not None
        answer = self.post(session, match.group(1), user, password)
        assert answer.status_code == 303, answer.text
        # follow the redirect to the (registered) redirect URI, as the browser does
        landed = session.get(answer.headers["Location"], timeout=30)
        assert landed.status_code == 200
        query = parse_qs(urlsplit(landed.url).query)
        assert query["state"] == [params["state"]]
        assert query["iss"] == [self.gateway.url]
        return query["code"][0], verifier, params

    def exchange(self, code: str, verifier: str | None, **extra: str) -> requests.Response:
        data = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.redirect_uri,
            "client_id": CLIENT_ID,
        }
        if verifier is not None:
            data["code_verifier"] = verifier
        data.update(extra)
        return requests.post(f"{self.gateway.url}/oauth/token", data=data, timeout=30)

    def refresh(self, token: str) -> requests.Response:
        data = {"grant_type": "refresh_token", "refresh_token": token, "client_id": CLIENT_ID}
        return requests.post(f"{self.gateway.url}/oauth/token", data=data, timeout=30)

    def tokens(self, user: str) -> dict[str, str]:
        code, verifier, _ = self.sign_in(user)
        answer = self.exchange(code, verifier)
        assert answer.status_code == 200, answer.text
        return dict(answer.json())


@pytest.fixture(scope="module")
def login(archive: Archive, gateway: Gateway, tmp_path_factory: pytest.TempPathFactory) -> Login:
    redirect_uri = f"{gateway.url}/healthz"  # a page of the gateway: the redirect can be followed
    made = archive.vna(
        "client", "add", CLIENT_ID, "--public", "--redirect-uri", redirect_uri,
        "--scopes", "dicom.read dicom.write", "--json",
    )  # fmt: skip
    assert json.loads(made.stdout)["client_id"] == CLIENT_ID
    assert "client_secret" not in made.stdout
    secret_file = tmp_path_factory.mktemp("pw") / "password"
    secret_file.write_text(PASSWORD + "\n")
    for user, institution in [
        ("alice", "Hospital A"),
        ("bob", "Hospital B"),
        ("carol", "Hospital A"),
        ("dave", "Hospital A"),
    ]:
        added = archive.vna(
            "user", "add", user, "--institution", institution,
            "--password-file", str(secret_file), "--scopes", "dicom.read",
        )  # fmt: skip
        assert PASSWORD not in added.stdout + added.stderr
    return Login(gateway, redirect_uri)


def _audit_bodies(archive: Archive) -> list[dict[str, object]]:
    db = sqlite3.connect(archive.home / "catalog.db")
    try:
        rows = db.execute("SELECT body FROM audit_events ORDER BY seq").fetchall()
    finally:
        db.close()
    return [json.loads(body) for (body,) in rows]


def test_discovery_names_the_endpoints(login: Login) -> None:
    doc = requests.get(f"{login.gateway.url}/.well-known/openid-configuration", timeout=10).json()
    base = login.gateway.url
    assert doc["authorization_endpoint"] == f"{base}/oauth/authorize"
    assert doc["token_endpoint"] == f"{base}/oauth/token"
    assert doc["revocation_endpoint"] == f"{base}/oauth/revoke"
    assert doc["userinfo_endpoint"] == f"{base}/oauth/userinfo"
    assert doc["end_session_endpoint"] == f"{base}/oauth/logout"
    assert doc["code_challenge_methods_supported"] == ["S256"]
    assert doc["response_types_supported"] == ["code"]
    assert {"authorization_code", "refresh_token", "client_credentials"} <= set(
        doc["grant_types_supported"]
    )
    assert {"openid", "dicom.read"} <= set(doc["scopes_supported"])


def test_login_page_is_locked_down(login: Login) -> None:
    session = requests.Session()
    page = login.form(session, login.authorize_params(secrets.token_urlsafe(48)))
    assert page.status_code == 200
    csp = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert page.headers["X-Frame-Options"] == "DENY"
    assert page.headers["Referrer-Policy"] == "no-referrer"
    assert "http" not in page.text.split("<body>")[1].replace(login.gateway.url, "")  # no assets
    cookie = next(c for c in session.cookies if c.name == "vna_login")
    assert cookie.has_nonstandard_attr("HttpOnly")


def test_code_flow_tokens_and_institution_scoping(login: Login) -> None:
    gw = login.gateway
    code, verifier, params = login.sign_in("alice")
    answer = login.exchange(code, verifier)
    assert answer.status_code == 200, answer.text
    assert answer.headers["Cache-Control"] == "no-store"
    body = answer.json()
    # alice may read only: dicom.write was asked for but is not hers
    assert body["scope"] == "dicom.read openid"
    keys = KeySet.import_key_set(requests.get(f"{gw.url}/.well-known/jwks.json", timeout=10).json())
    id_token = jwt.decode(body["id_token"], keys, algorithms=["ES256"]).claims
    assert id_token["iss"] == gw.url and id_token["aud"] == CLIENT_ID
    assert id_token["sub"] == "alice" and id_token["nonce"] == params["nonce"]
    assert id_token["exp"] > id_token["iat"] and "auth_time" in id_token
    access = jwt.decode(body["access_token"], keys, algorithms=["ES256"]).claims
    assert access["institution"] == "Hospital A" and access["client_id"] == CLIENT_ID

    client = DICOMwebClient(gw.root, headers={"Authorization": f"Bearer {body['access_token']}"})
    found = client.search_for_studies(search_filters={"StudyInstanceUID": gw.study_uid})
    assert [s["0020000D"]["Value"][0] for s in found] == [gw.study_uid]
    info = requests.get(
        f"{gw.url}/oauth/userinfo",
        headers={"Authorization": f"Bearer {body['access_token']}"},
        timeout=10,
    )
    assert info.json() == {
        "sub": "alice",
        "preferred_username": "alice",
        "institution": "Hospital A",
    }

    # bob (Hospital B) signs in the same way and sees nothing of Hospital A
    bob = login.tokens("bob")
    other = DICOMwebClient(gw.root, headers={"Authorization": f"Bearer {bob['access_token']}"})
    assert other.search_for_studies(search_filters={"StudyInstanceUID": gw.study_uid}) == []


def test_refresh_rotation_reuse_and_revocation(login: Login) -> None:
    tokens = login.tokens("alice")
    first = tokens["refresh_token"]
    renewed = login.refresh(first)
    assert renewed.status_code == 200, renewed.text
    second = renewed.json()["refresh_token"]
    assert second != first and renewed.json()["access_token"] != tokens["access_token"]
    assert "id_token" in renewed.json()
    # the old one again: reuse; the family (and so the newest token) is revoked
    reused = login.refresh(first)
    assert (reused.status_code, reused.json()["error"]) == (400, "invalid_grant")
    assert login.refresh(second).json()["error"] == "invalid_grant"

    # RFC 7009 revocation of a fresh login's refresh token
    again = login.tokens("alice")["refresh_token"]
    revoke = f"{login.gateway.url}/oauth/revoke"
    answer = requests.post(revoke, data={"token": again, "client_id": CLIENT_ID}, timeout=10)
    assert answer.status_code == 200
    assert login.refresh(again).json()["error"] == "invalid_grant"
    unknown = requests.post(revoke, data={"token": "nope", "client_id": CLIENT_ID}, timeout=10)
    assert unknown.status_code == 200
    anonymous = requests.post(revoke, data={"token": again}, timeout=10)
    assert anonymous.status_code == 401


def test_authorization_refusals(login: Login) -> None:
    verifier = secrets.token_urlsafe(48)
    session = requests.Session()
    # an unregistered redirect URI is never redirected to
    bad = login.form(
        session, login.authorize_params(verifier, redirect_uri="https://evil.example/cb")
    )
    assert bad.status_code == 400 and "Location" not in bad.headers
    near = login.form(
        session, login.authorize_params(verifier, redirect_uri=login.redirect_uri + "/")
    )
    assert near.status_code == 400
    unknown = login.form(session, login.authorize_params(verifier, client_id="nobody"))
    assert unknown.status_code == 400
    # PKCE is required, and only S256
    params = login.authorize_params(verifier)
    del params["code_challenge"], params["code_challenge_method"]
    missing = login.form(session, params)
    assert missing.status_code == 303
    assert parse_qs(urlsplit(missing.headers["Location"]).query)["error"] == ["invalid_request"]
    plain = login.form(session, login.authorize_params(verifier, code_challenge_method="plain"))
    assert parse_qs(urlsplit(plain.headers["Location"]).query)["error"] == ["invalid_request"]
    implicit = login.form(session, login.authorize_params(verifier, response_type="token"))
    query = parse_qs(urlsplit(implicit.headers["Location"]).query)
    assert query["error"] == ["unsupported_response_type"]

    # a form post without the browser's cookie, or with a made-up CSRF token, is refused
    page = login.form(session, login.authorize_params(verifier))
    csrf = _CSRF.search(page.text)
    assert csrf is not None
    stranger = login.post(requests.Session(), csrf.group(1), "alice", PASSWORD)
    assert stranger.status_code == 403 and "Location" not in stranger.headers
    forged = login.post(session, "forged-token", "alice", PASSWORD)
    assert forged.status_code == 403

    # the code: needs the verifier, the same redirect URI, and works once
    code, verifier, _ = login.sign_in("alice")
    no_pkce = login.exchange(code, None)
    assert (no_pkce.status_code, no_pkce.json()["error"]) == (400, "invalid_request")
    code, verifier, _ = login.sign_in("alice")
    wrong = login.exchange(code, secrets.token_urlsafe(48))
    assert wrong.json()["error"] == "invalid_grant"
    code, verifier, _ = login.sign_in("alice")
    moved = login.exchange(code, verifier, redirect_uri=login.redirect_uri + "?x=1")
    assert moved.json()["error"] == "invalid_grant"
    code, verifier, _ = login.sign_in("alice")
    first = login.exchange(code, verifier)
    assert first.status_code == 200
    second = login.exchange(code, verifier)
    assert (second.status_code, second.json()["error"]) == (400, "invalid_grant")
    # reuse of the code revoked what it had issued
    assert login.refresh(first.json()["refresh_token"]).json()["error"] == "invalid_grant"


def test_wrong_password_is_audited_and_locks_the_account(login: Login, archive: Archive) -> None:
    verifier = secrets.token_urlsafe(48)
    session = requests.Session()
    page = login.form(session, login.authorize_params(verifier))
    match = _CSRF.search(page.text)
    assert match is not None
    csrf = match.group(1)
    wrong = login.post(session, csrf, "carol", "not her password")
    assert wrong.status_code == 200 and "Wrong user name or password" in wrong.text
    assert "Location" not in wrong.headers
    failures = [
        b for b in _audit_bodies(archive)
        if b["event"] == "authentication" and b["user"] == "carol" and b["outcome"] == 4
    ]  # fmt: skip
    assert len(failures) == 1 and failures[0]["detail"]["refused"] == "bad_credentials"  # type: ignore[index]

    for _ in range(4):  # five wrong in a row lock the account (gateway default)
        assert "Location" not in login.post(session, csrf, "carol", "still wrong!!").headers
    locked = login.post(session, csrf, "carol", PASSWORD)
    assert locked.status_code == 200 and "Location" not in locked.headers
    refusals = [
        b["detail"]["refused"]  # type: ignore[index]
        for b in _audit_bodies(archive)
        if b["event"] == "authentication" and b["user"] == "carol"
    ]
    assert refusals[-1] == "locked" and refusals.count("bad_credentials") >= 4
    # a success is audited too; no password or token is ever in the log or the audit trail
    tokens = login.tokens("alice")
    successes = [
        b for b in _audit_bodies(archive)
        if b["event"] == "authentication" and b["user"] == "alice" and b["outcome"] == 0
    ]  # fmt: skip
    assert successes
    db = sqlite3.connect(archive.home / "catalog.db")
    try:
        dump = "\n".join(db.iterdump())
    finally:
        db.close()
    logged = login.gateway.log.read_text()
    for secret in (PASSWORD, "not her password", tokens["refresh_token"], tokens["access_token"]):
        assert secret not in dump
        assert secret not in logged
    assert "code=" not in logged


def test_disabled_user_cannot_sign_in_or_refresh(login: Login, archive: Archive) -> None:
    tokens = login.tokens("dave")
    archive.vna("user", "disable", "dave")
    assert login.refresh(tokens["refresh_token"]).json()["error"] == "invalid_grant"
    verifier = secrets.token_urlsafe(48)
    session = requests.Session()
    page = login.form(session, login.authorize_params(verifier))
    match = _CSRF.search(page.text)
    assert match is not None
    refused = login.post(session, match.group(1), "dave", PASSWORD)
    assert "Location" not in refused.headers
    listed = {u["name"]: u for u in json.loads(archive.vna("user", "list", "--json").stdout)}
    assert listed["dave"]["disabled"] is True and listed["alice"]["disabled"] is False
    assert PASSWORD not in json.dumps(listed)


def test_logout_revokes_and_returns_to_the_app(login: Login) -> None:
    tokens = login.tokens("alice")
    answer = requests.get(
        f"{login.gateway.url}/oauth/logout",
        params={
            "id_token_hint": tokens["id_token"],
            "post_logout_redirect_uri": f"{login.gateway.url}/healthz",
            "state": "s1",
        },
        allow_redirects=False,
        timeout=10,
    )
    assert answer.status_code == 302
    assert answer.headers["Location"] == f"{login.gateway.url}/healthz?state=s1"
    assert login.refresh(tokens["refresh_token"]).json()["error"] == "invalid_grant"
    elsewhere = requests.get(
        f"{login.gateway.url}/oauth/logout",
        params={"client_id": CLIENT_ID, "post_logout_redirect_uri": "https://evil.example/"},
        allow_redirects=False,
        timeout=10,
    )
    assert elsewhere.status_code == 200 and "Location" not in elsewhere.headers
