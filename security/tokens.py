"""JWT access tokens (RFC 9068): validate one and tell who is asking.

The gateway is an OAuth 2.0 resource server. A bearer token is accepted only when

* its JWS signature verifies with a key of the JWKS of a *trusted issuer* (the embedded
  issuer of ``security/issuer.py`` or an external IdP such as Keycloak);
* its ``alg`` is on the allow-list (RS256, ES256, EdDSA): ``none`` and every HMAC
  algorithm are refused, which also closes the RS/HS confusion (a token "signed" with
  HS256 using the public key's bytes as the secret);
* ``iss`` names that issuer, ``aud`` contains our audience, ``exp`` is in the future and
  ``nbf``/``iat`` are not (within a small leeway), and ``sub``, ``jti`` and the
  institution claim are present;
* the JOSE header ``typ`` is ``at+jwt`` (RFC 9068 section 4), unless the issuer is
  configured not to require it (many IdPs still send ``JWT``).

What the token *reaches* is not decided here: scopes gate operations, and the data a
principal sees is decided by server-side records (its institution's studies plus
grants). A scope never means "all studies".

Failures raise :class:`InvalidToken` (HTTP 401) or :class:`InsufficientScope` (403),
authlib's RFC 6750 error classes, which carry their status and ``WWW-Authenticate``
value (``get_headers``). Messages never include the token.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6750 import InsufficientScopeError, InvalidTokenError
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError, JoseError, MissingKeyError
from joserfc.jwk import KeySet
from joserfc.jws import extract_compact

__all__ = [
    "ALLOWED_ALGORITHMS",
    "BEARER_ERRORS",
    "SCOPES",
    "InsufficientScope",
    "InvalidToken",
    "JwksSource",
    "MissingToken",
    "Principal",
    "RemoteJwks",
    "StaticJwks",
    "TokenValidator",
    "TrustedIssuer",
]

logger = logging.getLogger(__name__)

ALLOWED_ALGORITHMS: tuple[str, ...] = ("RS256", "ES256", "EdDSA", "Ed25519")
"""Asymmetric algorithms only: a resource server never holds a signing secret.

``Ed25519`` is the fully specified name RFC 9864 gives what ``EdDSA`` meant."""

SCOPES: frozenset[str] = frozenset(
    {
        "dicom.read",
        "dicom.write",
        "dicom.delete",
        "share",
        "export",
        "ai.submit",
        "audit.read",
        "admin",
    }
)
"""The scopes the archive understands (issue 3); unknown scopes in a token are ignored."""

_AT_JWT_TYPES = frozenset({"at+jwt", "application/at+jwt"})
_MAX_TOKEN_CHARS = 16384


def _header_safe(description: str) -> str:
    """``description`` within RFC 6749's error_description characters (authlib refuses
    others): quotes become apostrophes, backslashes and non-ASCII go."""
    text = description.replace("\\", "").replace('"', "'")
    return "".join(c if " " <= c <= "~" else "?" for c in text)


def _challenge(realm: str, error: str | None, description: str) -> str:
    """The ``WWW-Authenticate`` value (RFC 6750 section 3)."""
    parts = [f'realm="{realm}"']
    if error:
        parts += [f'error="{error}"', f'error_description="{description}"']
    return "Bearer " + ", ".join(parts)


class InvalidToken(InvalidTokenError):  # type: ignore[misc]  # authlib is untyped
    """No usable token: missing, malformed, badly signed, expired, or not meant for us
    (HTTP 401). ``description`` is for a person and never contains the token."""

    def __init__(self, description: str, *, realm: str = "vna") -> None:
        super().__init__(_header_safe(description), realm=realm)

    def get_headers(self) -> list[tuple[str, str]]:
        return [("WWW-Authenticate", _challenge(self.realm, self.error, self.description))]


class MissingToken(InvalidToken):
    """No credentials at all: RFC 6750 section 3.1 says answer without an error code."""

    def get_headers(self) -> list[tuple[str, str]]:
        return [("WWW-Authenticate", _challenge(self.realm, None, ""))]


class InsufficientScope(InsufficientScopeError):  # type: ignore[misc]  # authlib is untyped
    """A valid token that lacks the scope the operation needs (HTTP 403); the challenge
    names that scope (RFC 6750 section 3)."""

    def __init__(self, scope: str, *, realm: str = "vna") -> None:
        super().__init__(_header_safe(f"this operation needs the scope {scope!r}"))
        self.realm = realm
        self.scope = scope

    def get_headers(self) -> list[tuple[str, str]]:
        challenge = _challenge(self.realm, self.error, self.description)
        return [("WWW-Authenticate", f'{challenge}, scope="{_header_safe(self.scope)}"')]


BEARER_ERRORS: tuple[type[OAuth2Error], ...] = (InvalidTokenError, InsufficientScopeError)
"""What a resource server raises for a refused bearer token (RFC 6750 section 3.1)."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a validated access token speaks for.

    Attributes
    ----------
    subject : str
        ``sub``: the client (client_credentials) or the user.
    institution : str
        The institution claim: whose studies this principal reaches.
    scopes : frozenset of str
        ``scope``, split on spaces.
    token_id : str
        ``jti``, for audit records (never the token itself).
    """

    subject: str
    institution: str
    scopes: frozenset[str]
    token_id: str

    def has(self, scope: str) -> bool:
        """True when the token carries ``scope``."""
        return scope in self.scopes

    def require(self, scope: str) -> None:
        """Raise :class:`InsufficientScope` unless the token carries ``scope``."""
        if scope not in self.scopes:
            raise InsufficientScope(scope)


class JwksSource(Protocol):
    """Where the verification keys of one issuer come from."""

    def key_set(self, *, refresh: bool = False) -> KeySet:
        """The issuer's public keys; ``refresh`` asks for a fresh copy (unknown ``kid``)."""
        ...


class StaticJwks:
    """A JWKS given as a dict (``{"keys": [...]}``), e.g. the embedded issuer's.

    Private key members are dropped: only public keys verify tokens.
    """

    def __init__(self, jwks: Mapping[str, Any]) -> None:
        self._keys = _public_key_set(jwks)

    def key_set(self, *, refresh: bool = False) -> KeySet:
        return self._keys


class RemoteJwks:
    """A JWKS fetched over HTTPS from an external IdP, cached for ``ttl`` seconds.

    An unknown ``kid`` triggers at most one refetch per ``min_refresh`` seconds, so a
    flood of forged tokens cannot turn into a flood of requests to the IdP.

    Parameters
    ----------
    url : str
        The issuer's ``jwks_uri``.
    fetch : callable, optional
        ``fetch(url) -> dict``; the default uses ``requests`` with a timeout.
        This is blocking: call the validator from a worker thread.
    """

    def __init__(
        self,
        url: str,
        *,
        ttl: float = 300.0,
        min_refresh: float = 30.0,
        fetch: Callable[[str], Mapping[str, Any]] | None = None,
    ) -> None:
        self.url = url
        self.ttl = ttl
        self.min_refresh = min_refresh
        self._fetch = fetch or _http_fetch
        self._lock = threading.Lock()
        self._keys: KeySet | None = None
        self._fetched_at = 0.0

    def key_set(self, *, refresh: bool = False) -> KeySet:
        with self._lock:
            age = time.monotonic() - self._fetched_at
            stale = self._keys is None or age > self.ttl
            if stale or (refresh and age > self.min_refresh):
                try:
                    self._keys = _public_key_set(self._fetch(self.url))
                    self._fetched_at = time.monotonic()
                except Exception as exc:
                    logger.warning("could not fetch JWKS from %s: %s", self.url, exc)
                    if self._keys is None:
                        raise InvalidToken("the token issuer's keys are unavailable") from exc
            assert self._keys is not None
            return self._keys


def _http_fetch(url: str) -> Mapping[str, Any]:
    import requests  # only for external IdPs

    response = requests.get(url, timeout=10)
    response.raise_for_status()
    data = response.json()
    if not isinstance(data, dict):
        raise ValueError("a JWKS document is a JSON object")
    return data


def _public_key_set(jwks: Mapping[str, Any]) -> KeySet:
    keys = jwks.get("keys")
    if not isinstance(keys, list):
        raise ValueError('a JWKS is an object with a "keys" array')
    public = []
    for key in keys:
        if not isinstance(key, dict) or key.get("kty") == "oct":
            continue  # symmetric keys never verify access tokens
        imported = KeySet.import_key_set({"keys": [key]}).keys[0]
        public.append(imported.as_dict(private=False))
    return KeySet.import_key_set({"keys": public})


@dataclass(frozen=True, slots=True)
class TrustedIssuer:
    """An issuer whose access tokens the gateway accepts.

    Attributes
    ----------
    issuer : str
        Exact ``iss`` value.
    jwks : JwksSource
        Its verification keys.
    audience : str
        The value our resource server expects in ``aud``.
    institution_claim : str
        The claim naming the institution (a Keycloak mapper can emit it).
    require_at_jwt : bool
        Insist on ``typ: at+jwt`` as RFC 9068 says.
    """

    issuer: str
    jwks: JwksSource
    audience: str
    institution_claim: str = "institution"
    require_at_jwt: bool = True
    algorithms: tuple[str, ...] = field(default=ALLOWED_ALGORITHMS)


class TokenValidator:
    """Turns a bearer token into a :class:`Principal`, or raises :class:`InvalidToken`.

    Parameters
    ----------
    issuers : sequence of TrustedIssuer
        Tokens from any other issuer are refused.
    leeway : int
        Seconds of clock skew tolerated on ``exp``, ``nbf`` and ``iat``.
    now : callable, optional
        Clock (seconds since the epoch), for tests.
    """

    def __init__(
        self,
        issuers: Sequence[TrustedIssuer],
        *,
        leeway: int = 30,
        now: Callable[[], float] = time.time,
    ) -> None:
        if not issuers:
            raise ValueError("at least one trusted issuer is needed")
        self._issuers = {item.issuer: item for item in issuers}
        self.leeway = leeway
        self._now = now

    def validate(self, token: str) -> Principal:
        """Validate ``token`` (the compact JWS, without ``Bearer``).

        Raises
        ------
        InvalidToken
            For every reason a token is not acceptable; the message says which.
        """
        if not token or len(token) > _MAX_TOKEN_CHARS or token.count(".") != 2:
            raise InvalidToken("the access token is not a compact JWT")
        header, unverified = _peek(token)
        alg = header.get("alg")
        iss = unverified.get("iss")
        trusted = self._issuers.get(iss) if isinstance(iss, str) else None
        if trusted is None:
            raise InvalidToken("the token's issuer is not trusted")
        if alg not in trusted.algorithms:
            raise InvalidToken(f"the token's algorithm {alg!r} is not accepted")
        if trusted.require_at_jwt and str(header.get("typ", "")).lower() not in _AT_JWT_TYPES:
            raise InvalidToken('the token is not an access token (typ must be "at+jwt")')
        claims = self._verify(token, trusted)
        self._check_claims(claims, trusted)
        return _principal(claims, trusted)

    def _verify(self, token: str, trusted: TrustedIssuer) -> dict[str, Any]:
        for attempt in (False, True):
            keys = trusted.jwks.key_set(refresh=attempt)
            try:
                decoded = jwt.decode(token, keys, algorithms=list(trusted.algorithms))
            except (MissingKeyError, InvalidKeyIdError) as exc:
                if attempt:  # still no key for this kid after a refetch
                    raise InvalidToken("no key of the issuer matches the token") from exc
                continue  # unknown key id: the issuer may have rotated its keys
            except (JoseError, ValueError, TypeError) as exc:
                raise InvalidToken("the token's signature does not verify") from exc
            return dict(decoded.claims)
        raise InvalidToken("the token's signature does not verify")  # pragma: no cover

    def _check_claims(self, claims: Mapping[str, Any], trusted: TrustedIssuer) -> None:
        now = self._now()
        if claims.get("iss") != trusted.issuer:
            raise InvalidToken("the token's issuer is not trusted")
        aud = claims.get("aud")
        audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
        if trusted.audience not in audiences:
            raise InvalidToken("the token is meant for another audience")
        exp = _number(claims.get("exp"))
        if exp is None:
            raise InvalidToken("the token has no expiry")
        if exp <= now - self.leeway:
            raise InvalidToken("the token has expired")
        for name in ("nbf", "iat"):
            if name == "nbf" and claims.get(name) is None:
                continue
            value = _number(claims.get(name))
            if value is None:
                raise InvalidToken(f"the token's {name!r} claim is missing or not a time")
            if value > now + self.leeway:
                raise InvalidToken("the token is not valid yet")
        for name in ("sub", "jti", trusted.institution_claim):
            if not isinstance(claims.get(name), str) or not claims[name]:
                raise InvalidToken(f"the token has no {name!r} claim")
        scope = claims.get("scope", "")
        if not isinstance(scope, str):
            raise InvalidToken("the token's 'scope' claim is not a space-separated string")


def _number(value: object) -> float | None:
    """A NumericDate claim as a number, or None when it is missing or not a number."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _peek(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and claims *before* verification: only to choose the issuer and keys."""
    try:
        obj = extract_compact(token.encode("ascii"))
        claims = json.loads(obj.payload)
    except (JoseError, ValueError, UnicodeError) as exc:
        raise InvalidToken("the access token is not a well-formed JWT") from exc
    header = dict(obj.headers())
    if not isinstance(claims, dict):
        raise InvalidToken("the access token's claims are not a JSON object")
    return header, claims


def _principal(claims: Mapping[str, Any], trusted: TrustedIssuer) -> Principal:
    scopes: Iterable[str] = str(claims.get("scope", "")).split()
    return Principal(
        subject=str(claims["sub"]),
        institution=str(claims[trusted.institution_claim]),
        scopes=frozenset(scopes),
        token_id=str(claims["jti"]),
    )
