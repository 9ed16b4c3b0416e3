"""Shared fixtures for the unit tests: real keys, a real SQLite catalog, a real tier directory."""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pydicom
import pytest

from archive.blobstore import BlobStore
from archive.catalog import Catalog
from archive.plugin import ArchivePlugin, register
from archive.settings import StorageSettings
from compose.settings import load_settings
from security.keys import KeyRing
from synthetic import StudySpec, generate_study
from tests.catalogdb import migrated
from tests.unit.support import FakeSdk
from tiering.fs import FileStore


@pytest.fixture(autouse=True)
def _no_vna_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's own VNA_* variables must not leak into settings under test."""
    for name in list(os.environ):
        if name.startswith("VNA_"):
            monkeypatch.delenv(name)


@pytest.fixture
def keys(tmp_path: Path) -> KeyRing:
    return KeyRing.open_or_create(tmp_path / "keys")


@pytest.fixture
def catalog(tmp_path: Path) -> Iterator[Catalog]:
    cat = Catalog(migrated(f"sqlite:///{tmp_path / 'catalog.db'}"), durable=False)
    try:
        yield cat
    finally:
        cat.close()


@pytest.fixture
def hot(tmp_path: Path) -> FileStore:
    return FileStore(tmp_path / "blobs", fsync=False)


@pytest.fixture
def store(catalog: Catalog, keys: KeyRing, hot: FileStore) -> BlobStore:
    # every payload in a file, so tests can reach it; inline blobs have their own tests
    return BlobStore(catalog, keys, hot, StorageSettings(fsync=False, inline_max_bytes=0))


def dicom_bytes(ds: pydicom.Dataset) -> bytes:
    """Part 10 bytes of ``ds`` in the transfer syntax its file meta names."""
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def to_bytes() -> Callable[[pydicom.Dataset], bytes]:
    return dicom_bytes


@pytest.fixture(scope="session")
def small_ct() -> list[bytes]:
    """Four 64x64 synthetic CT instances (two series of two slices), as Part 10 bytes."""
    spec = StudySpec(series=2, slices=2, rows=64, columns=64)
    return [dicom_bytes(ds) for ds in generate_study(spec)]


@pytest.fixture(scope="session")
def big_ct() -> bytes:
    """One 512x512 synthetic CT instance (512 KiB of native pixel data)."""
    spec = StudySpec(series=1, slices=1, rows=512, columns=512)
    return dicom_bytes(next(iter(generate_study(spec))))


@pytest.fixture
def restore_root_logger() -> Iterator[None]:
    """register() installs a bridge on the root logger; take it away after the test (a
    module of tests that register the plugin uses it for each of them)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture
def plugin(tmp_path: Path) -> Iterator[ArchivePlugin]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    sdk = FakeSdk()
    plug = register(sdk, load_settings(tmp_path, storage=StorageSettings(fsync=False)))
    try:
        yield plug
    finally:
        plug.catalog.close()
        # register() bridges the root logger to this fake Orthanc: take the bridge away
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(level)
