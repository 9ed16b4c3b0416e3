"""The catalog and blob store on a real PostgreSQL (the scaled-out path).

A throwaway cluster is created with the machine's ``initdb``/``pg_ctl`` under a dedicated
unprivileged user (``initdb`` refuses to run as root) and removed afterwards.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pydicom
import pytest

from archive.blobstore import BlobStore
from archive.catalog import Catalog, Sender
from archive.indexer import Indexer
from archive.settings import StorageSettings
from security.keys import KeyRing
from synthetic import StudySpec, write_study
from tests.catalogdb import migrated
from tests.integration.harness import free_port
from tiering.fs import FileStore

PG_USER = "vnapgtest"


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def _as_pg_user(*args: str) -> subprocess.CompletedProcess[str]:
    command = list(args)
    if os.geteuid() == 0:
        command = ["runuser", "-u", PG_USER, "--", *command]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not (initdb and pg_ctl):
        # the scaled-out path must always be tested: a skip here would pass unseen
        pytest.fail(
            "PostgreSQL server binaries (initdb, pg_ctl) are not installed: `make install` "
            "installs Debian's postgresql package"
        )
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(PG_USER)
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", PG_USER], check=True)
    # pytest's temporary tree is private to root; the cluster's user needs its own directory
    root = Path(tempfile.mkdtemp(prefix="vna-pg-"))
    data, sockets = root / "data", root / "sock"
    sockets.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, PG_USER)
        shutil.chown(sockets, PG_USER)
    proc = _as_pg_user(initdb, "-D", str(data), "-U", "vna", "--auth=trust", "-E", "UTF8")
    assert proc.returncode == 0, proc.stderr
    port = free_port()
    proc = _as_pg_user(
        pg_ctl,
        "-D",
        str(data),
        "-l",
        str(root / "log"),
        "-w",
        "-o",
        f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off",
        "start",
    )
    assert proc.returncode == 0, proc.stderr + (root / "log").read_text()
    try:
        yield f"postgresql+psycopg://vna@127.0.0.1:{port}/postgres"
    finally:
        _as_pg_user(pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def store(pg_url: str, tmp_path: Path) -> Iterator[BlobStore]:
    catalog = Catalog(migrated(pg_url))
    with catalog.engine.begin() as conn:  # a clean schema per test
        for table in (
            "index_queue",
            "instance_claims",
            "study_claims",
            "instance_sources",
            "instances",
            "series",
            "studies",
            "patients",
            "institution_aes",
            "institutions",
            "attachment_parts",
            "pending_attachments",
            "attachments",
            "blobs",
        ):
            conn.exec_driver_sql(f"DELETE FROM {table}")  # noqa: S608 - fixed names
    yield BlobStore(
        catalog,
        KeyRing.open_or_create(tmp_path / "keys"),
        FileStore(tmp_path / "blobs", fsync=False),
        StorageSettings(fsync=False),
    )
    catalog.close()


def test_store_read_dedup_and_collect_on_postgresql(store: BlobStore, tmp_path: Path) -> None:
    files = write_study(StudySpec(series=1, slices=4, rows=128, columns=128), tmp_path / "ct")
    datas = [p.read_bytes() for p in files]
    for i, data in enumerate(datas):
        store.put(f"a{i}", 1, data)
        store.put(f"b{i}", 1, data)  # a second copy: no new blob
    for i, data in enumerate(datas):
        assert store.get(f"a{i}") == data and store.get(f"b{i}") == data
    stats = store.catalog.stats()
    assert stats.attachments == 2 * len(datas)
    assert stats.unique_bytes == sum(len(d) for d in datas)
    assert store.check(attachments=True).ok
    for i in range(len(datas)):
        store.remove(f"a{i}")
        store.remove(f"b{i}")
    time.sleep(0.01)
    assert store.collect(grace_seconds=0) == stats.blobs
    assert store.catalog.stats().blobs == 0


def test_concurrent_writers_of_the_same_blob_on_postgresql(
    store: BlobStore, tmp_path: Path
) -> None:
    (path,) = write_study(StudySpec(series=1, slices=1, rows=128, columns=128), tmp_path / "c")
    data = path.read_bytes()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: store.put(f"u{i}", 1, data), range(8)))
    assert all(store.get(f"u{i}") == data for i in range(8))
    refcounts = {r.kind: r for r, _ in store.catalog.attachment_parts("u0")[2]}
    assert len(refcounts) >= 2
    assert store.catalog.refcount_mismatches() == []
    assert store.check().ok


def test_index_queue_and_ownership_on_postgresql(store: BlobStore, tmp_path: Path) -> None:
    files = write_study(StudySpec(series=1, slices=2, rows=64, columns=64), tmp_path / "i")
    a = store.catalog.add_institution("Hospital A", "HOSPA")
    for i, path in enumerate(files):
        store.put(f"x{i}", 1, path.read_bytes(), Sender(a.id, a.name, "HOSPA"))
    assert store.catalog.index_backlog() == len(files)
    assert Indexer(store.catalog).drain() == len(files)
    ds = pydicom.dcmread(files[0], stop_before_pixels=True)
    record = store.catalog.instance(str(ds.SOPInstanceUID))
    assert record is not None and record.issuer == "Hospital A"
    assert store.catalog.sources_of(str(ds.SOPInstanceUID)) == [("Hospital A", "dimse", "HOSPA")]


def test_parallel_first_stores_of_a_study_have_one_owner_on_postgresql(
    store: BlobStore, pg_url: str
) -> None:
    """Two catalogs (the plugin's and the gateway's) claim the first instance of each of 20
    new studies at the same moment: ON CONFLICT DO NOTHING lets exactly one win."""
    other = Catalog(pg_url)
    catalogs = [store.catalog, other]
    try:
        ids = [store.catalog.add_institution(name).id for name in ("Hospital A", "Hospital B")]
        for n in range(20):
            study = f"1.2.840.99.{n}"
            start = threading.Barrier(2)
            outcome: dict[int, str | None] = {}

            def claim(
                i: int,
                study: str = study,
                start: threading.Barrier = start,
                outcome: dict[int, str | None] = outcome,
            ) -> None:
                start.wait()
                outcome[i] = catalogs[i].claim(study, f"{study}.{i}", ids[i], lambda c, u: False)

            threads = [threading.Thread(target=claim, args=(i,)) for i in (0, 1)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
            assert sorted(outcome.values(), key=str) == [None, "study"]
    finally:
        other.close()
