"""The gateway's client of Orthanc's loopback API sends the archive's generated account as
HTTP Basic credentials on every request, built without aiohttp's deprecated BasicAuth, and
never shows the password in an error."""

from __future__ import annotations

import asyncio
import base64
import socket
import warnings
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from archive.api import credentials
from compose.settings import load_settings
from dicomweb.http.orthanc import OrthancClient, OrthancError


def test_every_request_carries_the_archives_account(tmp_path: Path) -> None:
    seen: list[str | None] = []

    async def system(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        return web.json_response({"Version": "test"})

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/system", system)
        async with TestServer(app, host="127.0.0.1") as server:
            settings = load_settings(tmp_path, orthanc_http_port=server.port)
            with warnings.catch_warnings():
                warnings.simplefilter("error", DeprecationWarning)
                client = OrthancClient(settings)
                try:
                    assert await client.json("GET", "/system") == {"Version": "test"}
                    status, _, _ = await client.request(
                        "GET", "/system", headers={"Accept": "application/json"}
                    )
                    assert status == 200
                    async with client.session.get("/system") as response:  # as frames.py does
                        assert response.status == 200
                finally:
                    await client.close()

    asyncio.run(main())
    account = credentials(load_settings(tmp_path))
    token = base64.b64encode(f"{account.username}:{account.password}".encode()).decode()
    assert seen == [f"Basic {token}"] * 3


def test_an_unreachable_orthanc_is_named_without_the_password(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nobody listens on once it is closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = load_settings(tmp_path, orthanc_http_port=port)
    password = credentials(settings).password

    async def main() -> None:
        client = OrthancClient(settings)
        try:
            with pytest.raises(OrthancError) as raised:
                await client.request("GET", "/system")
        finally:
            await client.close()
        assert password not in str(raised.value)

    asyncio.run(main())
