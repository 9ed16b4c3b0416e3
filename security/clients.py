"""OAuth2 clients of the embedded issuer (institution systems using client_credentials).

A client's secret is 256 random bits, shown once and stored only as its SHA-256 (a secret
of that strength needs no slow hash). The registry owns one table in the catalog database.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from sqlalchemy import Column, Float, LargeBinary, MetaData, String, Table, select
from sqlalchemy.engine import Engine

from security.errors import Conflict, InvalidInput
from security.tokens import SCOPES

__all__ = ["Client", "ClientRegistry"]

metadata = MetaData()

oauth_clients = Table(
    "oauth_clients",
    metadata,
    Column("client_id", String(64), primary_key=True),
    Column("name", String(128), nullable=False, unique=True),
    Column("institution", String(128), nullable=False),
    Column("scopes", String(512), nullable=False),
    Column("secret_sha256", LargeBinary(32), nullable=False),
    Column("created_at", Float, nullable=False),
)


@dataclass(frozen=True, slots=True)
class Client:
    client_id: str
    name: str
    institution: str
    scopes: frozenset[str]


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


class ClientRegistry:
    """Registered clients in the catalog database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        metadata.create_all(engine)

    def add(self, name: str, institution: str, scopes: str) -> tuple[Client, str]:
        """Register a client; returns it and its secret (shown once, never stored)."""
        wanted = frozenset(scopes.split())
        unknown = wanted - SCOPES
        if not wanted or unknown:
            raise InvalidInput(
                f"unknown scopes {sorted(unknown)}; choose from {' '.join(sorted(SCOPES))}"
            )
        client = Client(f"vna-{secrets.token_hex(8)}", name, institution, wanted)
        secret = secrets.token_urlsafe(32)
        with self.engine.begin() as conn:
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
                )
            )
        return client, secret

    def authenticate(self, client_id: str, secret: str) -> Client | None:
        """The client if ``secret`` is its secret, else None (constant-time compare)."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(oauth_clients).where(oauth_clients.c.client_id == client_id)
            ).first()
        expected = bytes(row.secret_sha256) if row is not None else b"\0" * 32
        if not hmac.compare_digest(expected, _digest(secret)) or row is None:
            return None
        return Client(row.client_id, row.name, row.institution, frozenset(row.scopes.split()))
