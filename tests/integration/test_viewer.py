"""The OHIF viewer served by the gateway, in Debian's headless Chromium (playwright).

A token from the embedded issuer is put in ``sessionStorage`` the way a share page hands
it over (the share variant at /viewer/share/ reads it); the study list must show exactly
the studies QIDO returns for the token's institution, and a study must render (the
screenshot's viewport is not blank). Skipped only when the OHIF bundle or Chromium is
missing and ``CI`` is not set; ``make test`` installs both.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests

from archive.synthetic import StudySpec, write_study
from security.issuer import EmbeddedIssuer
from tests.integration.harness import ROOT, Archive, free_port
from viewer.api import SHARE_TOKEN_KEY, default_bundle_dir

CHROMIUM = "/usr/bin/chromium"
# Hospital A: two studies (one large enough to look at); Hospital B: one it must not see
SPECS = {
    "VW-A1": ("HOSPA", StudySpec(series=1, slices=3, rows=256, columns=256, seed=41)),
    "VW-A2": ("HOSPA", StudySpec(modality="MR", series=1, slices=2, rows=64, columns=64, seed=42)),
    "VW-B1": ("HOSPB", StudySpec(series=1, slices=2, rows=64, columns=64, seed=43)),
}


def _missing() -> str | None:
    if not (default_bundle_dir() / "index.html").is_file():
        return "the OHIF bundle is not installed (make install / python -m viewer.fetch)"
    if not Path(CHROMIUM).is_file():
        return f"{CHROMIUM} is missing (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is missing (pip install -e '.[test]')"
    return None


_REASON = _missing()
if _REASON and not os.environ.get("CI"):
    pytest.skip(_REASON, allow_module_level=True)

from playwright.sync_api import Browser, Page, sync_playwright  # noqa: E402


@dataclass
class Site:
    url: str
    issuer: EmbeddedIssuer
    studies: dict[str, str]  # patient id -> study uid
    log: Path
    series: dict[str, str] = field(default_factory=dict)  # study uid -> first series uid

    def token(self, institution: str) -> str:
        return self.issuer.mint(
            subject=f"viewer-{institution}", institution=institution, scopes=("dicom.read",)
        )

    def qido(self, token: str, path: str, **params: str) -> list[dict[str, Any]]:
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/dicom+json"}
        answer = requests.get(
            f"{self.url}/dicom-web{path}", params=params, headers=headers, timeout=30
        )
        answer.raise_for_status()
        return list(answer.json())


def _wait_until(check: Any, what: str, deadline: float = 120.0) -> None:
    """Poll ``check()`` until true: a readiness wait, not a timing assertion."""
    end = time.monotonic() + deadline
    while True:
        try:
            if check():
                return
        except requests.RequestException:
            pass
        if time.monotonic() > end:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.3)


@pytest.fixture(scope="module")
def site(archive: Archive, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    assert _REASON is None, f"under CI the viewer test must run: {_REASON}"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = archive.home / "log" / "gateway-viewer-test.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = log_path.open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "dicomweb", "--home", str(archive.home)]
        + ["--host", "127.0.0.1", "--port", str(port), "--public-url", url],
        cwd=ROOT,
        env=archive.env(),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_until(lambda: requests.get(f"{url}/healthz", timeout=5).ok, "the gateway")
        issuer = EmbeddedIssuer.open_or_create(archive.home / "keys", url, f"{url}/dicom-web")
        studies: dict[str, str] = {}
        for patient_id, (aet, spec) in SPECS.items():
            name = "Viewer^" + patient_id.replace("-", "")
            spec = dataclasses.replace(spec, patient_id=patient_id, patient_name=name)
            files = write_study(spec, tmp_path_factory.mktemp(patient_id))
            sent = archive.storescu(aet, *files)
            assert sent.returncode == 0, sent.stderr
            first = pydicom.dcmread(files[0], stop_before_pixels=True)
            studies[patient_id] = str(first.StudyInstanceUID)
        s = Site(url, issuer, studies, log_path)
        for patient_id, (_aet, spec) in SPECS.items():
            institution = "Hospital A" if patient_id.startswith("VW-A") else "Hospital B"
            token = s.token(institution)
            uid = studies[patient_id]
            expected = spec.series * spec.slices
            _wait_until(
                lambda t=token, u=uid, n=expected: len(s.qido(t, f"/studies/{u}/instances")) == n,
                f"the catalog to index {patient_id}",
            )
        yield s
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        log.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        # Debian's chromium, never a downloaded one; software WebGL for cornerstone
        launched = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--no-sandbox"],
        )
        try:
            yield launched
        finally:
            launched.close()


@dataclass
class Session:
    page: Page
    token: str
    console: list[str]
    requests: list[tuple[str, str | None]]  # (url, Authorization) of DICOMweb calls


@pytest.fixture
def share_session(site: Site, browser: Browser) -> Iterator[Session]:
    """A page whose sessionStorage holds Hospital A's token, as a share page leaves it."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    token = site.token("Hospital A")
    context.add_init_script(
        f"window.sessionStorage.setItem({json.dumps(SHARE_TOKEN_KEY)}, {json.dumps(token)});"
        "document.addEventListener('securitypolicyviolation', (e) => {"
        " (window.vnaViolations = window.vnaViolations || [])"
        ".push(e.violatedDirective + ' ' + e.blockedURI); });"
    )
    page = context.new_page()
    session = Session(page, token, [], [])
    page.on("console", lambda m: session.console.append(f"{m.type}: {m.text}"))
    page.on(
        "request",
        lambda r: (
            session.requests.append((r.url, r.headers.get("authorization")))
            if "/dicom-web/" in r.url
            else None
        ),
    )
    try:
        yield session
    finally:
        context.close()


def _listed(page: Page) -> list[str]:
    """Patient names in the study list's rows (OHIF shows ``Family, Given``)."""
    rows = page.locator("tbody tr[aria-selected]")
    return [rows.nth(i).locator("td").first.inner_text().strip() for i in range(rows.count())]


def _shown(name: dict[str, Any]) -> str:
    family, _, given = str(name["Value"][0]["Alphabetic"]).partition("^")
    return f"{family}, {given}" if given else family


def test_study_list_shows_exactly_what_qido_returns(site: Site, share_session: Session) -> None:
    page = share_session.page
    token = share_session.token
    # other tests share this archive: the list is filtered to this test's patients (the
    # filter is OHIF's own, in the URL), else it would be paginated
    studies = site.qido(token, "/studies", PatientName="Viewer*")
    expected = sorted(_shown(s["00100010"]) for s in studies)
    assert "Viewer, VWA1" in expected and "Viewer, VWA2" in expected
    assert "Viewer, VWB1" not in expected  # Hospital B's study: QIDO hides it
    page.goto(f"{site.url}/viewer/share/?patientName=Viewer")
    _wait_until(lambda: len(_listed(page)) >= len(expected), "the study list", deadline=90)
    assert sorted(_listed(page)) == expected
    calls = [(u, a) for u, a in share_session.requests if "/dicom-web/studies" in u]
    assert calls, "the study list asked QIDO"
    assert all(auth == f"Bearer {token}" for _u, auth in calls)
    assert all(token not in u for u, _a in share_session.requests)  # never in a URL


def _variance(png: bytes) -> float:
    from PIL import Image, ImageStat

    image = Image.open(io.BytesIO(png)).convert("L")
    return float(ImageStat.Stat(image).var[0])


# the pixels of the viewport's canvas only (overlays such as dialogs are not in them)
_CANVAS_PNG = "() => document.querySelector('canvas.cornerstone-canvas').toDataURL('image/png')"


def test_a_study_renders_in_the_viewport(site: Site, share_session: Session) -> None:
    page = share_session.page
    uid = site.studies["VW-A1"]
    # headless Chromium has no GPU: with SwiftShader the WebGL path fills the canvas but the
    # page screenshot stays black, so the test asks OHIF for its CPU renderer (same
    # loaders, codecs and workers) to keep a screenshot a person can look at
    page.goto(f"{site.url}/viewer/share/viewer?StudyInstanceUIDs={uid}&viewportRendering=cpu")
    page.locator("canvas.cornerstone-canvas").first.wait_for(state="visible", timeout=90_000)
    seen: list[float] = []

    def rendered() -> bool:
        data_url = page.evaluate(_CANVAS_PNG)
        seen.append(_variance(base64.b64decode(data_url.split(",", 1)[1])))
        return seen[-1] > 50.0

    try:
        _wait_until(rendered, "the image in the viewport", deadline=90)
    finally:
        artifacts = ROOT / "var" / "test-artifacts"
        artifacts.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(artifacts / "viewer-study.png"))
    assert seen[-1] > 50.0
    violations = page.evaluate("window.vnaViolations || []")
    assert violations == [], violations  # the CSP lets OHIF load, decode and draw
    frames = [auth for url, auth in share_session.requests if "/frames/" in url]
    assert frames and all((auth or "").startswith("Bearer ") for auth in frames)


def test_pages_carry_the_security_headers(site: Site) -> None:
    answer = requests.get(f"{site.url}/viewer/share/viewer?StudyInstanceUIDs=1.2.3", timeout=30)
    assert answer.status_code == 200
    assert answer.headers["Referrer-Policy"] == "no-referrer"
    csp = answer.headers["Content-Security-Policy"]
    assert "'unsafe-eval'" not in csp and "frame-ancestors 'none'" in csp
    assert 'src="/viewer/share/app-config.js"' in answer.text
