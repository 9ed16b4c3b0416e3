"""A home restored without its keys is refused, not quietly given new ones that read nothing."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from archive.blobstore import CONTENT_DICOM
from archive.plugin import open_store
from archive.settings import StorageSettings
from compose.settings import Settings, load_settings
from security.errors import IntegrityError


def _settings(home: Path) -> Settings:
    return load_settings(home, storage=StorageSettings(fsync=False))


def test_a_first_start_makes_the_keys(tmp_path: Path) -> None:
    store = open_store(_settings(tmp_path))
    store.catalog.close()
    assert (tmp_path / "keys" / "dedup.key").exists()


def test_a_home_with_data_but_no_keys_is_refused_and_gets_none(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    store = open_store(settings)
    store.put("4b8e2c1a-0000-4000-8000-000000000001", CONTENT_DICOM, b"\x00" * 4096)
    store.catalog.close()
    shutil.rmtree(settings.keys_dir)

    with pytest.raises(IntegrityError, match=r"no keys.*restore keys/.*docs/backup\.md"):
        open_store(settings)
    assert not (settings.keys_dir / "dedup.key").exists()
    assert not (settings.keys_dir / "current").exists()


def test_blobs_without_a_catalog_or_keys_are_refused(tmp_path: Path) -> None:
    """The catalog restored apart (or lost) while blobs/ came back: still not a first start."""
    settings = _settings(tmp_path)
    store = open_store(settings)
    # large enough to be a file under blobs/ (small ones live inline in the catalog)
    store.put("4b8e2c1a-0000-4000-8000-000000000002", CONTENT_DICOM, os.urandom(300_000))
    store.catalog.close()
    shutil.rmtree(settings.keys_dir)
    for path in tmp_path.glob("catalog.db*"):
        path.unlink()
    assert any(path.is_file() for path in settings.blob_dir.rglob("*"))

    with pytest.raises(IntegrityError, match="no keys"):
        open_store(settings)


def test_a_home_with_its_keys_opens_as_before(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    store = open_store(settings)
    store.put("4b8e2c1a-0000-4000-8000-000000000003", CONTENT_DICOM, b"\x02" * 4096)
    store.catalog.close()

    again = open_store(settings)
    try:
        assert again.get("4b8e2c1a-0000-4000-8000-000000000003") == b"\x02" * 4096
    finally:
        again.catalog.close()
