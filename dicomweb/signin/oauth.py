"""The embedded issuer's HTTP face: token, revocation, userinfo, logout and discovery.

Grants (RFC 6749 section 5 answers; errors are authlib's error classes, which the error
middleware answers per section 5.2):

* ``client_credentials`` (section 4.4) for institution systems, secret in the Basic
  header or the body;
* ``authorization_code`` (section 4.1.3) with PKCE (RFC 7636, S256 only) for people who
  logged in on the login page (``dicomweb/signin/login.py``); public clients identify
  themselves by ``client_id`` alone; with the ``openid`` scope an ID token (OpenID
  Connect Core 1.0) comes along;
* ``refresh_token`` (section 6) with rotation and reuse detection.

Why not authlib's ``AuthorizationServer``: authlib has no aiohttp server integration, its
server is synchronous and produces tokens through its own generators and JOSE module,
while access tokens here are RFC 9068 JWTs signed with joserfc by ``security/issuer.py``;
the one-time, hashed codes and the refresh-token families with reuse detection would be
our own storage behind its grant hooks anyway. So the endpoints are small explicit
handlers using authlib's parts: PKCE verification (``authlib.oauth2.rfc7636``), error
classes and URI helpers.

Secrets travel in POST bodies or the Basic header, never in URLs (the one exception is
the one-time code in the authorization redirect, as OAuth requires) and are never logged.
"""

from __future__ import annotations

import asyncio
import binascii
from base64 import b64decode
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any
from urllib.parse import unquote, urlsplit

from aiohttp import web
from authlib.common.urls import add_params_to_uri
from authlib.oauth2.rfc6749.errors import (
    InvalidClientError,
    InvalidGrantError,
    InvalidRequestError,
    InvalidScopeError,
    OAuth2Error,
    UnauthorizedClientError,
    UnsupportedGrantTypeError,
    UnsupportedTokenTypeError,
)

from dicomweb.appkeys import (
    AUTHORIZATION_FLOW,
    CLIENT_SECRET_FAILURES,
    EMBEDDED_ISSUER,
    OAUTH_CLIENTS,
    OWN_TOKEN_VALIDATOR,
    USERS,
)
from dicomweb.http.auth import authorize
from dicomweb.operations.audit_records import (
    EventAction,
    EventOutcome,
    EventType,
    audit,
    audit_refusal,
)
from dicomweb.settings import GatewaySettings
from security.api import FailureThrottle
from security.identity import (
    DEFAULT_LIFETIME,
    SCOPES,
    AuthorizationStore,
    Client,
    Grant,
    InvalidToken,
    TokenValidator,
    UserRegistry,
)

__all__ = [
    "OIDC_SCOPES",
    "end_session",
    "issuer_context",
    "openid_configuration",
    "revoke",
    "token",
    "userinfo",
]

SECRET_FAILURE_WINDOW = 600.0

OIDC_SCOPES = frozenset({"openid", "profile"})
"""OpenID Connect scopes granted when asked for, beside the archive's own."""

_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def issuer_context(
    gateway: GatewaySettings, engine_of: Callable[[web.Application], Any]
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A ``cleanup_ctx`` generator opening the issuer's registries on the catalog engine.

    ``engine_of(app)`` returns the engine; it runs after the catalog's own context.
    """

    async def context(app: web.Application) -> AsyncIterator[None]:
        engine = engine_of(app)
        app[USERS] = await asyncio.to_thread(
            UserRegistry,
            engine,
            max_failures=gateway.login_max_failures,
            lockout_seconds=gateway.login_lockout_seconds,
        )
        app[AUTHORIZATION_FLOW] = await asyncio.to_thread(
            AuthorizationStore,
            engine,
            refresh_lifetime=gateway.refresh_token_seconds,
            session_lifetime=gateway.session_max_seconds,
        )
        app[CLIENT_SECRET_FAILURES] = FailureThrottle(
            engine, limit=gateway.client_secret_failures_per_address, window=SECRET_FAILURE_WINDOW
        )
        app[OWN_TOKEN_VALIDATOR] = TokenValidator(
            [app[EMBEDDED_ISSUER].trusted()], leeway=gateway.token_leeway_seconds
        )
        yield

    return context


def _basic_credentials(request: web.Request) -> tuple[str, str] | None:
    header = request.headers.get("Authorization", "")
    if not header.lower().startswith("basic "):
        return None
    try:
        decoded = b64decode(header[6:], validate=True).decode()
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidClientError("malformed Basic credentials", status_code=401) from exc
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        raise InvalidClientError("malformed Basic credentials", status_code=401)
    return unquote(client_id), unquote(secret)


async def _authenticate_client(
    request: web.Request, form: dict[str, str], *, allow_public: bool
) -> Client:
    """The calling client (RFC 6749 section 2.3): a secret for confidential clients,
    the ``client_id`` alone for public ones (when the grant allows them)."""
    registry = request.app[OAUTH_CLIENTS]
    credentials = _basic_credentials(request)
    if credentials is None and form.get("client_secret"):
        credentials = (form.get("client_id", ""), form["client_secret"])
    if credentials is not None:
        throttle = request.app[CLIENT_SECRET_FAILURES]
        address = request.remote or "unknown"
        if await asyncio.to_thread(throttle.throttled, "client", address):
            await audit(
                request,
                event=EventType.SECURITY_ALERT,
                action=EventAction.EXECUTE,
                outcome=EventOutcome.SERIOUS_FAILURE,
                user=credentials[0][:64] or "unknown",
                detail={"refused": "throttled"},
            )
            raise InvalidClientError("too many failed attempts: try again later", status_code=429)
        client = await asyncio.to_thread(registry.authenticate, *credentials)
        if client is None:
            await asyncio.to_thread(throttle.failed, "client", address)
            await audit(
                request,
                event=EventType.AUTHENTICATION,
                action=EventAction.EXECUTE,
                outcome=EventOutcome.MINOR_FAILURE,
                user=credentials[0][:64] or "unknown",
                detail={"refused": "invalid_client"},
            )
            raise InvalidClientError("unknown client or wrong secret", status_code=401)
        return client
    client_id = form.get("client_id", "")
    if allow_public and client_id:
        found = await asyncio.to_thread(registry.get, client_id)
        if found is not None and found.public:
            return found
    raise InvalidClientError("authenticate with the client id and secret", status_code=401)


async def _form(request: web.Request) -> dict[str, str]:
    if request.query:
        raise InvalidRequestError("send parameters in the POST body, not the URL")
    return {k: str(v) for k, v in (await request.post()).items()}


# -- token endpoint ------------------------------------------------------------------------


async def token(request: web.Request) -> web.Response:
    """Token endpoint (RFC 6749 section 3.2): client_credentials, authorization_code,
    refresh_token."""
    form = await _form(request)
    grant_type = form.get("grant_type")
    if grant_type == "client_credentials":
        return await _client_credentials(request, form)
    if grant_type == "authorization_code":
        return await _authorization_code(request, form)
    if grant_type == "refresh_token":
        return await _refresh_token(request, form)
    raise UnsupportedGrantTypeError(
        "grant_type is client_credentials, authorization_code or refresh_token"
    )


def _token_answer(body: dict[str, Any]) -> web.Response:
    return web.json_response(body, headers=_NO_STORE)


async def _client_credentials(request: web.Request, form: dict[str, str]) -> web.Response:
    client = await _authenticate_client(request, form, allow_public=False)
    requested = frozenset(form.get("scope", "").split()) or client.scopes
    if not requested <= client.scopes:
        extra = " ".join(sorted(requested - client.scopes))
        raise InvalidScopeError(f"this client may not ask for: {extra}")
    await audit(
        request,
        event=EventType.AUTHENTICATION,
        action=EventAction.EXECUTE,
        outcome=EventOutcome.SUCCESS,
        user=client.client_id,
        institution=client.institution,
        detail={"grant": "client_credentials", "scope": " ".join(sorted(requested))},
    )
    access_token = request.app[EMBEDDED_ISSUER].mint(
        subject=client.client_id,
        institution=client.institution,
        scopes=sorted(requested),
        client_id=client.client_id,
    )
    return _token_answer(
        {
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": DEFAULT_LIFETIME,
            "scope": " ".join(sorted(requested)),
        }
    )


async def _refused_grant(
    request: web.Request, client: Client, exc: OAuth2Error, user: str | None = None
) -> None:
    await audit(
        request,
        event=EventType.AUTHENTICATION,
        action=EventAction.EXECUTE,
        outcome=EventOutcome.MINOR_FAILURE,
        user=user or client.client_id,
        detail=_refusal_detail(client, exc),
    )


def _grant_refusal(request: web.Request, client: Client) -> AbstractAsyncContextManager[None]:
    """Record an OAuth error raised in the block as :func:`_refused_grant` does, then let
    it go on to the error middleware."""
    return audit_refusal(
        request,
        refused=OAuth2Error,
        event=EventType.AUTHENTICATION,
        action=EventAction.EXECUTE,
        user=client.client_id,
        detail=lambda exc: _refusal_detail(client, exc),
    )


def _refusal_detail(client: Client, exc: OAuth2Error) -> dict[str, str]:
    return {
        "refused": str(exc.error),
        "reason": str(exc.description or ""),
        "client_id": client.client_id,
    }


async def _authorization_code(request: web.Request, form: dict[str, str]) -> web.Response:
    client = await _authenticate_client(request, form, allow_public=True)
    if not client.redirect_uris:
        raise UnauthorizedClientError("this client is not registered for authorization_code")
    code = form.get("code")
    if not code:
        raise InvalidRequestError("code is required")
    store = request.app[AUTHORIZATION_FLOW]
    async with _grant_refusal(request, client):
        grant = await asyncio.to_thread(
            store.redeem_code,
            code,
            client_id=client.client_id,
            redirect_uri=form.get("redirect_uri"),
            code_verifier=form.get("code_verifier"),
        )
    return await _issue_user_tokens(request, client, grant, grant.scopes, nonce=grant.nonce)


async def _refresh_token(request: web.Request, form: dict[str, str]) -> web.Response:
    client = await _authenticate_client(request, form, allow_public=True)
    presented = form.get("refresh_token")
    if not presented:
        raise InvalidRequestError("refresh_token is required")
    requested = frozenset(form.get("scope", "").split())
    try:
        async with _grant_refusal(request, client):
            grant = await asyncio.to_thread(
                request.app[AUTHORIZATION_FLOW].spend_refresh,
                presented,
                client_id=client.client_id,
                scopes=requested,
            )
    except OAuth2Error as exc:
        # after the refusal's record: a spent refresh token presented again has leaked
        if "already used" in str(exc.description):
            await audit(
                request,
                event=EventType.SECURITY_ALERT,
                action=EventAction.EXECUTE,
                outcome=EventOutcome.SERIOUS_FAILURE,
                user=client.client_id,
                detail={"alert": "refresh token reuse; token family revoked"},
            )
        raise
    return await _issue_user_tokens(request, client, grant, grant.scopes, nonce=None, rotated=True)


async def _issue_user_tokens(
    request: web.Request,
    client: Client,
    grant: Grant,
    scopes: frozenset[str],
    *,
    nonce: str | None,
    rotated: bool = False,
) -> web.Response:
    """Access token, refresh token and (with ``openid``) ID token for a person."""
    store = request.app[AUTHORIZATION_FLOW]
    user = await asyncio.to_thread(request.app[USERS].active, grant.user)
    if user is None:
        await asyncio.to_thread(store.revoke_user, grant.user)
        exc = InvalidGrantError("the user is disabled or gone")
        await _refused_grant(request, client, exc, grant.user)
        raise exc
    # what the user and client may have now (an administrator may have narrowed either)
    scopes = scopes & ((user.scopes & client.scopes) | OIDC_SCOPES)
    grant_now = Grant(
        grant.client_id, user.name, user.institution, scopes, grant.auth_time, None, grant.family
    )
    refresh = await asyncio.to_thread(store.issue_refresh, grant_now)
    issuer = request.app[EMBEDDED_ISSUER]
    archive_scopes = sorted(scopes)
    body: dict[str, Any] = {
        "access_token": issuer.mint(
            subject=user.name,
            institution=user.institution,
            scopes=archive_scopes,
            client_id=client.client_id,
        ),
        "token_type": "Bearer",
        "expires_in": DEFAULT_LIFETIME,
        "scope": " ".join(archive_scopes),
        "refresh_token": refresh,
    }
    if "openid" in scopes:
        body["id_token"] = issuer.mint_id_token(
            subject=user.name,
            client_id=client.client_id,
            auth_time=grant.auth_time,
            nonce=nonce,
            claims={"preferred_username": user.name, "institution": user.institution},
        )
    await audit(
        request,
        event=EventType.AUTHENTICATION,
        action=EventAction.EXECUTE,
        outcome=EventOutcome.SUCCESS,
        user=user.name,
        institution=user.institution,
        detail={
            "grant": "refresh_token" if rotated else "authorization_code",
            "client_id": client.client_id,
            "scope": " ".join(archive_scopes),
        },
    )
    return _token_answer(body)


# -- revocation, userinfo, logout ----------------------------------------------------------


async def revoke(request: web.Request) -> web.Response:
    """Token revocation (RFC 7009) for refresh tokens: the token's whole family goes.

    Access tokens are short-lived, self-contained JWTs that no resource server looks up,
    so they cannot be revoked: asking for that is ``unsupported_token_type``.
    """
    form = await _form(request)
    client = await _authenticate_client(request, form, allow_public=True)
    presented = form.get("token")
    if not presented:
        raise InvalidRequestError("token is required")
    if form.get("token_type_hint") == "access_token" or presented.count(".") == 2:
        raise UnsupportedTokenTypeError("access tokens expire on their own; revoke the refresh")
    revoked = await asyncio.to_thread(
        request.app[AUTHORIZATION_FLOW].revoke_refresh, presented, client_id=client.client_id
    )
    if revoked:
        await audit(
            request,
            event=EventType.AUTHENTICATION,
            action=EventAction.EXECUTE,
            outcome=EventOutcome.SUCCESS,
            user=client.client_id,
            detail={"revoked": "refresh_token family", "client_id": client.client_id},
        )
    # RFC 7009 section 2.2: an unknown or foreign token is answered like a revoked one
    return web.Response(status=200, headers=_NO_STORE)


async def userinfo(request: web.Request) -> web.Response:
    """OpenID Connect UserInfo (Core 1.0 section 5.3) for this issuer's own tokens."""
    principal = await authorize(request, request.app[OWN_TOKEN_VALIDATOR], "openid")
    user = await asyncio.to_thread(request.app[USERS].active, principal.subject)
    if user is None:
        raise InvalidToken("the user is disabled or gone")
    return web.json_response(
        {"sub": user.name, "preferred_username": user.name, "institution": user.institution},
        headers=_NO_STORE,
    )


def _same_origin(uri: str, registered: tuple[str, ...]) -> bool:
    try:
        target = urlsplit(uri)
        return bool(target.scheme in ("http", "https") and target.netloc) and any(
            (target.scheme, target.netloc) == (r.scheme, r.netloc)
            for r in (urlsplit(x) for x in registered)
        )
    except ValueError:
        return False


async def end_session(request: web.Request) -> web.Response:
    """RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0).

    With a valid ``id_token_hint`` the user's refresh tokens for that client are
    revoked. The browser goes back to ``post_logout_redirect_uri`` when it is on the
    origin of one of the client's registered redirect URIs; otherwise a page says the
    user is signed out.
    """
    params = request.query if request.method == "GET" else await request.post()
    issuer = request.app[EMBEDDED_ISSUER]
    hint = str(params.get("id_token_hint", ""))
    claims = issuer.read_id_token(hint) if hint else None
    client_id = str(params.get("client_id", "")) or (
        str(claims["aud"]) if claims and isinstance(claims.get("aud"), str) else ""
    )
    if claims is not None and claims.get("aud") == client_id and isinstance(claims.get("sub"), str):
        count = await asyncio.to_thread(
            request.app[AUTHORIZATION_FLOW].revoke_user, claims["sub"], client_id
        )
        await audit(
            request,
            event=EventType.AUTHENTICATION,
            action=EventAction.EXECUTE,
            outcome=EventOutcome.SUCCESS,
            user=claims["sub"],
            detail={"logout": "rp-initiated", "client_id": client_id, "revoked": str(count)},
        )
    client = (
        await asyncio.to_thread(request.app[OAUTH_CLIENTS].get, client_id) if client_id else None
    )
    target = str(params.get("post_logout_redirect_uri", ""))
    if client is not None and target and _same_origin(target, client.redirect_uris):
        state = params.get("state")
        location = add_params_to_uri(target, [("state", str(state))]) if state else target
        return web.Response(
            status=302, headers={"Location": str(location), "Referrer-Policy": "no-referrer"}
        )
    return web.Response(
        text="<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>Signed out"
        "</title></head><body><h1>Signed out</h1><p>You can close this window.</p></body></html>",
        content_type="text/html",
        headers={
            "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
            "Referrer-Policy": "no-referrer",
            "X-Frame-Options": "DENY",
            "Cache-Control": "no-store",
        },
    )


async def openid_configuration(request: web.Request) -> web.Response:
    """OpenID Provider metadata (OpenID Connect Discovery 1.0, RFC 8414)."""
    issuer = request.app[EMBEDDED_ISSUER].issuer
    return web.json_response(
        {
            "issuer": issuer,
            "jwks_uri": f"{issuer}/.well-known/jwks.json",
            "authorization_endpoint": f"{issuer}/oauth/authorize",
            "token_endpoint": f"{issuer}/oauth/token",
            "revocation_endpoint": f"{issuer}/oauth/revoke",
            "userinfo_endpoint": f"{issuer}/oauth/userinfo",
            "end_session_endpoint": f"{issuer}/oauth/logout",
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": [
                "client_secret_basic",
                "client_secret_post",
                "none",
            ],
            "revocation_endpoint_auth_methods_supported": [
                "client_secret_basic",
                "client_secret_post",
                "none",
            ],
            "scopes_supported": sorted(SCOPES | OIDC_SCOPES),
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
            "claims_supported": [
                "sub",
                "iss",
                "aud",
                "exp",
                "iat",
                "auth_time",
                "nonce",
                "preferred_username",
                "institution",
            ],
            "prompt_values_supported": ["none", "login"],
            "authorization_response_iss_parameter_supported": True,
        }
    )
