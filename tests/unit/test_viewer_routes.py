"""The gateway's /viewer routes on a synthetic OHIF dist: fallback, types, caching, headers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from dicomweb.http.middleware import error_middleware
from dicomweb.viewer.routes import add_viewer_routes, viewer_ctx
from tests.unit.support import make_dist

Check = Callable[[TestClient[web.Request, web.Application]], Awaitable[None]]


def run(dist: Path, check: Check) -> None:
    async def main() -> None:
        app = web.Application(middlewares=[error_middleware])
        app.cleanup_ctx.append(viewer_ctx("http://gw.test:8080", dist))
        add_viewer_routes(app)
        async with TestClient(TestServer(app)) as client:
            await check(client)

    asyncio.run(main())


def test_routes_answer_pages_files_and_configs(tmp_path: Path) -> None:
    async def check(client: TestClient[web.Request, web.Application]) -> None:
        for path in ("/viewer", "/viewer/", "/viewer/viewer", "/viewer/callback"):
            page = await client.get(path, params={"StudyInstanceUIDs": "1.2.3"})
            assert page.status == 200, path
            assert page.headers["Content-Type"] == "text/html; charset=utf-8"
            assert page.headers["Referrer-Policy"] == "no-referrer"
            assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
            assert page.headers["Cache-Control"] == "no-cache"
            assert 'src="/viewer/app-config.js"' in await page.text()
        share = await client.get("/viewer/share/viewer", params={"StudyInstanceUIDs": "1.2.3"})
        assert share.status == 200
        assert 'src="/viewer/share/app-config.js"' in await share.text()

        staff_config = await client.get("/viewer/app-config.js")
        assert staff_config.headers["Content-Type"] == "text/javascript; charset=utf-8"
        assert '"authority": "http://gw.test:8080"' in await staff_config.text()
        share_config = await client.get("/viewer/share/app-config.js")
        text = await share_config.text()
        assert "sessionStorage" in text and '"oidc"' not in text

        runtime = await client.get("/viewer/app.bundle.0f6159c501addfe9.js")
        assert runtime.status == 200
        assert runtime.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        assert b'__webpack_require__.p = "/viewer/"' in await runtime.read()
        again = await client.get(
            "/viewer/app.bundle.0f6159c501addfe9.js",
            headers={"If-None-Match": runtime.headers["ETag"]},
        )
        assert again.status == 304
        wasm = await client.get("/viewer/34b1e6b1deb5828e.wasm")
        assert wasm.headers["Content-Type"] == "application/wasm"
        assert wasm.headers["Content-Security-Policy"] == runtime.headers["Content-Security-Policy"]
        assert await wasm.read() == b"\0asm"
        png = await client.get("/viewer/assets/a.png")
        assert (png.status, png.headers["Content-Type"]) == (200, "image/png")

    run(make_dist(tmp_path / "dist"), check)


def test_missing_files_are_404_not_the_page(tmp_path: Path) -> None:
    async def check(client: TestClient[web.Request, web.Application]) -> None:
        for path in ("/viewer/nope.js", "/viewer/sw.js", "/viewer/../index.html"):
            answer = await client.get(path)
            assert answer.status == 404, path
            assert "<html" not in await answer.text()
        missing = await client.get("/viewer/nope.js")
        assert await missing.text() == "no such viewer file\n"
        assert missing.headers["Content-Type"] == "text/plain; charset=utf-8"
        assert "frame-ancestors 'none'" in missing.headers["Content-Security-Policy"]
        # a share route may name the files too (relative URLs on deep routes)
        chunk = await client.get("/viewer/share/1180.bundle.762993518ea30ae3.js")
        assert chunk.status == 200
        assert await chunk.read() == b"console.log('chunk');"

    run(make_dist(tmp_path / "dist"), check)


def test_without_a_bundle_the_viewer_says_how_to_install_it(tmp_path: Path) -> None:
    async def check(client: TestClient[web.Request, web.Application]) -> None:
        answer = await client.get("/viewer/")
        assert answer.status == 503
        text = await answer.text()
        assert "make install" in text and text.endswith("\n")
        assert answer.headers["Referrer-Policy"] == "no-referrer"

    run(tmp_path / "missing", check)
