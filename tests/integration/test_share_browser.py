"""A share link in headless Chromium: it opens the study in the viewer without a login,
asks for its PIN first when it has one, and shows a refusal once revoked."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

from tests.integration.browser import skip_without_browser, wait_for_image
from tests.integration.harness import Archive
from tests.integration.sites import ViewerSite

skip_without_browser()  # the viewer's session fixtures fail instead under CI

from playwright.sync_api import Browser  # noqa: E402


def _link(archive: Archive, site: ViewerSite, study_uid: str, *options: str) -> tuple[str, str]:
    made = json.loads(
        archive.vna(
            "share", "create", study_uid, "--institution", "Hospital A", "--json", *options
        ).stdout
    )
    parts = urlsplit(made["url"])
    # the archive's configured public URL is its own gateway; this test runs another one
    return made["id"], f"{site.url}{parts.path}?viewportRendering=cpu#{parts.fragment}"


def test_a_pin_link_opens_the_study_in_the_viewer(
    archive: Archive, site: ViewerSite, browser: Browser
) -> None:
    uid = site.studies["VW-A1"]
    _link_id, url = _link(archive, site, uid, "--pin", "2580")
    secret = urlsplit(url).fragment
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    seen_urls: list[str] = []
    referers: list[str] = []
    page.on("request", lambda r: seen_urls.append(r.url))
    page.on("request", lambda r: referers.append(r.headers.get("referer") or ""))
    try:
        page.goto(url)
        page.locator("#pin-form").wait_for(state="visible", timeout=30_000)
        assert secret not in page.url  # the fragment left the address bar at once
        page.fill("#pin", "0000")
        page.click("#pin-form button")
        page.locator("#status.refused").wait_for(timeout=30_000)
        assert "wrong PIN" in page.inner_text("#status")
        page.fill("#pin", "2580")
        page.click("#pin-form button")
        page.wait_for_url("**/viewer/share/viewer?StudyInstanceUIDs=*", timeout=60_000)
        assert wait_for_image(page, "share-link-study.png") > 50.0
        assert uid in page.url and secret not in page.url
        assert all(secret not in u for u in seen_urls)  # never sent in any URL
        assert all(secret not in r for r in referers)
    finally:
        context.close()


def test_a_revoked_link_shows_the_refusal(
    archive: Archive, site: ViewerSite, browser: Browser
) -> None:
    link_id, url = _link(archive, site, site.studies["VW-A1"])
    archive.vna("share", "revoke", link_id)
    context = browser.new_context()
    page = context.new_page()
    try:
        page.goto(url)
        page.locator("#status.refused").wait_for(timeout=30_000)
        assert "revoked" in page.inner_text("#status")
        assert page.locator("#actions").is_hidden()
    finally:
        context.close()
