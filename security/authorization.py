"""State of the authorization code flow: login forms, one-time codes, refresh tokens.

Everything a browser or client holds here is a random secret (``secrets``, 256 bits) and
the database keeps only its SHA-256, so a copy of the catalog lets nobody log in. A
secret of that strength needs no slow hash, and looking a row up by the hash of a
high-entropy secret leaks nothing useful through timing; the stored hashes are still
compared with :func:`hmac.compare_digest` where a second secret (the browser binding, the
PKCE verifier) is checked against a row.

* A **login request** is created when the login form is shown: it holds the validated
  authorization request (client, redirect URI, PKCE challenge, state, nonce, scope) under
  the hash of the form's CSRF token, bound to a cookie of the browser that got the form.
* An **authorization code** (RFC 6749 section 4.1, PKCE per RFC 7636, S256 only) lives
  ``code_lifetime`` seconds and is redeemed once; a second redemption revokes whatever was
  issued from the first (RFC 6749 section 4.1.2).
* **Refresh tokens** rotate (OAuth 2.0 Security BCP, RFC 9700 section 4.14): each use
  returns a new one in the same *family* and retires the old; presenting a retired one
  means it leaked, so the whole family is revoked.

Errors are authlib's OAuth 2.0 error classes, which carry the RFC 6749 error code.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from authlib.oauth2.rfc6749.errors import (
    InvalidGrantError,
    InvalidRequestError,
    InvalidScopeError,
)
from authlib.oauth2.rfc7636.challenge import (
    CODE_CHALLENGE_PATTERN,
    CODE_VERIFIER_PATTERN,
    create_s256_code_challenge,
)
from sqlalchemy import (
    Boolean,
    Column,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    delete,
    select,
    update,
)
from sqlalchemy.engine import Connection, Engine

from security.transactions import write_transaction

__all__ = [
    "AuthorizationRequest",
    "AuthorizationStore",
    "Grant",
    "valid_code_challenge",
    "verify_pkce",
]

metadata = MetaData()

oauth_login_requests = Table(
    "oauth_login_requests",
    metadata,
    Column("csrf_sha256", LargeBinary(32), primary_key=True),
    Column("binding_sha256", LargeBinary(32), nullable=False),
    Column("client_id", String(64), nullable=False),
    Column("redirect_uri", Text, nullable=False),
    Column("scope", Text, nullable=False),
    Column("state", Text, nullable=True),
    Column("nonce", Text, nullable=True),
    Column("code_challenge", String(128), nullable=False),
    Column("expires_at", Float, nullable=False, index=True),
)

oauth_codes = Table(
    "oauth_codes",
    metadata,
    Column("code_sha256", LargeBinary(32), primary_key=True),
    Column("client_id", String(64), nullable=False),
    Column("redirect_uri", Text, nullable=False),
    Column("code_challenge", String(128), nullable=False),
    Column("nonce", Text, nullable=True),
    Column("scope", Text, nullable=False),
    Column("user", String(128), nullable=False),
    Column("institution", String(128), nullable=False),
    Column("auth_time", Integer, nullable=False),
    Column("expires_at", Float, nullable=False, index=True),
    Column("used", Boolean, nullable=False, default=False),
    Column("family", String(64), nullable=False),  # the refresh family its redemption starts
)

oauth_refresh_tokens = Table(
    "oauth_refresh_tokens",
    metadata,
    Column("token_sha256", LargeBinary(32), primary_key=True),
    Column("family", String(64), nullable=False, index=True),
    Column("client_id", String(64), nullable=False),
    Column("user", String(128), nullable=False, index=True),
    Column("institution", String(128), nullable=False),
    Column("scope", Text, nullable=False),
    Column("auth_time", Integer, nullable=False),
    Column("issued_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False, index=True),
    Column("rotated", Boolean, nullable=False, default=False),
    Column("revoked", Boolean, nullable=False, default=False),
)


def _sha256(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8")).digest()


def valid_code_challenge(challenge: str) -> bool:
    """True for a syntactically valid S256 ``code_challenge`` (RFC 7636 section 4.2)."""
    return bool(CODE_CHALLENGE_PATTERN.match(challenge)) and len(challenge) == 43


def verify_pkce(verifier: str, challenge: str) -> bool:
    """``BASE64URL(SHA256(verifier)) == challenge``, compared in constant time."""
    if not CODE_VERIFIER_PATTERN.match(verifier):
        return False
    computed = str(create_s256_code_challenge(verifier))
    return hmac.compare_digest(computed.encode(), challenge.encode())


@dataclass(frozen=True, slots=True)
class AuthorizationRequest:
    """A validated authorization request (RFC 6749 section 4.1.1 with PKCE and OIDC)."""

    client_id: str
    redirect_uri: str
    scope: str
    state: str | None
    nonce: str | None
    code_challenge: str


@dataclass(frozen=True, slots=True)
class Grant:
    """What a redeemed code or refresh token stands for."""

    client_id: str
    user: str
    institution: str
    scopes: frozenset[str]
    auth_time: int
    nonce: str | None
    family: str


class AuthorizationStore:
    """The flow's state in the catalog database.

    Parameters
    ----------
    engine : Engine
        The catalog's engine (own tables, created idempotently).
    code_lifetime : float
        Seconds an authorization code may wait for its exchange.
    login_lifetime : float
        Seconds a login form stays usable.
    refresh_lifetime : float
        Seconds a refresh token stays usable (each rotation starts a new one).
    session_lifetime : float
        Seconds after the login beyond which no refresh token of it is valid.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        code_lifetime: float = 60.0,
        login_lifetime: float = 600.0,
        refresh_lifetime: float = 8 * 3600.0,
        session_lifetime: float = 12 * 3600.0,
    ) -> None:
        self.engine = engine
        self.code_lifetime = code_lifetime
        self.login_lifetime = login_lifetime
        self.refresh_lifetime = refresh_lifetime
        self.session_lifetime = session_lifetime

    # -- login forms -----------------------------------------------------------------------

    def begin_login(
        self, request: AuthorizationRequest, binding: str, *, now: float | None = None
    ) -> str:
        """Remember ``request`` for the login form; returns the form's CSRF token.

        ``binding`` is the random value of the browser's login cookie: the form can only
        be posted back by the browser that received it.
        """
        now = time.time() if now is None else now
        csrf = secrets.token_urlsafe(32)
        with self.engine.begin() as conn:
            self._purge(conn, now)
            conn.execute(
                oauth_login_requests.insert().values(
                    csrf_sha256=_sha256(csrf),
                    binding_sha256=_sha256(binding),
                    client_id=request.client_id,
                    redirect_uri=request.redirect_uri,
                    scope=request.scope,
                    state=request.state,
                    nonce=request.nonce,
                    code_challenge=request.code_challenge,
                    expires_at=now + self.login_lifetime,
                )
            )
        return csrf

    def pending_login(
        self, csrf: str, binding: str, *, now: float | None = None
    ) -> AuthorizationRequest | None:
        """The request behind a posted form, if the token is live and the cookie matches."""
        now = time.time() if now is None else now
        with self.engine.connect() as conn:
            row = conn.execute(
                select(oauth_login_requests).where(
                    oauth_login_requests.c.csrf_sha256 == _sha256(csrf)
                )
            ).first()
        if row is None or row.expires_at <= now:
            return None
        if not hmac.compare_digest(bytes(row.binding_sha256), _sha256(binding)):
            return None
        return AuthorizationRequest(
            row.client_id, row.redirect_uri, row.scope, row.state, row.nonce, row.code_challenge
        )

    def finish_login(self, csrf: str) -> bool:
        """Consume the form (once): True for the one caller that did."""
        with self.engine.begin() as conn:
            done = conn.execute(
                delete(oauth_login_requests).where(
                    oauth_login_requests.c.csrf_sha256 == _sha256(csrf)
                )
            )
        return done.rowcount == 1

    # -- authorization codes ---------------------------------------------------------------

    def issue_code(
        self,
        request: AuthorizationRequest,
        *,
        user: str,
        institution: str,
        scopes: frozenset[str],
        auth_time: int,
        now: float | None = None,
    ) -> str:
        """A one-time code for ``request`` and the logged-in ``user``."""
        now = time.time() if now is None else now
        code = secrets.token_urlsafe(32)
        with self.engine.begin() as conn:
            conn.execute(
                oauth_codes.insert().values(
                    code_sha256=_sha256(code),
                    client_id=request.client_id,
                    redirect_uri=request.redirect_uri,
                    code_challenge=request.code_challenge,
                    nonce=request.nonce,
                    scope=" ".join(sorted(scopes)),
                    user=user,
                    institution=institution,
                    auth_time=auth_time,
                    expires_at=now + self.code_lifetime,
                    used=False,
                    family=secrets.token_hex(16),
                )
            )
        return code

    def redeem_code(
        self,
        code: str,
        *,
        client_id: str,
        redirect_uri: str | None,
        code_verifier: str | None,
        now: float | None = None,
    ) -> Grant:
        """Exchange a code (RFC 6749 section 4.1.3, RFC 7636 section 4.6) exactly once.

        The code is spent by the first attempt whatever its outcome; a second attempt
        revokes the refresh tokens issued from the first.

        Raises
        ------
        InvalidGrantError
            Unknown, expired, reused, or not for this client / redirect URI / verifier.
        InvalidRequestError
            No ``code_verifier``.
        """
        now = time.time() if now is None else now
        if not code_verifier:
            raise InvalidRequestError("PKCE: code_verifier is required")
        digest = _sha256(code)
        with write_transaction(self.engine) as conn:
            row = conn.execute(
                select(oauth_codes).where(oauth_codes.c.code_sha256 == digest)
            ).first()
            if row is None:
                raise InvalidGrantError("unknown authorization code")
            spent = conn.execute(
                update(oauth_codes)
                .where(oauth_codes.c.code_sha256 == digest, oauth_codes.c.used.is_(False))
                .values(used=True)
            )
            if spent.rowcount != 1:
                self._revoke_family(conn, row.family)
        if spent.rowcount != 1:
            raise InvalidGrantError(
                "authorization code already used; the tokens issued from it are revoked"
            )
        if row.expires_at <= now:
            raise InvalidGrantError("authorization code expired")
        if row.client_id != client_id:
            raise InvalidGrantError("authorization code was issued to another client")
        if redirect_uri != row.redirect_uri:
            raise InvalidGrantError("redirect_uri differs from the authorization request")
        if not verify_pkce(code_verifier, row.code_challenge):
            raise InvalidGrantError("PKCE: code_verifier does not match the code_challenge")
        return Grant(
            row.client_id,
            row.user,
            row.institution,
            frozenset(row.scope.split()),
            int(row.auth_time),
            row.nonce,
            row.family,
        )

    # -- refresh tokens --------------------------------------------------------------------

    def issue_refresh(self, grant: Grant, *, now: float | None = None) -> str:
        """A new refresh token in ``grant``'s family."""
        now = time.time() if now is None else now
        token = secrets.token_urlsafe(32)
        expires = min(now + self.refresh_lifetime, grant.auth_time + self.session_lifetime)
        with self.engine.begin() as conn:
            conn.execute(
                oauth_refresh_tokens.insert().values(
                    token_sha256=_sha256(token),
                    family=grant.family,
                    client_id=grant.client_id,
                    user=grant.user,
                    institution=grant.institution,
                    scope=" ".join(sorted(grant.scopes)),
                    auth_time=grant.auth_time,
                    issued_at=now,
                    expires_at=expires,
                    rotated=False,
                    revoked=False,
                )
            )
        return token

    def spend_refresh(
        self,
        token: str,
        *,
        client_id: str,
        scopes: frozenset[str] = frozenset(),
        now: float | None = None,
    ) -> Grant:
        """Spend a refresh token (RFC 6749 section 6); the caller issues the next one
        with :meth:`issue_refresh` in the returned grant's family.

        Parameters
        ----------
        scopes : frozenset of str
            Narrower scopes asked for; empty for the token's own.

        Raises
        ------
        InvalidGrantError
            Unknown, expired, revoked, for another client, or already used (which
            revokes the whole family: a used token presented again has leaked).
        InvalidScopeError
            ``scopes`` wider than the token's (the token stays unspent).
        """
        now = time.time() if now is None else now
        digest = _sha256(token)
        table = oauth_refresh_tokens
        with write_transaction(self.engine) as conn:
            row = conn.execute(select(table).where(table.c.token_sha256 == digest)).first()
            if row is None or row.client_id != client_id:
                raise InvalidGrantError("unknown refresh token")
            if row.revoked:
                raise InvalidGrantError("refresh token revoked")
            granted = frozenset(row.scope.split())
            if not row.rotated and row.expires_at > now and not scopes <= granted:
                raise InvalidScopeError("a refresh may narrow the scopes, never widen them")
            spent = conn.execute(
                update(table)
                .where(table.c.token_sha256 == digest, table.c.rotated.is_(False))
                .values(rotated=True)
            )
            reused = spent.rowcount != 1
            if reused:
                self._revoke_family(conn, row.family)
        if reused:
            raise InvalidGrantError(
                "refresh token already used; every token of this login is revoked"
            )
        if row.expires_at <= now:
            raise InvalidGrantError("refresh token expired")
        return Grant(
            row.client_id,
            row.user,
            row.institution,
            scopes or granted,
            int(row.auth_time),
            None,
            row.family,
        )

    def revoke_refresh(self, token: str, *, client_id: str) -> bool:
        """Revoke the family of ``token`` if it belongs to ``client_id`` (RFC 7009)."""
        table = oauth_refresh_tokens
        with write_transaction(self.engine) as conn:
            row = conn.execute(
                select(table.c.family, table.c.client_id).where(
                    table.c.token_sha256 == _sha256(token)
                )
            ).first()
            if row is None or row.client_id != client_id:
                return False
            self._revoke_family(conn, row.family)
        return True

    def revoke_user(self, user: str, client_id: str | None = None) -> int:
        """Revoke every refresh token of ``user`` (for one client, or all); returns count."""
        table = oauth_refresh_tokens
        condition = (table.c.user == user) & table.c.revoked.is_(False)
        if client_id is not None:
            condition &= table.c.client_id == client_id
        with self.engine.begin() as conn:
            done = conn.execute(update(table).where(condition).values(revoked=True))
        return int(done.rowcount)

    @staticmethod
    def _revoke_family(conn: Connection, family: str) -> None:
        conn.execute(
            update(oauth_refresh_tokens)
            .where(oauth_refresh_tokens.c.family == family)
            .values(revoked=True)
        )

    @staticmethod
    def _purge(conn: Connection, now: float) -> None:
        """Drop rows that can no longer be used (expired tokens need no reuse detection)."""
        conn.execute(delete(oauth_login_requests).where(oauth_login_requests.c.expires_at <= now))
        conn.execute(delete(oauth_codes).where(oauth_codes.c.expires_at <= now - 3600))
        conn.execute(
            delete(oauth_refresh_tokens).where(oauth_refresh_tokens.c.expires_at <= now - 3600)
        )
