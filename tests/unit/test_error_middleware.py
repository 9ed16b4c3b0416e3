"""The gateway's one error translation (dicomweb/http/middleware.py), as a client sees it:
status, body and headers for project errors, bearer-token errors (authlib's RFC 6750
classes), the authorization server's OAuth errors, aiohttp's own, and a handler that
renders its errors as a page."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from authlib.oauth2.rfc6749.errors import InvalidClientError, InvalidGrantError

from dicomweb.appkeys import METRICS
from dicomweb.http.middleware import (
    ERROR_RENDERER,
    ErrorAnswer,
    cors,
    error_middleware,
    error_status,
)
from dicomweb.operations.metrics import GatewayMetrics
from security.errors import (
    Forbidden,
    InvalidInput,
    NotAcceptable,
    PayloadTooLarge,
    ServiceUnavailable,
    TooManyAttempts,
    UnsupportedMediaType,
)
from security.tokens import InsufficientScope, InvalidToken, MissingToken
from sharing.api import LinkGone, LinkLocked, PinRequired, WrongPin

Scenario = Callable[[TestClient[Any, Any]], Awaitable[None]]


def _serve(raised: BaseException, scenario: Scenario, page: bool = False) -> None:
    async def handler(request: web.Request) -> web.Response:
        if page:
            request[ERROR_RENDERER] = _page
        raise raised

    async def main() -> None:
        app = web.Application(middlewares=[error_middleware])
        app[METRICS] = GatewayMetrics()
        app.router.add_get("/x", handler)
        async with TestClient(TestServer(app)) as client:
            await scenario(client)

    asyncio.run(main())


def _page(_request: web.Request, answer: ErrorAnswer) -> web.Response:
    return web.Response(
        text=f"<p>{answer.message}</p>", status=answer.status, content_type="text/html"
    )


@pytest.mark.parametrize(
    ("raised", "status", "error"),
    [
        (NotAcceptable("ask for image/jpeg"), 406, "not_acceptable"),
        (UnsupportedMediaType("send multipart/related"), 415, "unsupported_media_type"),
        (PayloadTooLarge("send fewer instances"), 413, "request_entity_too_large"),
        (TooManyAttempts("try again later"), 429, "too_many_attempts"),
        (ServiceUnavailable("run make install"), 503, "service_unavailable"),
        (PinRequired("this link needs its PIN"), 401, "pin_required"),
        (LinkLocked("locked"), 423, "locked"),
        (LinkGone("expired"), 410, "gone"),
        (Forbidden("not yours"), 403, "forbidden"),
        (InvalidInput("bad"), 400, "invalid_input"),
    ],
)
def test_project_errors_are_json_with_their_status(
    raised: Exception, status: int, error: str
) -> None:
    async def scenario(client: TestClient[Any, Any]) -> None:
        answer = await client.get("/x")
        assert answer.status == status
        assert answer.content_type == "application/json"
        body = await answer.json()
        assert (body["error"], body["message"]) == (error, str(raised))
        assert "request_id" in body

    _serve(raised, scenario)
    assert error_status(raised) == status


def test_a_wrong_pin_tells_the_attempts_left() -> None:
    async def scenario(client: TestClient[Any, Any]) -> None:
        answer = await client.get("/x")
        assert answer.status == 401
        body = await answer.json()
        assert (body["error"], body["attempts_left"]) == ("wrong_pin", 2)

    _serve(WrongPin(2), scenario)


def test_an_error_code_of_its_own_is_kept() -> None:
    class Mine(InvalidInput):
        code = "invalid_request"

    async def scenario(client: TestClient[Any, Any]) -> None:
        answer = await client.get("/x")
        assert (answer.status, (await answer.json())["error"]) == (400, "invalid_request")

    _serve(Mine("bad"), scenario)


@pytest.mark.parametrize(
    ("raised", "status", "challenge"),
    [
        (MissingToken("no token"), 401, 'Bearer realm="vna"'),
        (
            InvalidToken('bad "token"'),
            401,
            'Bearer realm="vna", error="invalid_token", error_description="bad \'token\'"',
        ),
        (
            InsufficientScope("share"),
            403,
            'Bearer realm="vna", error="insufficient_scope", '
            'error_description="this operation needs the scope \'share\'", scope="share"',
        ),
    ],
)
def test_bearer_errors_carry_their_challenge(
    raised: Exception, status: int, challenge: str
) -> None:
    async def scenario(client: TestClient[Any, Any]) -> None:
        answer = await client.get("/x")
        assert answer.status == status
        assert answer.headers["WWW-Authenticate"] == challenge
        body = await answer.json()
        assert body["error"] == ("insufficient_scope" if status == 403 else "invalid_token")

    _serve(raised, scenario)


def test_oauth_errors_are_rfc_6749_answers_never_cached() -> None:
    async def scenario(client: TestClient[Any, Any]) -> None:
        answer = await client.get("/x")
        assert answer.status == 400
        assert await answer.json() == {
            "error": "invalid_grant",
            "error_description": "code already used",
        }
        assert answer.headers["Cache-Control"] == "no-store"
        assert answer.headers["Pragma"] == "no-cache"

    _serve(InvalidGrantError("code already used"), scenario)


def test_an_unknown_oauth_client_is_401() -> None:
    async def scenario(client: TestClient[Any, Any]) -> None:
        answer = await client.get("/x")
        assert answer.status == 401
        assert (await answer.json())["error"] == "invalid_client"

    _serve(InvalidClientError("who are you", status_code=401), scenario)


def test_aiohttp_errors_keep_their_allow_header() -> None:
    async def scenario(client: TestClient[Any, Any]) -> None:
        answer = await client.get("/x")
        assert answer.status == 405
        assert answer.headers["Allow"] == "POST"
        assert (await answer.json())["error"] == "method_not_allowed"

    _serve(web.HTTPMethodNotAllowed("GET", ["POST"]), scenario)


def test_a_page_renders_its_errors_its_way() -> None:
    async def scenario(client: TestClient[Any, Any]) -> None:
        answer = await client.get("/x")
        assert answer.status == 403
        assert answer.content_type == "text/html"
        assert await answer.text() == "<p>form used already</p>"

    _serve(Forbidden("form used already"), scenario, page=True)


def test_a_refused_cors_preflight_is_answered_like_any_other_error() -> None:
    async def handler(_request: web.Request) -> web.Response:
        return web.Response(text="never for a preflight")

    async def main() -> None:
        preflight, add_headers = cors(["https://viewer.example"])
        app = web.Application(middlewares=[error_middleware, preflight])
        app[METRICS] = GatewayMetrics()
        app.on_response_prepare.append(add_headers)
        app.router.add_get("/x", handler)
        async with TestClient(TestServer(app)) as client:
            asking = {"Access-Control-Request-Method": "GET"}
            allowed = await client.options(
                "/x", headers={**asking, "Origin": "https://viewer.example"}
            )
            assert allowed.status == 204
            assert allowed.headers["Access-Control-Allow-Origin"] == "https://viewer.example"
            refused = await client.options(
                "/x", headers={**asking, "Origin": "https://elsewhere.example"}
            )
            assert refused.status == 403
            assert (await refused.json())["error"] == "forbidden"
            assert "gateway.cors_origins" in (await refused.json())["message"]
            assert "Access-Control-Allow-Origin" not in refused.headers

    asyncio.run(main())
