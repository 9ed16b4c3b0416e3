"""A reading centre's radiologist signs in to the staff viewer at /viewer, in Debian's
headless Chromium (playwright): the viewer sends the browser to the embedded issuer's
login page (authorization code + PKCE, OHIF's own OIDC client), the study list then shows
exactly the reading centre's own study and the one Hospital A granted it, the granted
study opens and its image renders. A wrong password stays on the login page with the
error; signing out ends the session (the next visit asks for the password again).

Skipped only when the OHIF bundle, Chromium or playwright is missing and ``CI`` is not
set; ``make test`` installs them.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient

from security.issuer import EmbeddedIssuer
from synthetic import StudySpec, write_study
from tests.integration.browser import (
    ARTIFACTS,
    listed,
    shown,
    skip_without_browser,
    variance,
    wait_for_image,
)
from tests.integration.harness import Archive, gateway_process, wait_until

_REASON = skip_without_browser()

from playwright.sync_api import Browser, BrowserContext, Page, Response, Route  # noqa: E402

CENTRE = "Reading Centre"
USER = "reader-rc"
PASSWORD = "correct horse battery staple 4"
# (owner, how it is stored, spec): A's study granted to the centre is large enough to look at
SPECS = {
    "granted": ("Hospital A", "HOSPA", StudySpec(series=1, slices=2, rows=256, columns=256)),
    "a-only": ("Hospital A", "HOSPA", StudySpec(series=1, slices=1, rows=64, columns=64)),
    "b-only": ("Hospital B", "HOSPB", StudySpec(series=1, slices=1, rows=64, columns=64)),
    "own": (CENTRE, "stow", StudySpec(modality="MR", series=1, slices=1, rows=64, columns=64)),
}
VISIBLE = {"granted", "own"}


@dataclass
class Site:
    url: str
    issuer: EmbeddedIssuer
    studies: dict[str, str]  # SPECS key -> study UID
    names: dict[str, str]  # SPECS key -> patient name as the study list shows it
    log: Path
    requests: list[tuple[str, str | None]] = field(default_factory=list)

    def token(self, institution: str, *scopes: str) -> str:
        return self.issuer.mint(
            subject=f"test-{institution}", institution=institution, scopes=scopes or ("dicom.read",)
        )

    def study_uids(self, token: str) -> set[str]:
        answer = requests.get(
            f"{self.url}/dicom-web/studies",
            headers={"Authorization": f"Bearer {token}", "Accept": "application/dicom+json"},
            timeout=30,
        )
        answer.raise_for_status()
        return {str(s["0020000D"]["Value"][0]) for s in answer.json()}


@pytest.fixture(scope="module")
def site(archive: Archive, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    assert _REASON is None, f"under CI the viewer login test must run: {_REASON}"
    archive.vna("institution", "add", CENTRE)  # no AE: it reads over the web only
    secret = tmp_path_factory.mktemp("rc-pw") / "password"
    secret.write_text(PASSWORD + "\n")
    archive.vna(
        "user", "add", USER, "--institution", CENTRE,
        "--password-file", str(secret), "--scopes", "dicom.read dicom.write",
    )  # fmt: skip
    with gateway_process(archive, "viewer-login") as (url, log):
        issuer = EmbeddedIssuer.open_or_create(archive.home / "keys", url, f"{url}/dicom-web")
        site = Site(url, issuer, {}, {}, log)
        for seed, (key, (owner, via, spec)) in enumerate(SPECS.items(), start=61):
            pid = f"VL-{key.upper()}"
            name = "Login^" + key.replace("-", "").capitalize()
            spec = dataclasses.replace(spec, patient_id=pid, patient_name=name, seed=seed)
            files = write_study(spec, tmp_path_factory.mktemp(f"vl-{key}"))
            if via == "stow":  # the centre's own study, stored over STOW-RS with its token
                writer = site.token(owner, "dicom.write")
                client = DICOMwebClient(
                    f"{url}/dicom-web", headers={"Authorization": f"Bearer {writer}"}
                )
                client.store_instances([pydicom.dcmread(f) for f in files])
            else:
                sent = archive.storescu(via, *files)
                assert sent.returncode == 0, sent.stderr
            site.studies[key] = str(pydicom.dcmread(files[0]).StudyInstanceUID)
            site.names[key] = shown({"Value": [{"Alphabetic": name}]})
        for key, (owner, _via, _spec) in SPECS.items():
            token = site.token(owner)
            wait_until(
                lambda t=token, k=key: site.studies[k] in site.study_uids(t),
                f"the catalog to index {key}",
            )
        archive.vna(
            "grant", "add", site.studies["granted"], "--from", "Hospital A",
            "--to", CENTRE, "--permission", "read+report",
        )  # fmt: skip
        expected = {site.studies[k] for k in VISIBLE}
        assert site.study_uids(site.token(CENTRE)) == expected  # what QIDO gives the centre
        yield site


# OHIF's CPU renderer for the test, as `?viewportRendering=cpu` would select it; the
# parameter cannot be used here because the login's redirects drop the query string
_CPU = "\nwindow.config.genericViewports = { viewportRendering: 'cpu' };\n"


@pytest.fixture
def context(site: Site, browser: Browser) -> Iterator[BrowserContext]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})

    def cpu_rendering(route: Route) -> None:
        answer = route.fetch()
        route.fulfill(response=answer, body=answer.text() + _CPU)

    context.route(re.compile(r"/viewer/app-config\.js$"), cpu_rendering)
    context.add_init_script(
        "document.addEventListener('securitypolicyviolation', (e) => {"
        " (window.vnaViolations = window.vnaViolations || [])"
        ".push(e.violatedDirective + ' ' + e.blockedURI); });"
    )
    site.requests.clear()
    context.on(
        "request",
        lambda r: (
            site.requests.append((r.url, r.headers.get("authorization")))
            if "/dicom-web/" in r.url
            else None
        ),
    )
    try:
        yield context
    finally:
        context.close()


def _claims(jwt: str) -> dict[str, Any]:
    body = jwt.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))))


def _sign_in(page: Page, site: Site, password: str = PASSWORD) -> None:
    """Open the viewer, land on the issuer's login page and submit the form."""
    page.goto(f"{site.url}/viewer/")
    page.wait_for_url(re.compile(re.escape(f"{site.url}/oauth/authorize")), timeout=60_000)
    page.fill("#username", USER)
    page.fill("#password", password)
    page.click("button[type=submit]")


def test_reading_centre_signs_in_and_sees_own_and_granted_studies(
    site: Site, context: BrowserContext
) -> None:
    page = context.new_page()
    _sign_in(page, site)
    page.wait_for_url(re.compile(re.escape(f"{site.url}/viewer") + r"/?(\?.*)?$"), timeout=60_000)
    expected = sorted(site.names[k] for k in VISIBLE)
    wait_until(lambda: len(listed(page)) >= len(expected), "the study list", deadline=90)
    try:
        assert sorted(listed(page)) == expected  # not A's other study, not B's
    finally:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "viewer-login-study-list.png"))
    bearers = {auth for url, auth in site.requests if "/dicom-web/studies" in url}
    assert bearers and all((auth or "").startswith("Bearer ") for auth in bearers)
    for auth in bearers:  # the signed-in person's token, acting for the reading centre
        claims = _claims(str(auth).removeprefix("Bearer "))
        assert (claims["sub"], claims["institution"]) == (USER, CENTRE)

    # open the granted study from the list (the session lives in this page's memory)
    row = page.locator("tbody tr[aria-selected]", has_text=site.names["granted"])
    row.click()
    page.get_by_role("button", name=re.compile("Basic Viewer", re.I)).first.click()
    page.wait_for_url(re.compile(r"/viewer/viewer\?"), timeout=60_000)
    assert site.studies["granted"] in page.url
    assert wait_for_image(page, "viewer-login-study.png") > 50.0
    # and as the page shows it (the screenshot of the viewport's area is not blank)
    assert variance(page.locator("canvas.cornerstone-canvas").first.screenshot()) > 50.0
    violations = page.evaluate("window.vnaViolations || []")
    assert violations == [], violations  # the CSP lets the signed-in viewer load and draw
    frames = [(url, auth) for url, auth in site.requests if "/frames/" in url]
    assert frames and all(site.studies["granted"] in url for url, _auth in frames)
    assert all((auth or "").startswith("Bearer ") for _url, auth in frames)


def test_wrong_password_stays_on_the_login_page(site: Site, context: BrowserContext) -> None:
    page = context.new_page()
    _sign_in(page, site, password="not the password")
    alert = page.locator("[role=alert]")
    alert.wait_for(state="visible", timeout=30_000)
    assert "Wrong user name or password" in alert.inner_text()
    assert page.url.startswith(f"{site.url}/oauth/authorize")  # no redirect to the viewer
    assert page.locator("#password").is_visible()
    assert not [url for url, _auth in site.requests if "/dicom-web/studies" in url]


def _stored_user(page: Page, site: Site) -> dict[str, Any] | None:
    """What OHIF's OIDC client (oidc-client-ts) keeps in sessionStorage for this login."""
    key = f"oidc.user:{site.url}:vna-viewer"
    stored = page.evaluate("(key) => window.sessionStorage.getItem(key)", key)
    return dict(json.loads(stored)) if stored else None


def test_sign_out_ends_the_session(site: Site, context: BrowserContext) -> None:
    page = context.new_page()
    _sign_in(page, site)
    expected = sorted(site.names[k] for k in VISIBLE)
    wait_until(lambda: sorted(listed(page)) == expected, "the study list", deadline=90)
    user = _stored_user(page, site)
    assert user is not None and user["refresh_token"]
    page.goto(f"{site.url}/viewer/logout")  # OHIF's sign-out route (its user menu's target)
    page.wait_for_url(f"{site.url}/viewer/signed-out", timeout=60_000)
    assert page.get_by_role("heading", name="Signed out").is_visible()
    assert _stored_user(page, site) is None
    # the issuer revoked the login: its refresh token gets nothing any more
    refused = requests.post(
        f"{site.url}/oauth/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": user["refresh_token"],
            "client_id": "vna-viewer",
        },
        timeout=30,
    )
    assert (refused.status_code, refused.json()["error"]) == (400, "invalid_grant")
    page.click("#sign-in-again")  # and the viewer asks for the password again
    page.wait_for_url(re.compile(re.escape(f"{site.url}/oauth/authorize")), timeout=60_000)
    assert page.locator("#password").is_visible()


def _is_renewal(response: Response) -> bool:
    body = response.request.post_data or ""
    return urlsplit(response.url).path == "/oauth/token" and "grant_type=refresh_token" in body


def test_the_viewer_renews_its_token_with_the_refresh_token(
    site: Site, context: BrowserContext
) -> None:
    # the page's clock is faked so that the access token's five minutes pass at once
    context.clock.install()
    page = context.new_page()
    _sign_in(page, site)
    expected = sorted(site.names[k] for k in VISIBLE)
    wait_until(lambda: sorted(listed(page)) == expected, "the study list", deadline=90)
    first = _stored_user(page, site)
    assert first is not None
    # oidc-client-ts renews a minute before expiry, with the refresh token (no iframe)
    with page.expect_response(_is_renewal, timeout=60_000) as renewal:
        page.clock.fast_forward("04:10")
    assert renewal.value.status == 200
    wait_until(
        lambda: (_stored_user(page, site) or first)["access_token"] != first["access_token"],
        "the renewed token in the viewer's store",
        deadline=60,
    )
    renewed = _stored_user(page, site)
    assert renewed is not None
    assert renewed["refresh_token"] != first["refresh_token"]  # rotated
    assert _claims(renewed["access_token"])["sub"] == USER
    # the next search of the study list goes out with the renewed token
    with page.expect_request(lambda r: "/dicom-web/studies" in r.url, timeout=60_000) as search:
        page.get_by_role("textbox").first.fill("Login")
    assert search.value.headers.get("authorization") == f"Bearer {renewed['access_token']}"


def test_the_worklist_data_source_lists_only_granted_studies(
    site: Site, context: BrowserContext
) -> None:
    """With ``?datasources=worklist`` the viewer's study list is the reading worklist: the
    studies granted to the centre, not its own."""
    page = context.new_page()
    # the sign-in lives in the page's memory: start at the worklist, sign in, come back
    page.goto(f"{site.url}/viewer/?datasources=worklist")
    page.wait_for_url(re.compile(re.escape(f"{site.url}/oauth/authorize")), timeout=60_000)
    page.fill("#username", USER)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(re.escape(f"{site.url}/viewer")), timeout=60_000)
    try:
        wait_until(lambda: len(listed(page)) >= 1, "the worklist", deadline=90)
    finally:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "viewer-worklist.png"))
    assert listed(page) == [site.names["granted"]]
    asked = [url for url, _auth in site.requests if "/worklist/dicom-web/studies" in url]
    assert asked  # the list came from the worklist root
