"""The staff viewer's OIDC settings that OHIF 3.13's client needs, and the signed-out page.

The browser test (tests/integration/test_viewer_login.py) shows the whole flow; these pin
the two settings it depends on without a browser.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from dicomweb.viewer.routes import add_viewer_routes, viewer_ctx
from tests.unit.support import make_dist
from viewer.config import ViewerUrls, app_config, viewer_client

URLS = ViewerUrls.for_gateway("https://vna.example.org:8443")
# the routes of OHIF's built-in modes below its router base (basic viewer, segmentation,
# microscopy, ...), and the study list itself
MODE_ROUTES = ("", "viewer", "segmentation", "microscopy", "tmtv", "preclinical-4d")


def test_post_logout_page_is_no_route_of_ohif() -> None:
    [oidc] = app_config(URLS, "staff")["oidc"]
    target = oidc["post_logout_redirect_uri"]
    assert target == "https://vna.example.org:8443/viewer/signed-out"
    assert target in viewer_client(URLS).post_logout_redirect_uris
    # OHIF mounts its sign-out callback at this URL's whole path below /viewer: it must
    # not fall on a page OHIF shows, or opening a study would run the sign-out callback
    mounted = "/viewer" + urlsplit(target).path
    assert all(mounted.rstrip("/") != f"/viewer/{route}".rstrip("/") for route in MODE_ROUTES)
    # and it is on the origin of a registered redirect URI (the issuer's logout rule)
    assert {urlsplit(u).netloc for u in viewer_client(URLS).redirect_uris} == {
        urlsplit(target).netloc
    }


def test_sign_out_revokes_only_the_refresh_token() -> None:
    [oidc] = app_config(URLS, "staff")["oidc"]
    assert oidc["revokeAccessTokenOnSignout"] is True
    assert oidc["revokeTokenTypes"] == ["refresh_token"]


def test_signed_out_page_is_plain_and_links_back(tmp_path: Path) -> None:
    async def main(dist: Path) -> None:
        app = web.Application()
        app.cleanup_ctx.append(viewer_ctx("http://gw.test:8080", dist))
        add_viewer_routes(app)
        async with TestClient(TestServer(app)) as client:
            page = await client.get("/viewer/signed-out")
            assert page.status == 200
            assert page.headers["Content-Type"] == "text/html; charset=utf-8"
            assert page.headers["Content-Security-Policy"].startswith("default-src 'none'")
            assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
            assert page.headers["Referrer-Policy"] == "no-referrer"
            text = await page.text()
            assert "Signed out" in text and "href='/viewer/'" in text
            assert "<script" not in text
            # the share variant has no sign-in, hence no such page: OHIF's fallback there
            share = await client.get("/viewer/share/signed-out")
            assert "Signed out" not in await share.text()

    asyncio.run(main(make_dist(tmp_path / "dist")))
    # without the bundle the page is still there (it is not OHIF's)
    asyncio.run(main(tmp_path / "missing"))
