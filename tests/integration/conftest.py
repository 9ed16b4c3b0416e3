"""A real archive for the whole session, the gateways and the browser several modules
share on it, and fresh archives for destructive tests.

The session's gateways are safe to share: the modules using them already share the
session archive (its catalog, grants, links, users, audit trail), which is all the
state there is; a gateway process keeps none of its own that a test asserts on (caches
only), and each module stores studies of its own or the same study again (the same
UIDs, so a second store changes nothing).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pydicom
import pytest
import requests

from security.issuer import EmbeddedIssuer
from synthetic import write_study
from tests.integration.browser import chromium, missing
from tests.integration.harness import INSTITUTIONS, Archive, gateway_process, wait_until
from tests.integration.sites import (
    GATEWAY_INSTANCES,
    GATEWAY_SPEC,
    VIEWER_SPECS,
    Gateway,
    ViewerSite,
)
from tests.integration.stock_orthanc import StockOrthanc, stock_orthanc

if TYPE_CHECKING:
    from playwright.sync_api import Browser


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Archive]:
    arch = Archive(tmp_path_factory.mktemp("vna-home"))
    # test_roundtrip reads files back with C-GET, which is off by default (it cannot be
    # limited per institution on Orthanc 1.10); test_dimse checks the default on its own
    arch.write_config(INSTITUTIONS, dicom_allow_get=True)
    arch.up()
    try:
        yield arch
    finally:
        arch.down()


@pytest.fixture(scope="session")
def gateway(archive: Archive, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A gateway on the session archive, Hospital A's study GATEWAY_SPEC stored and indexed
    (test_gateway, test_login, test_share_links, test_delete)."""
    with gateway_process(archive, "test") as (url, log_path):
        issuer = EmbeddedIssuer.open_or_create(archive.home / "keys", url, f"{url}/dicom-web")
        files = write_study(GATEWAY_SPEC, tmp_path_factory.mktemp("gw-study"))
        sent = archive.storescu("HOSPA", *files)
        assert sent.returncode == 0, sent.stderr
        study_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
        gw = Gateway(url, issuer, study_uid, files, log_path)
        headers = {"Authorization": f"Bearer {gw.token('Hospital A')}"}

        def indexed() -> bool:
            answer = requests.get(
                f"{gw.root}/studies/{study_uid}/instances", headers=headers, timeout=10
            )
            return answer.ok and len(answer.json()) == GATEWAY_INSTANCES

        wait_until(indexed, "the catalog to index the study")
        yield gw


@pytest.fixture(scope="session")
def site(archive: Archive, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ViewerSite]:
    """The viewer's gateway on the session archive with the studies of VIEWER_SPECS
    (test_viewer, test_viewer_results, test_share_browser)."""
    # those modules skip themselves when the browser is missing, unless CI is set
    reason = missing()
    assert reason is None, f"under CI the viewer test must run: {reason}"
    with gateway_process(archive, "viewer-test") as (url, log_path):
        issuer = EmbeddedIssuer.open_or_create(archive.home / "keys", url, f"{url}/dicom-web")
        studies: dict[str, str] = {}
        for patient_id, (aet, spec) in VIEWER_SPECS.items():
            name = "Viewer^" + patient_id.replace("-", "")
            spec = dataclasses.replace(spec, patient_id=patient_id, patient_name=name)
            files = write_study(spec, tmp_path_factory.mktemp(patient_id))
            sent = archive.storescu(aet, *files)
            assert sent.returncode == 0, sent.stderr
            first = pydicom.dcmread(files[0], stop_before_pixels=True)
            studies[patient_id] = str(first.StudyInstanceUID)
        s = ViewerSite(url, issuer, studies, log_path)
        for patient_id, (_aet, spec) in VIEWER_SPECS.items():
            institution = "Hospital A" if patient_id.startswith("VW-A") else "Hospital B"
            token = s.token(institution)
            uid = studies[patient_id]
            expected = spec.series * spec.slices
            # ">=": test_viewer_results adds results (SEG, SR) to a study
            wait_until(
                lambda t=token, u=uid, n=expected: len(s.qido(t, f"/studies/{u}/instances")) >= n,
                f"the catalog to index {patient_id}",
            )
        yield s


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's headless Chromium; each test opens a context of its own in it. Module-scoped,
    not session-scoped: Playwright's sync API keeps an event loop running in this thread
    while it is started, and the unit tests that call asyncio.run, shuffled between the
    browser modules, would fail ("cannot be called from a running event loop")."""
    with chromium() as launched:
        yield launched


@pytest.fixture
def fresh_archive(tmp_path: Path) -> Iterator[Callable[[], Archive]]:
    """Factory for a private archive (for tests that damage or kill it)."""
    started: list[Archive] = []

    def make() -> Archive:
        arch = Archive(tmp_path / f"home{len(started)}")
        arch.write_config(INSTITUTIONS)
        arch.up()
        started.append(arch)
        return arch

    yield make
    for arch in started:
        arch.down()


@pytest.fixture
def stock_peer(tmp_path: Path) -> Iterator[StockOrthanc]:
    """A stock Orthanc (DICOMweb plugin only) on free ports: a hospital's PACS."""
    with stock_orthanc(tmp_path / "stock-orthanc") as peer:
        yield peer
