"""The authorization code flow's state: PKCE, one-time codes, refresh rotation, revocation."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
from authlib.oauth2.rfc6749.errors import InvalidGrantError, InvalidRequestError, InvalidScopeError
from sqlalchemy import create_engine, text

from security.authorization import (
    AuthorizationStore,
    Grant,
    valid_code_challenge,
    verify_pkce,
)
from tests.catalogdb import migrated
from tests.unit.support import REDIRECT, challenge_of, code_for, request_for


@pytest.fixture
def store(tmp_path: Path) -> AuthorizationStore:
    return AuthorizationStore(
        create_engine(migrated(f"sqlite:///{tmp_path / 'a.db'}")), code_lifetime=60
    )


@pytest.fixture
def verifier() -> str:
    return secrets.token_urlsafe(48)


def test_pkce_s256(verifier: str) -> None:
    # RFC 7636 appendix B example
    rfc_verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert verify_pkce(rfc_verifier, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM")
    assert not verify_pkce(rfc_verifier, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cN")
    assert not verify_pkce("short", challenge_of("short"))  # verifiers have 43..128 chars
    assert valid_code_challenge(challenge_of(verifier))
    assert not valid_code_challenge("plain-text-challenge")


def test_code_redeems_once_with_the_right_verifier(
    store: AuthorizationStore, verifier: str
) -> None:
    code = code_for(store, verifier)
    grant = store.redeem_code(
        code, client_id="viewer", redirect_uri=REDIRECT, code_verifier=verifier
    )
    assert grant.user == "alice" and grant.institution == "Hospital A"
    assert grant.scopes == frozenset({"openid", "dicom.read"}) and grant.nonce == "n0"
    with pytest.raises(InvalidGrantError, match="already used"):
        store.redeem_code(code, client_id="viewer", redirect_uri=REDIRECT, code_verifier=verifier)
    with store.engine.connect() as conn:
        stored = conn.execute(text("SELECT * FROM oauth_codes")).all()
    assert code not in repr(stored)


@pytest.mark.parametrize(
    ("client_id", "redirect_uri", "wrong_verifier", "message"),
    [
        ("other", REDIRECT, False, "another client"),
        ("viewer", REDIRECT + "x", False, "redirect_uri"),
        ("viewer", None, False, "redirect_uri"),
        ("viewer", REDIRECT, True, "PKCE"),
    ],
)
def test_code_refusals_spend_the_code(
    store: AuthorizationStore,
    verifier: str,
    client_id: str,
    redirect_uri: str | None,
    wrong_verifier: bool,
    message: str,
) -> None:
    code = code_for(store, verifier)
    presented = secrets.token_urlsafe(48) if wrong_verifier else verifier
    with pytest.raises(InvalidGrantError, match=message):
        store.redeem_code(
            code, client_id=client_id, redirect_uri=redirect_uri, code_verifier=presented
        )
    with pytest.raises(InvalidGrantError, match="already used"):
        store.redeem_code(code, client_id="viewer", redirect_uri=REDIRECT, code_verifier=verifier)


def test_code_needs_a_verifier_and_expires(store: AuthorizationStore, verifier: str) -> None:
    code = code_for(store, verifier)
    with pytest.raises(InvalidRequestError):
        store.redeem_code(code, client_id="viewer", redirect_uri=REDIRECT, code_verifier=None)
    old = code_for(store, verifier, now=0.0)
    with pytest.raises(InvalidGrantError, match="expired"):
        store.redeem_code(old, client_id="viewer", redirect_uri=REDIRECT, code_verifier=verifier)
    with pytest.raises(InvalidGrantError, match="unknown"):
        store.redeem_code(
            "made-up", client_id="viewer", redirect_uri=REDIRECT, code_verifier=verifier
        )


def _grant(store: AuthorizationStore, verifier: str) -> Grant:
    code = code_for(store, verifier)
    return store.redeem_code(
        code, client_id="viewer", redirect_uri=REDIRECT, code_verifier=verifier
    )


def test_refresh_rotation_and_reuse_revokes_the_family(
    store: AuthorizationStore, verifier: str
) -> None:
    grant = _grant(store, verifier)
    first = store.issue_refresh(grant, now=2000)
    spent = store.spend_refresh(first, client_id="viewer", now=2001)
    assert spent.user == "alice" and spent.family == grant.family
    second = store.issue_refresh(spent, now=2001)
    assert second != first
    third = store.issue_refresh(store.spend_refresh(second, client_id="viewer", now=2002), now=2002)
    # the first token presented again: it leaked; every token of the login dies
    with pytest.raises(InvalidGrantError, match="already used"):
        store.spend_refresh(first, client_id="viewer", now=2003)
    with pytest.raises(InvalidGrantError, match="revoked"):
        store.spend_refresh(third, client_id="viewer", now=2003)


def test_refresh_refusals(store: AuthorizationStore, verifier: str) -> None:
    grant = _grant(store, verifier)
    token = store.issue_refresh(grant, now=2000)
    with pytest.raises(InvalidGrantError, match="unknown"):
        store.spend_refresh(token, client_id="someone-else", now=2001)
    with pytest.raises(InvalidScopeError):
        store.spend_refresh(token, client_id="viewer", scopes=frozenset({"admin"}), now=2001)
    # refused for scope: not spent; narrowing is fine
    narrowed = store.spend_refresh(
        token, client_id="viewer", scopes=frozenset({"dicom.read"}), now=2001
    )
    assert narrowed.scopes == frozenset({"dicom.read"})
    late = store.issue_refresh(grant, now=2000)
    with pytest.raises(InvalidGrantError, match="expired"):
        store.spend_refresh(late, client_id="viewer", now=2000 + store.refresh_lifetime + 1)
    # the session limit caps a token's life from the login (auth_time 1000)
    capped = store.issue_refresh(grant, now=1000 + store.session_lifetime - 10)
    with pytest.raises(InvalidGrantError, match="expired"):
        store.spend_refresh(capped, client_id="viewer", now=1000 + store.session_lifetime + 1)


def test_revocation(store: AuthorizationStore, verifier: str) -> None:
    grant = _grant(store, verifier)
    token = store.issue_refresh(grant)
    assert not store.revoke_refresh(token, client_id="another-client")
    assert store.revoke_refresh(token, client_id="viewer")
    with pytest.raises(InvalidGrantError, match="revoked"):
        store.spend_refresh(token, client_id="viewer")
    assert not store.revoke_refresh("unknown", client_id="viewer")
    other = store.issue_refresh(_grant(store, verifier))
    assert store.revoke_user("alice", "viewer") == 1
    with pytest.raises(InvalidGrantError, match="revoked"):
        store.spend_refresh(other, client_id="viewer")


def test_a_reused_code_revokes_its_refresh_tokens(store: AuthorizationStore, verifier: str) -> None:
    code = code_for(store, verifier)
    grant = store.redeem_code(
        code, client_id="viewer", redirect_uri=REDIRECT, code_verifier=verifier
    )
    token = store.issue_refresh(grant)
    with pytest.raises(InvalidGrantError):
        store.redeem_code(code, client_id="viewer", redirect_uri=REDIRECT, code_verifier=verifier)
    with pytest.raises(InvalidGrantError, match="revoked"):
        store.spend_refresh(token, client_id="viewer")


def test_login_form_is_bound_to_the_browser(store: AuthorizationStore, verifier: str) -> None:
    binding = secrets.token_urlsafe(32)
    csrf = store.begin_login(request_for(verifier), binding, now=5000)
    assert store.pending_login(csrf, binding, now=5001) == request_for(verifier)
    assert store.pending_login(csrf, secrets.token_urlsafe(32), now=5001) is None
    assert store.pending_login("forged", binding, now=5001) is None
    assert store.pending_login(csrf, binding, now=5000 + store.login_lifetime + 1) is None
    assert store.finish_login(csrf)
    assert not store.finish_login(csrf)
    assert store.pending_login(csrf, binding, now=5001) is None


def test_id_token_claims_and_hint(tmp_path: Path) -> None:
    from joserfc import jwt
    from joserfc.jwk import KeySet

    from security.issuer import EmbeddedIssuer

    issuer = EmbeddedIssuer.open_or_create(
        tmp_path, "https://vna.example", "https://vna.example/dicom-web"
    )
    token = issuer.mint_id_token(
        subject="alice", client_id="viewer", auth_time=1000, nonce="n1", now=2000
    )
    decoded = jwt.decode(token, KeySet.import_key_set(issuer.jwks()), algorithms=["ES256"])
    assert decoded.header["typ"] == "JWT"  # never mistaken for an at+jwt access token
    claims = decoded.claims
    assert (claims["iss"], claims["sub"], claims["aud"], claims["azp"]) == (
        "https://vna.example", "alice", "viewer", "viewer",
    )  # fmt: skip
    assert (claims["auth_time"], claims["nonce"], claims["iat"]) == (1000, "n1", 2000)
    assert claims["exp"] > claims["iat"]
    assert issuer.read_id_token(token) == claims  # an expired token is still a logout hint
    other = EmbeddedIssuer.open_or_create(tmp_path / "other", "https://vna.example", "x")
    assert other.read_id_token(token) is None
    access = issuer.mint(subject="alice", institution="A", scopes=["dicom.read"])
    assert issuer.read_id_token(access) is None
