"""Bearer tokens from the Authorization header only (RFC 6750 section 2.1).

A token in the query string (``access_token=``) is refused outright: URLs end up in
logs, browser history and Referer headers. Tokens are never logged.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from security.identity import InvalidToken, MissingToken, Principal, TokenValidator

__all__ = ["authorize", "bearer_token"]


def bearer_token(request: web.Request) -> str:
    """The bearer token of ``request``; :class:`InvalidToken` when absent or misplaced."""
    if any(name.lower() == "access_token" for name in request.query):
        raise InvalidToken("access tokens are accepted only in the Authorization header")
    header = request.headers.get("Authorization")
    if header is None:
        raise MissingToken("this resource needs a bearer token")
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise InvalidToken("the Authorization header must be 'Bearer <access token>'")
    return token.strip()


async def authorize(request: web.Request, validator: TokenValidator, scope: str) -> Principal:
    """Validate the request's token and require ``scope``; returns the principal.

    Validation runs in a worker thread: an external issuer's JWKS may need fetching.
    """
    token = bearer_token(request)
    principal = await asyncio.to_thread(validator.validate, token)
    principal.require(scope)
    return principal
