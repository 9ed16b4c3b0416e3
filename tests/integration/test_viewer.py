"""The OHIF viewer served by the gateway, in Debian's headless Chromium (playwright).

A token from the embedded issuer is put in ``sessionStorage`` the way a share page hands
it over (the share variant at /viewer/share/ reads it); the study list must show exactly
the studies QIDO returns for the token's institution, and a study must render (the
screenshot's viewport is not blank). Skipped only when the OHIF bundle or Chromium is
missing and ``CI`` is not set; ``make test`` installs both.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import requests

from tests.integration.browser import (
    listed,
    shown,
    skip_without_browser,
    wait_for_image,
)
from tests.integration.harness import wait_until
from tests.integration.sites import ViewerSite
from viewer.api import SHARE_TOKEN_KEY

_REASON = skip_without_browser()

from playwright.sync_api import Browser, Page  # noqa: E402


@dataclass
class Session:
    page: Page
    token: str
    console: list[str]
    requests: list[tuple[str, str | None]]  # (url, Authorization) of DICOMweb calls


@pytest.fixture
def share_session(site: ViewerSite, browser: Browser) -> Iterator[Session]:
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


def test_study_list_shows_exactly_what_qido_returns(
    site: ViewerSite, share_session: Session
) -> None:
    page = share_session.page
    token = share_session.token
    # other tests share this archive: the list is filtered to this test's patients (the
    # filter is OHIF's own, in the URL), else it would be paginated
    studies = site.qido(token, "/studies", PatientName="Viewer*")
    expected = sorted(shown(s["00100010"]) for s in studies)
    assert "Viewer, VWA1" in expected and "Viewer, VWA2" in expected
    assert "Viewer, VWB1" not in expected  # Hospital B's study: QIDO hides it
    page.goto(f"{site.url}/viewer/share/?patientName=Viewer")
    wait_until(lambda: len(listed(page)) >= len(expected), "the study list", deadline=90)
    assert sorted(listed(page)) == expected
    calls = [(u, a) for u, a in share_session.requests if "/dicom-web/studies" in u]
    assert calls, "the study list asked QIDO"
    assert all(auth == f"Bearer {token}" for _u, auth in calls)
    assert all(token not in u for u, _a in share_session.requests)  # never in a URL


def test_a_study_renders_in_the_viewport(site: ViewerSite, share_session: Session) -> None:
    page = share_session.page
    uid = site.studies["VW-A1"]
    # headless Chromium has no GPU: with SwiftShader the WebGL path fills the canvas but the
    # page screenshot stays black, so the test asks OHIF for its CPU renderer (same
    # loaders, codecs and workers) to keep a screenshot a person can look at
    page.goto(f"{site.url}/viewer/share/viewer?StudyInstanceUIDs={uid}&viewportRendering=cpu")
    assert wait_for_image(page, "viewer-study.png") > 50.0
    violations = page.evaluate("window.vnaViolations || []")
    assert violations == [], violations  # the CSP lets OHIF load, decode and draw
    frames = [auth for url, auth in share_session.requests if "/frames/" in url]
    assert frames and all((auth or "").startswith("Bearer ") for auth in frames)


def test_pages_carry_the_security_headers(site: ViewerSite) -> None:
    answer = requests.get(f"{site.url}/viewer/share/viewer?StudyInstanceUIDs=1.2.3", timeout=30)
    assert answer.status_code == 200
    assert answer.headers["Referrer-Policy"] == "no-referrer"
    csp = answer.headers["Content-Security-Policy"]
    assert "'unsafe-eval'" not in csp and "frame-ancestors 'none'" in csp
    assert 'src="/viewer/share/app-config.js"' in answer.text
