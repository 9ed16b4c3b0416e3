"""The embedded issuer's client registry."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from security.clients import ClientRegistry
from security.errors import Conflict, InvalidInput
from tests.catalogdb import migrated


@pytest.fixture
def registry(tmp_path: Path) -> ClientRegistry:
    return ClientRegistry(create_engine(migrated(f"sqlite:///{tmp_path / 'c.db'}")))


def test_add_and_authenticate(registry: ClientRegistry) -> None:
    client, secret = registry.add("pacs", "Hospital A", "dicom.read dicom.write")
    assert len(secret) >= 40  # 256 bits, URL-safe
    found = registry.authenticate(client.client_id, secret)
    assert found == client
    assert found.scopes == frozenset({"dicom.read", "dicom.write"})
    assert registry.authenticate(client.client_id, secret + "x") is None
    assert registry.authenticate("vna-nobody", secret) is None


def test_only_a_hash_of_the_secret_is_stored(registry: ClientRegistry) -> None:
    _client, secret = registry.add("pacs", "Hospital A", "dicom.read")
    with registry.engine.connect() as conn:
        rows = conn.execute(text("SELECT * FROM oauth_clients")).all()
    assert secret.encode() not in repr(rows).encode()
    assert secret not in repr(rows)


def test_refusals(registry: ClientRegistry) -> None:
    registry.add("pacs", "Hospital A", "dicom.read")
    with pytest.raises(Conflict):
        registry.add("pacs", "Hospital B", "dicom.read")
    with pytest.raises(InvalidInput, match="choose from"):
        registry.add("other", "Hospital A", "dicom.read everything")
    with pytest.raises(InvalidInput):
        registry.add("other", "Hospital A", "")
