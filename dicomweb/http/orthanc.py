"""Orthanc's loopback HTTP API, for what only Orthanc does: storing, transcoding, rendering.

The gateway serves stored bytes itself (``dicomweb.wado.retrieve``); this client is for the rest.
It authenticates with the archive's generated account (``<home>/secrets``), never
forwards the caller's token, and never logs the password.
"""

from __future__ import annotations

import json as jsonlib
from collections.abc import Mapping
from typing import Any

import aiohttp
from aiohttp import hdrs

from archive.api import ArchiveSettings, credentials
from security.api import VnaError

__all__ = ["OrthancClient", "OrthancError"]


class OrthancError(VnaError):
    """Orthanc answered with an error or could not be reached."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class OrthancClient:
    """One pooled aiohttp session to ``http://127.0.0.1:<orthanc_http_port>``."""

    def __init__(self, settings: ArchiveSettings, *, timeout_seconds: float = 300) -> None:
        creds = credentials(settings)
        self.base_url = f"http://127.0.0.1:{settings.orthanc_http_port}"
        # built once; latin-1 as aiohttp.BasicAuth (deprecated since aiohttp 3.14) encoded it
        self._authorization = aiohttp.encode_basic_auth(
            creds.username, creds.password, encoding="latin1"
        )
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                self.base_url,
                headers={hdrs.AUTHORIZATION: self._authorization},
                timeout=self._timeout,
                auto_decompress=False,
                raise_for_status=False,
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self,
        method: str,
        path: str,
        *,
        data: Any = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> tuple[int, Mapping[str, str], bytes]:
        """One request; returns status, headers and body. Unreachable Orthanc -> OrthancError."""
        try:
            async with self.session.request(
                method, path, data=data, json=json, headers=headers, params=params
            ) as response:
                return response.status, response.headers, await response.read()
        except aiohttp.ClientError as exc:
            raise OrthancError(f"Orthanc is not reachable ({exc.__class__.__name__})") from exc

    async def json(self, method: str, path: str, **kwargs: Any) -> Any:
        """A request whose 2xx answer is JSON; other answers raise :class:`OrthancError`."""
        status, _headers, body = await self.request(method, path, **kwargs)
        if not 200 <= status < 300:
            raise OrthancError(f"Orthanc answered {status} to {method} {path}", status)
        return jsonlib.loads(body)
