"""The authorization endpoint: the login page of the embedded issuer (people, not systems).

``GET /oauth/authorize`` validates an authorization request (RFC 6749 section 4.1.1,
PKCE S256 per RFC 7636, OpenID Connect ``nonce``) and shows a small HTML form;
``POST /oauth/authorize`` checks the user's password and sends the browser back to the
client's registered redirect URI with a one-time code (RFC 6749 section 4.1.2, with the
RFC 9207 ``iss`` parameter).

Until the redirect URI is known to be registered for the client (exact string match),
errors are shown as a page (the error middleware renders them with this module's page),
never redirected: an unchecked redirect would be an open redirector. After that, errors
go back to the client as RFC 6749 error parameters.

The form page: no external assets, a strict Content-Security-Policy, no framing, no
Referer. CSRF: the form carries a random token whose hash keys the stored request, and
the browser that got the form holds a random cookie (``SameSite=Strict``, ``HttpOnly``)
whose hash is bound to it; a post needs both. Every login success and failure is an
audit record (110114 User Authentication) naming the user, never the password.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import html
import re
import secrets
import time
from urllib.parse import urlsplit

from aiohttp import web
from authlib.common.urls import add_params_to_uri

from dicomweb.appkeys import AUTHORIZATION_FLOW, EMBEDDED_ISSUER, OAUTH_CLIENTS, USERS
from dicomweb.http.middleware import ERROR_RENDERER, ErrorAnswer
from dicomweb.operations.audit_records import EventAction, EventOutcome, EventType, audit
from dicomweb.signin.oauth import OIDC_SCOPES
from security.api import Forbidden, InvalidInput
from security.identity import SCOPES, AuthorizationRequest, Client, valid_code_challenge

__all__ = ["LOGIN_COOKIE", "authorize_form", "authorize_login", "granted_scopes"]

LOGIN_COOKIE = "vna_login"
_COOKIE_VALUE = re.compile(r"^[A-Za-z0-9_-]{43}$")
_MAX_PARAM = 2048

_STYLE = (
    "body{font-family:sans-serif;max-width:22rem;margin:4rem auto;padding:0 1rem}"
    "label{display:block;margin:.8rem 0 .2rem}input{width:100%;padding:.4rem;box-sizing:border-box}"
    "button{margin-top:1.2rem;padding:.5rem 1.2rem}.error{color:#a00}"
)
_STYLE_HASH = base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()


def _security_headers(form_target: str | None = None) -> dict[str, str]:
    # form-action also governs the redirect that follows the post (CSP 3): allow the
    # registered redirect URI's origin, and nothing else
    form_action = "'self'" + (f" {form_target}" if form_target else "")
    return {
        "Content-Security-Policy": (
            f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; form-action {form_action}; "
            "frame-ancestors 'none'; base-uri 'none'"
        ),
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "no-store",
        "Pragma": "no-cache",
    }


def _origin(uri: str) -> str:
    parts = urlsplit(uri)
    return f"{parts.scheme}://{parts.netloc}"


def _page(title: str, body: str, status: int = 200, form_target: str | None = None) -> web.Response:
    document = (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )
    return web.Response(
        text=document,
        status=status,
        content_type="text/html",
        charset="utf-8",
        headers=_security_headers(form_target),
    )


def _problem(_request: web.Request, answer: ErrorAnswer) -> web.Response:
    """An error that cannot be sent back to the client: the middleware shows it on a page."""
    body = f"<p class='error'>{html.escape(answer.message)}</p>"
    return _page("Cannot sign in", body, answer.status)


def _login_form(client: Client, csrf: str, redirect_uri: str, error: str | None = None) -> str:
    notice = f"<p class='error' role='alert'>{html.escape(error)}</p>" if error else ""
    return (
        f"<p>Sign in to continue to <b>{html.escape(client.name)}</b>.</p>{notice}"
        "<form method='post' action='authorize'>"
        f"<input type='hidden' name='csrf_token' value='{html.escape(csrf)}'>"
        "<label for='username'>User name</label>"
        "<input id='username' name='username' autocomplete='username' required autofocus>"
        "<label for='password'>Password</label>"
        "<input id='password' name='password' type='password' "
        "autocomplete='current-password' required>"
        "<button type='submit'>Sign in</button></form>"
    )


def _redirect(uri: str, params: list[tuple[str, str]]) -> web.Response:
    location = str(add_params_to_uri(uri, params))
    headers = {"Location": location, "Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
    return web.Response(status=303, headers=headers)


def _error_redirect(
    request: web.Request, uri: str, state: str | None, error: str, description: str
) -> web.Response:
    params = [("error", error), ("error_description", description)]
    if state is not None:
        params.append(("state", state))
    params.append(("iss", request.app[EMBEDDED_ISSUER].issuer))
    return _redirect(uri, params)


def granted_scopes(requested: str, client: Client, user_scopes: frozenset[str]) -> frozenset[str]:
    """The scopes a login grants: requested archive scopes the client and user both have
    (all of those when none is named: RFC 6749 section 3.3's default), plus the OpenID
    scopes asked for."""
    asked = frozenset(requested.split())
    allowed = client.scopes & user_scopes
    archive = (asked & SCOPES) or allowed
    return (archive & allowed) | (asked & OIDC_SCOPES)


async def authorize_form(request: web.Request) -> web.StreamResponse:
    """``GET /oauth/authorize``: validate the request and show the login form."""
    request[ERROR_RENDERER] = _problem
    params = request.query
    if any(len(v) > _MAX_PARAM for v in params.values()):
        raise InvalidInput("The sign-in request is too long.")
    client_id = params.get("client_id", "")
    client = (
        await asyncio.to_thread(request.app[OAUTH_CLIENTS].get, client_id) if client_id else None
    )
    if client is None or not client.redirect_uris:
        raise InvalidInput("Unknown application (client_id): ask the administrator to register it.")
    redirect_uri = params.get("redirect_uri", "")
    if redirect_uri not in client.redirect_uris:
        raise InvalidInput("This application's redirect_uri is not registered; sign-in refused.")
    state = params.get("state")
    if params.get("response_type") != "code":
        return _error_redirect(
            request, redirect_uri, state, "unsupported_response_type", "only response_type=code"
        )
    if "request" in params or "request_uri" in params:
        return _error_redirect(
            request, redirect_uri, state, "request_not_supported", "pass parameters directly"
        )
    challenge = params.get("code_challenge", "")
    if not challenge:
        return _error_redirect(
            request, redirect_uri, state, "invalid_request", "PKCE code_challenge is required"
        )
    if params.get("code_challenge_method") != "S256" or not valid_code_challenge(challenge):
        return _error_redirect(
            request, redirect_uri, state, "invalid_request", "PKCE: only S256 code_challenge"
        )
    if "none" in params.get("prompt", "").split():
        # no single sign-on session is kept: a silent request always needs a login
        return _error_redirect(
            request, redirect_uri, state, "login_required", "interactive sign-in needed"
        )
    authz = AuthorizationRequest(
        client_id=client.client_id,
        redirect_uri=redirect_uri,
        scope=params.get("scope", ""),
        state=state,
        nonce=params.get("nonce"),
        code_challenge=challenge,
    )
    binding = request.cookies.get(LOGIN_COOKIE, "")
    if not _COOKIE_VALUE.match(binding):
        binding = secrets.token_urlsafe(32)
    store = request.app[AUTHORIZATION_FLOW]
    csrf = await asyncio.to_thread(store.begin_login, authz, binding)
    response = _page(
        "Sign in", _login_form(client, csrf, redirect_uri), form_target=_origin(redirect_uri)
    )
    response.set_cookie(
        LOGIN_COOKIE,
        binding,
        max_age=int(store.login_lifetime),
        path="/oauth",
        secure=request.app[EMBEDDED_ISSUER].issuer.startswith("https://"),
        httponly=True,
        samesite="Strict",
    )
    return response


async def authorize_login(request: web.Request) -> web.StreamResponse:
    """``POST /oauth/authorize``: check the credentials and redirect with a one-time code."""
    request[ERROR_RENDERER] = _problem
    form = await request.post()
    csrf = str(form.get("csrf_token", ""))[:_MAX_PARAM]
    username = str(form.get("username", "")).strip()[:128]
    password = str(form.get("password", ""))[:1024]
    binding = request.cookies.get(LOGIN_COOKIE, "")
    store = request.app[AUTHORIZATION_FLOW]
    pending = await asyncio.to_thread(store.pending_login, csrf, binding) if csrf else None
    if pending is None:
        await audit(
            request,
            event=EventType.AUTHENTICATION,
            action=EventAction.EXECUTE,
            outcome=EventOutcome.MINOR_FAILURE,
            user=username or "unknown",
            detail={"refused": "login form expired, reused or not from this browser"},
        )
        raise Forbidden(
            "This sign-in form has expired or was not opened in this browser. "
            "Go back to the application and sign in again."
        )
    client = await asyncio.to_thread(request.app[OAUTH_CLIENTS].get, pending.client_id)
    if client is None:
        raise InvalidInput("The application was removed meanwhile.")
    result = await asyncio.to_thread(request.app[USERS].authenticate, username, password)
    if not result.ok or result.user is None:
        institution = result.user.institution if result.user is not None else None
        await audit(
            request,
            event=EventType.AUTHENTICATION,
            action=EventAction.EXECUTE,
            outcome=EventOutcome.MINOR_FAILURE,
            user=username or "unknown",
            institution=institution,
            detail={"refused": result.outcome.value, "client_id": client.client_id},
        )
        # one message for every failure: the page must not tell which names exist
        message = (
            "Wrong user name or password. After repeated failures an account is locked for a while."
        )
        body = _login_form(client, csrf, pending.redirect_uri, message)
        return _page("Sign in", body, form_target=_origin(pending.redirect_uri))
    if not await asyncio.to_thread(store.finish_login, csrf):
        raise Forbidden("This sign-in form was used already.")
    user = result.user
    scopes = granted_scopes(pending.scope, client, user.scopes)
    code = await asyncio.to_thread(
        store.issue_code,
        pending,
        user=user.name,
        institution=user.institution,
        scopes=scopes,
        auth_time=int(time.time()),
    )
    await audit(
        request,
        event=EventType.AUTHENTICATION,
        action=EventAction.EXECUTE,
        outcome=EventOutcome.SUCCESS,
        user=user.name,
        institution=user.institution,
        detail={"login": "password", "client_id": client.client_id},
    )
    params = [("code", code)]
    if pending.state is not None:
        params.append(("state", pending.state))
    params.append(("iss", request.app[EMBEDDED_ISSUER].issuer))
    return _redirect(pending.redirect_uri, params)
