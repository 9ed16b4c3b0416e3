"""OAuth2 clients of the embedded issuer.

Two kinds: *confidential* clients (institution systems using client_credentials), whose
secret is 256 random bits, shown once and stored only as its SHA-256 (a secret of that
strength needs no slow hash); and *public* clients (browser apps such as the viewer,
RFC 6749 section 2.1), which have no secret, use the authorization code flow with PKCE
and may only be sent back to their registered redirect URIs (compared exactly). The
registry owns one table in the catalog database.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    select,
    update,
)
from sqlalchemy.engine import Engine

from security.errors import Conflict, InvalidInput
from security.tokens import SCOPES
from security.transactions import write_transaction

__all__ = ["Client", "ClientRegistry", "check_scopes", "valid_redirect_uri"]

metadata = MetaData()

oauth_clients = Table(
    "oauth_clients",
    metadata,
    Column("client_id", String(64), primary_key=True),
    Column("name", String(128), nullable=False, unique=True),
    Column("institution", String(128), nullable=False),
    Column("scopes", String(512), nullable=False),
    # empty for public clients: no SHA-256 digest is ever empty, so none authenticates
    Column("secret_sha256", LargeBinary(32), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("public", Boolean, nullable=False, default=False),
    Column("redirect_uris", Text, nullable=False, default=""),  # space-separated
)

_PUBLIC_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True, slots=True)
class Client:
    client_id: str
    name: str
    institution: str
    scopes: frozenset[str]
    public: bool = False
    redirect_uris: tuple[str, ...] = ()


def valid_redirect_uri(uri: str) -> bool:
    """An absolute http(s) URI without a fragment (RFC 6749 section 3.1.2)."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return False
    return (
        parts.scheme in ("http", "https")
        and bool(parts.hostname)
        and not parts.fragment
        and "#" not in uri
        and not any(ch.isspace() for ch in uri)
    )


def check_scopes(scopes: str) -> frozenset[str]:
    """The archive scopes named in ``scopes``; :class:`InvalidInput` for unknown or none."""
    wanted = frozenset(scopes.split())
    unknown = wanted - SCOPES
    if not wanted or unknown:
        raise InvalidInput(
            f"unknown scopes {sorted(unknown)}; choose from {' '.join(sorted(SCOPES))}"
        )
    return wanted


def _check_redirect_uris(uris: Iterable[str]) -> tuple[str, ...]:
    found = tuple(dict.fromkeys(uris))
    if not found:
        raise InvalidInput("a public client needs at least one --redirect-uri")
    for uri in found:
        if not valid_redirect_uri(uri):
            raise InvalidInput(f"{uri!r} is not an absolute http(s) URI without a fragment")
    return found


def _client(row: object) -> Client:
    return Client(
        row.client_id,  # type: ignore[attr-defined]
        row.name,  # type: ignore[attr-defined]
        row.institution,  # type: ignore[attr-defined]
        frozenset(row.scopes.split()),  # type: ignore[attr-defined]
        bool(row.public),  # type: ignore[attr-defined]
        tuple(row.redirect_uris.split()),  # type: ignore[attr-defined]
    )


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


class ClientRegistry:
    """Registered clients in the catalog database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def add(self, name: str, institution: str, scopes: str) -> tuple[Client, str]:
        """Register a client; returns it and its secret (shown once, never stored)."""
        wanted = check_scopes(scopes)
        client = Client(f"vna-{secrets.token_hex(8)}", name, institution, wanted)
        secret = secrets.token_urlsafe(32)
        with write_transaction(self.engine) as conn:
            if conn.execute(
                select(oauth_clients.c.name).where(oauth_clients.c.name == name)
            ).first():
                raise Conflict(f"a client named {name!r} exists already")
            conn.execute(
                oauth_clients.insert().values(
                    client_id=client.client_id,
                    name=name,
                    institution=institution,
                    scopes=" ".join(sorted(wanted)),
                    secret_sha256=_digest(secret),
                    created_at=time.time(),
                    public=False,
                    redirect_uris="",
                )
            )
        return client, secret

    def add_public(self, name: str, redirect_uris: Iterable[str], scopes: str) -> Client:
        """Register a public client (no secret); its client id is its name.

        Parameters
        ----------
        name : str
            Also the ``client_id`` the browser app is configured with.
        redirect_uris : iterable of str
            Where authorization responses may go; compared exactly.
        scopes : str
            The archive scopes users may grant it (further limited by each user's).
        """
        if not _PUBLIC_ID.match(name):
            raise InvalidInput("a public client's name is letters, digits and . _ - (at most 64)")
        wanted = check_scopes(scopes)
        uris = _check_redirect_uris(redirect_uris)
        with write_transaction(self.engine) as conn:
            if conn.execute(
                select(oauth_clients.c.name).where(
                    (oauth_clients.c.name == name) | (oauth_clients.c.client_id == name)
                )
            ).first():
                raise Conflict(f"a client named {name!r} exists already")
            conn.execute(
                oauth_clients.insert().values(
                    client_id=name,
                    name=name,
                    institution="",
                    scopes=" ".join(sorted(wanted)),
                    secret_sha256=b"",
                    created_at=time.time(),
                    public=True,
                    redirect_uris=" ".join(uris),
                )
            )
        return Client(name, name, "", wanted, True, uris)

    def ensure_public_client(
        self, name: str, redirect_uris: Iterable[str], scopes: Iterable[str] | str
    ) -> Client:
        """Register the public client ``name``, or bring its redirect URIs and scopes up to
        the given ones (idempotent; for the gateway to register the viewer at start).

        Raises :class:`Conflict` when ``name`` is a confidential client.
        """
        scope_text = scopes if isinstance(scopes, str) else " ".join(scopes)
        existing = self.get(name)
        if existing is None:
            try:
                return self.add_public(name, redirect_uris, scope_text)
            except Conflict:  # another process registered it meanwhile
                existing = self.get(name)
                if existing is None:
                    raise
        if not existing.public:
            raise Conflict(f"{name!r} is a confidential client, not a public one")
        wanted = check_scopes(scope_text)
        uris = _check_redirect_uris(redirect_uris)
        if (wanted, uris) == (existing.scopes, existing.redirect_uris):
            return existing
        with self.engine.begin() as conn:
            conn.execute(
                update(oauth_clients)
                .where(oauth_clients.c.client_id == name)
                .values(scopes=" ".join(sorted(wanted)), redirect_uris=" ".join(uris))
            )
        return Client(name, name, "", wanted, True, uris)

    def get(self, client_id: str) -> Client | None:
        """The client with this id, or None."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(oauth_clients).where(oauth_clients.c.client_id == client_id)
            ).first()
        return _client(row) if row is not None else None

    def list(self) -> list[Client]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(oauth_clients).order_by(oauth_clients.c.name)).all()
        return [_client(row) for row in rows]

    def authenticate(self, client_id: str, secret: str) -> Client | None:
        """The client if ``secret`` is its secret, else None (constant-time compare)."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(oauth_clients).where(oauth_clients.c.client_id == client_id)
            ).first()
        expected = bytes(row.secret_sha256) if row is not None else b"\0" * 32
        if not hmac.compare_digest(expected, _digest(secret)) or row is None or row.public:
            return None
        return _client(row)
