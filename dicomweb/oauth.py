"""The embedded issuer's HTTP face: token endpoint and OpenID discovery.

Only the client_credentials grant (RFC 6749 section 4.4) for institution systems is served
so far; people (authorization code with PKCE) come with the viewer. Errors follow RFC 6749
section 5.2; the secret travels in the request body or Basic header and is never logged.
"""

from __future__ import annotations

import asyncio
import binascii
from base64 import b64decode
from urllib.parse import unquote

from aiohttp import web

from dicomweb.auditing import audit
from security.clients import ClientRegistry
from security.issuer import DEFAULT_LIFETIME, EmbeddedIssuer
from security.tokens import SCOPES

__all__ = ["CLIENTS", "ISSUER", "openid_configuration", "token"]

CLIENTS: web.AppKey[ClientRegistry] = web.AppKey("clients", ClientRegistry)
ISSUER: web.AppKey[EmbeddedIssuer] = web.AppKey("issuer", EmbeddedIssuer)

_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def _error(status: int, error: str, description: str) -> web.Response:
    headers = dict(_NO_STORE)
    if status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="vna"'
    return web.json_response(
        {"error": error, "error_description": description}, status=status, headers=headers
    )


def _credentials(request: web.Request, form: dict[str, str]) -> tuple[str, str] | None:
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("basic "):
        try:
            decoded = b64decode(header[6:], validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        client_id, sep, secret = decoded.partition(":")
        return (unquote(client_id), unquote(secret)) if sep else None
    if form.get("client_id") and form.get("client_secret"):
        return form["client_id"], form["client_secret"]
    return None


async def token(request: web.Request) -> web.Response:
    """Token endpoint: a short-lived access token (RFC 9068) for a registered client."""
    if request.query:
        return _error(400, "invalid_request", "send parameters in the POST body, not the URL")
    form = {k: str(v) for k, v in (await request.post()).items()}
    if form.get("grant_type") != "client_credentials":
        return _error(400, "unsupported_grant_type", "only client_credentials is supported")
    credentials = _credentials(request, form)
    if credentials is None:
        return _error(401, "invalid_client", "authenticate with the client id and secret")
    client = await asyncio.to_thread(request.app[CLIENTS].authenticate, *credentials)
    if client is None:
        await audit(
            request,
            "authentication",
            "E",
            4,
            credentials[0][:64],
            detail={"refused": "invalid_client"},
        )
        return _error(401, "invalid_client", "unknown client or wrong secret")
    requested = frozenset(form.get("scope", "").split()) or client.scopes
    if not requested <= client.scopes:
        extra = " ".join(sorted(requested - client.scopes))
        return _error(400, "invalid_scope", f"this client may not ask for: {extra}")
    await audit(
        request,
        "authentication",
        "E",
        0,
        client.client_id,
        client.institution,
        detail={"grant": "client_credentials", "scope": " ".join(sorted(requested))},
    )
    access_token = request.app[ISSUER].mint(
        subject=client.client_id,
        institution=client.institution,
        scopes=sorted(requested),
        client_id=client.client_id,
    )
    return web.json_response(
        {
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": DEFAULT_LIFETIME,
            "scope": " ".join(sorted(requested)),
        },
        headers=_NO_STORE,
    )


async def openid_configuration(request: web.Request) -> web.Response:
    """OpenID Provider metadata for the embedded issuer (discovery)."""
    issuer = request.app[ISSUER].issuer
    return web.json_response(
        {
            "issuer": issuer,
            "jwks_uri": f"{issuer}/.well-known/jwks.json",
            "token_endpoint": f"{issuer}/oauth/token",
            "grant_types_supported": ["client_credentials"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "scopes_supported": sorted(SCOPES),
            "response_types_supported": [],
        }
    )
