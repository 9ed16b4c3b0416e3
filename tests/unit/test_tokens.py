"""Access-token validation (RFC 9068): every refusal case, with real generated keys."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, OKPKey, RSAKey

from security.issuer import SIGNING_KEY_FILE, EmbeddedIssuer
from security.tokens import (
    InsufficientScope,
    InvalidToken,
    MissingToken,
    RemoteJwks,
    StaticJwks,
    TokenValidator,
    TrustedIssuer,
)

ISS = "https://vna.example.org"
AUD = "https://vna.example.org/dicom-web"
NOW = 1_800_000_000


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "iss": ISS,
        "sub": "pacs-a",
        "aud": AUD,
        "client_id": "pacs-a",
        "iat": NOW - 10,
        "nbf": NOW - 10,
        "exp": NOW + 300,
        "jti": "t-1",
        "scope": "dicom.read dicom.write",
        "institution": "Hospital A",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


@pytest.fixture
def issuer(tmp_path: Path) -> EmbeddedIssuer:
    return EmbeddedIssuer.open_or_create(tmp_path / "keys", ISS, AUD)


@pytest.fixture
def validator(issuer: EmbeddedIssuer) -> TokenValidator:
    return TokenValidator([issuer.trusted()], now=lambda: NOW)


def sign(key: Any, alg: str, payload: dict[str, Any], **header: Any) -> str:
    head = {"alg": alg, "typ": "at+jwt", **header}
    return jwt.encode(head, payload, key, algorithms=[alg])


def test_embedded_issuer_token_is_accepted(
    issuer: EmbeddedIssuer, validator: TokenValidator
) -> None:
    token = issuer.mint(
        subject="pacs-a", institution="Hospital A", scopes=["dicom.read", "share"], now=NOW
    )
    principal = validator.validate(token)
    assert principal.subject == "pacs-a"
    assert principal.institution == "Hospital A"
    assert principal.scopes == frozenset({"dicom.read", "share"})
    assert principal.token_id
    principal.require("dicom.read")


def test_signing_key_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    first = EmbeddedIssuer.open_or_create(tmp_path / "keys", ISS, AUD)
    second = EmbeddedIssuer.open_or_create(tmp_path / "keys", ISS, AUD)
    assert first.kid == second.kid
    mode = stat.S_IMODE(os.stat(tmp_path / "keys" / SIGNING_KEY_FILE).st_mode)
    assert mode == 0o600


def test_jwks_holds_no_private_member(issuer: EmbeddedIssuer) -> None:
    (key,) = issuer.jwks()["keys"]
    assert "d" not in key
    assert key["kid"] == issuer.kid and key["alg"] == "ES256"


def test_missing_scope_is_403_insufficient_scope(
    issuer: EmbeddedIssuer, validator: TokenValidator
) -> None:
    token = issuer.mint(subject="x", institution="Hospital A", scopes=["dicom.read"], now=NOW)
    principal = validator.validate(token)
    with pytest.raises(InsufficientScope) as caught:
        principal.require("dicom.delete")
    assert caught.value.status_code == 403
    assert 'error="insufficient_scope"' in dict(caught.value.get_headers())["WWW-Authenticate"]


def test_expired(issuer: EmbeddedIssuer, validator: TokenValidator) -> None:
    token = issuer.mint(
        subject="x", institution="Hospital A", scopes=["dicom.read"], now=NOW - 3600
    )
    with pytest.raises(InvalidToken, match="expired"):
        validator.validate(token)


def test_not_yet_valid(issuer: EmbeddedIssuer, validator: TokenValidator) -> None:
    token = issuer.mint(
        subject="x", institution="Hospital A", scopes=["dicom.read"], now=NOW + 3600
    )
    with pytest.raises(InvalidToken, match="not valid yet"):
        validator.validate(token)


def test_leeway_tolerates_small_skew(issuer: EmbeddedIssuer, validator: TokenValidator) -> None:
    token = issuer.mint(subject="x", institution="Hospital A", scopes=[], now=NOW + 20)
    assert validator.validate(token).subject == "x"


def test_wrong_audience(tmp_path: Path, validator: TokenValidator) -> None:
    other = EmbeddedIssuer.open_or_create(tmp_path / "keys", ISS, "https://elsewhere/api")
    token = other.mint(subject="x", institution="Hospital A", scopes=["dicom.read"], now=NOW)
    with pytest.raises(InvalidToken, match="audience"):
        validator.validate(token)


def test_wrong_issuer(tmp_path: Path, validator: TokenValidator) -> None:
    other = EmbeddedIssuer.open_or_create(tmp_path / "keys", "https://evil.example", AUD)
    token = other.mint(subject="x", institution="Hospital A", scopes=["dicom.read"], now=NOW)
    with pytest.raises(InvalidToken, match="issuer"):
        validator.validate(token)


def test_key_of_another_issuer_does_not_verify(tmp_path: Path, validator: TokenValidator) -> None:
    stranger = EmbeddedIssuer.open_or_create(tmp_path / "other-keys", ISS, AUD)
    token = stranger.mint(subject="x", institution="Hospital A", scopes=["admin"], now=NOW)
    with pytest.raises(InvalidToken):
        validator.validate(token)


def test_alg_none_is_refused(validator: TokenValidator) -> None:
    header = b64(json.dumps({"alg": "none", "typ": "at+jwt"}).encode())
    body = b64(json.dumps(claims()).encode())
    with pytest.raises(InvalidToken, match="algorithm"):
        validator.validate(f"{header}.{body}.")


def test_hs256_signed_with_the_public_key_is_refused() -> None:
    """The RS/HS confusion: an attacker 'signs' with HMAC keyed by the public key."""
    rsa = RSAKey.generate_key(2048, private=True)
    public = rsa.as_dict(private=False)
    public["kid"] = "rsa-1"
    trusted = TrustedIssuer(ISS, StaticJwks({"keys": [public]}), AUD)
    validator = TokenValidator([trusted], now=lambda: NOW)
    genuine = sign(rsa, "RS256", claims(), kid="rsa-1")
    assert validator.validate(genuine).institution == "Hospital A"

    for secret in (rsa.as_pem(private=False), json.dumps(public).encode()):
        header = b64(json.dumps({"alg": "HS256", "typ": "at+jwt", "kid": "rsa-1"}).encode())
        body = b64(json.dumps(claims(scope="admin")).encode())
        mac = hmac.new(secret, f"{header}.{body}".encode(), hashlib.sha256).digest()
        with pytest.raises(InvalidToken, match="algorithm"):
            validator.validate(f"{header}.{body}.{b64(mac)}")


def test_tampered_signature(issuer: EmbeddedIssuer, validator: TokenValidator) -> None:
    token = issuer.mint(subject="x", institution="Hospital A", scopes=["dicom.read"], now=NOW)
    head, body, sig = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)))
    raw[5] ^= 0x01
    with pytest.raises(InvalidToken, match="signature"):
        validator.validate(f"{head}.{body}.{b64(bytes(raw))}")


def test_tampered_claims(issuer: EmbeddedIssuer, validator: TokenValidator) -> None:
    token = issuer.mint(subject="x", institution="Hospital B", scopes=["dicom.read"], now=NOW)
    head, _body, sig = token.split(".")
    forged = b64(json.dumps(claims(institution="Hospital A")).encode())
    with pytest.raises(InvalidToken, match="signature"):
        validator.validate(f"{head}.{forged}.{sig}")


def test_typ_must_be_at_jwt(tmp_path: Path, validator: TokenValidator) -> None:
    key = ECKey.import_key(
        EmbeddedIssuer.open_or_create(tmp_path / "keys", ISS, AUD)._key.as_pem(private=True)
    )
    same = EmbeddedIssuer(key, ISS, AUD)
    id_token_like = jwt.encode(
        {"alg": "ES256", "typ": "JWT", "kid": same.kid}, claims(), key, algorithms=["ES256"]
    )
    strict = TokenValidator([same.trusted()], now=lambda: NOW)
    with pytest.raises(InvalidToken, match="at\\+jwt"):
        strict.validate(id_token_like)
    lenient = TrustedIssuer(ISS, StaticJwks(same.jwks()), AUD, require_at_jwt=False)
    assert TokenValidator([lenient], now=lambda: NOW).validate(id_token_like).subject == "pacs-a"


@pytest.mark.parametrize("missing", ["sub", "jti", "institution", "exp", "iat"])
def test_missing_required_claim(missing: str) -> None:
    """Ed25519 keys, named by RFC 9864's fully specified algorithm."""
    key = OKPKey.generate_key("Ed25519", private=True)
    public = key.as_dict(private=False)
    public["kid"] = "ed"
    validator = TokenValidator(
        [TrustedIssuer(ISS, StaticJwks({"keys": [public]}), AUD)], now=lambda: NOW
    )
    assert validator.validate(sign(key, "Ed25519", claims(), kid="ed")).subject == "pacs-a"
    with pytest.raises(InvalidToken):
        validator.validate(sign(key, "Ed25519", claims(**{missing: None}), kid="ed"))


@pytest.mark.parametrize("garbage", ["", "abc", "a.b", "a.b.c", "x" * 20000 + ".a.b"])
def test_malformed(garbage: str, validator: TokenValidator) -> None:
    with pytest.raises(InvalidToken):
        validator.validate(garbage)


def test_remote_jwks_refetches_once_for_an_unknown_kid(tmp_path: Path) -> None:
    old = EmbeddedIssuer.open_or_create(tmp_path / "old", ISS, AUD)
    new = EmbeddedIssuer.open_or_create(tmp_path / "new", ISS, AUD)
    served = [old.jwks()]
    fetches: list[str] = []

    def fetch(url: str) -> dict[str, Any]:
        fetches.append(url)
        return served[0]

    remote = RemoteJwks("https://idp/jwks", fetch=fetch, min_refresh=0)
    validator = TokenValidator([TrustedIssuer(ISS, remote, AUD)], now=lambda: NOW)
    validator.validate(old.mint(subject="x", institution="A", scopes=[], now=NOW))
    served[0] = new.jwks()  # the IdP rotated its key
    validator.validate(new.mint(subject="x", institution="A", scopes=[], now=NOW))
    assert len(fetches) == 2


def test_www_authenticate_values() -> None:
    assert dict(MissingToken("no token").get_headers()) == {
        "WWW-Authenticate": 'Bearer realm="vna"'
    }
    value = dict(InvalidToken('bad "token"').get_headers())["WWW-Authenticate"]
    assert value.startswith('Bearer realm="vna", error="invalid_token"')
    assert "\"bad 'token'\"" in value
