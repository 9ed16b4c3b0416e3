"""Users of the embedded issuer: scrypt hashes, lock-out, disable; public clients."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from archive import migrations
from security.clients import ClientRegistry
from security.errors import Conflict, InvalidInput, NotFound
from security.users import LoginOutcome, UserRegistry, hash_password, verify_password
from tests.catalogdb import migrated

PASSWORD = "correct horse battery"


@pytest.fixture
def users(tmp_path: Path) -> UserRegistry:
    return UserRegistry(
        create_engine(migrated(f"sqlite:///{tmp_path / 'u.db'}")),
        max_failures=3,
        lockout_seconds=60,
    )


def test_password_hash_is_scrypt_salted_and_verifies() -> None:
    one, two = hash_password(PASSWORD), hash_password(PASSWORD)
    assert one.startswith("scrypt$") and one != two  # fresh salt each time
    assert PASSWORD not in one
    assert verify_password(PASSWORD, one) and verify_password(PASSWORD, two)
    assert not verify_password(PASSWORD + "!", one)
    assert not verify_password(PASSWORD, "garbage")


def test_add_authenticate_and_only_a_hash_is_stored(users: UserRegistry) -> None:
    user = users.add("alice", "Hospital A", PASSWORD, "dicom.read dicom.write")
    assert user.scopes == frozenset({"dicom.read", "dicom.write"})
    result = users.authenticate("alice", PASSWORD)
    assert result.ok and result.user is not None and result.user.institution == "Hospital A"
    assert users.authenticate("alice", "wrong password").outcome is LoginOutcome.BAD_CREDENTIALS
    assert users.authenticate("nobody", PASSWORD).outcome is LoginOutcome.BAD_CREDENTIALS
    with users.engine.connect() as conn:
        rows = conn.execute(text("SELECT * FROM users")).all()
    assert PASSWORD not in repr(rows)
    with pytest.raises(Conflict):
        users.add("alice", "Hospital B", PASSWORD, "dicom.read")
    with pytest.raises(InvalidInput, match="at least"):
        users.add("bob", "Hospital A", "short", "dicom.read")
    with pytest.raises(InvalidInput, match="choose from"):
        users.add("bob", "Hospital A", PASSWORD, "root")
    with pytest.raises(InvalidInput):
        users.add("bad name!", "Hospital A", PASSWORD, "dicom.read")


def test_lock_out_after_failures_then_unlock(users: UserRegistry) -> None:
    users.add("alice", "Hospital A", PASSWORD, "dicom.read")
    now = 1_000_000.0
    assert users.authenticate("alice", "x" * 12, now=now).outcome is LoginOutcome.BAD_CREDENTIALS
    assert users.authenticate("alice", "x" * 12, now=now).outcome is LoginOutcome.BAD_CREDENTIALS
    assert users.authenticate("alice", "x" * 12, now=now).outcome is LoginOutcome.LOCKED
    # locked: even the right password is refused until the lock ends
    assert users.authenticate("alice", PASSWORD, now=now + 30).outcome is LoginOutcome.LOCKED
    assert users.authenticate("alice", PASSWORD, now=now + 61).ok
    # a success resets the counter
    assert users.authenticate("alice", "x" * 12, now=now + 62).outcome is not LoginOutcome.LOCKED


def test_disable(users: UserRegistry) -> None:
    users.add("alice", "Hospital A", PASSWORD, "dicom.read")
    assert users.disable("alice").disabled
    assert users.authenticate("alice", PASSWORD).outcome is LoginOutcome.DISABLED
    assert users.active("alice") is None
    assert [u.name for u in users.list()] == ["alice"]
    with pytest.raises(NotFound):
        users.disable("nobody")


def test_public_clients(tmp_path: Path) -> None:
    registry = ClientRegistry(create_engine(migrated(f"sqlite:///{tmp_path / 'c.db'}")))
    viewer = registry.add_public("viewer", ["http://localhost:8080/viewer/callback"], "dicom.read")
    assert viewer.public and viewer.client_id == "viewer"
    assert registry.get("viewer") == viewer
    # a public client never authenticates with a secret (it has none)
    assert registry.authenticate("viewer", "") is None
    with pytest.raises(Conflict):
        registry.add_public("viewer", ["http://x/cb"], "dicom.read")
    for bad in ("ftp://x/cb", "http://x/cb#frag", "/relative", "http:///nohost"):
        with pytest.raises(InvalidInput):
            registry.add_public("other", [bad], "dicom.read")
    with pytest.raises(InvalidInput):
        registry.add_public("other", [], "dicom.read")
    # ensure_public_client: idempotent, updates redirect URIs and scopes
    same = registry.ensure_public_client("viewer", viewer.redirect_uris, "dicom.read")
    assert same == viewer
    moved = registry.ensure_public_client(
        "viewer", ["https://v.example/cb"], ["dicom.read", "share"]
    )
    assert moved.redirect_uris == ("https://v.example/cb",)
    assert registry.get("viewer") == moved
    fresh = registry.ensure_public_client("ohif", ["https://v.example/cb"], "dicom.read")
    assert registry.get("ohif") == fresh
    registry.add("pacs", "Hospital A", "dicom.read")
    with pytest.raises(Conflict):
        registry.ensure_public_client("pacs", ["https://v.example/cb"], "dicom.read")


def test_old_client_table_gains_the_new_columns(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    with engine.begin() as conn:
        conn.execute(
            text(
                "CREATE TABLE oauth_clients (client_id VARCHAR(64) PRIMARY KEY, name VARCHAR(128)"
                " NOT NULL UNIQUE, institution VARCHAR(128) NOT NULL, scopes VARCHAR(512) NOT"
                " NULL, secret_sha256 BLOB NOT NULL, created_at FLOAT NOT NULL)"
            )
        )
    migrations.upgrade(engine)  # what every process does before it opens the catalog
    registry = ClientRegistry(engine)
    client, secret = registry.add("pacs", "Hospital A", "dicom.read")
    assert registry.authenticate(client.client_id, secret) == client
    assert migrations.upgrade(engine) == []  # a second open finds nothing to add
    assert registry.add_public("viewer", ["http://h/cb"], "dicom.read").public
