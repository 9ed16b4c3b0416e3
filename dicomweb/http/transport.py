"""How clients reach the gateway: its TLS files, and the client behind a reverse proxy.

:func:`tls_files` resolves ``gateway.tls*`` to a certificate and key (the operator's, or
the home's self-signed pair, ``security/tls.py``). :func:`forwarded_middleware` believes
``Forwarded`` (RFC 7239) or ``X-Forwarded-For``/``-Proto``/``-Host`` only from a peer in
``gateway.trusted_proxies``: the request then carries the client's address (audit records,
the share-link throttle), scheme and host. From any other peer the headers are ignored,
so a client cannot choose the address it is audited and throttled under.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from archive.api import ArchiveSettings
from dicomweb.settings import GatewaySettings
from security.api import ensure_self_signed

__all__ = ["Network", "client_behind", "forwarded_middleware", "tls_files"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def tls_files(
    settings: ArchiveSettings, gateway: GatewaySettings, host: str
) -> tuple[Path, Path] | None:
    """(certificate, key) the gateway serves with, or None for plain HTTP; makes the
    self-signed pair when no files are configured (for ``host`` and the public host)."""
    if not gateway.tls:
        return None
    if gateway.tls_cert_file is not None and gateway.tls_key_file is not None:
        return gateway.tls_cert_file, gateway.tls_key_file
    public_host = urlsplit(gateway.resolved_public_url(settings)).hostname or ""
    return ensure_self_signed(settings.keys_dir, [host, public_host])


def _address(token: str | None) -> str | None:
    """The IP address in a ``for=`` value or an X-Forwarded-For item (``[v6]:port``,
    ``v4:port``, bare), or None (``unknown``, an obfuscated name, garbage)."""
    if not token:
        return None
    token = token.strip().strip('"')
    if token.startswith("["):
        token = token[1:].split("]", 1)[0]
    elif token.count(":") == 1:
        token = token.split(":", 1)[0]
    try:
        return str(ipaddress.ip_address(token))
    except ValueError:
        return None


def _trusted(address: str | None, proxies: Sequence[Network]) -> bool:
    if address is None:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in proxies)


def client_behind(hops: Sequence[str | None], proxies: Sequence[Network]) -> str:
    """The client of a chain of forwarded addresses (leftmost the client as the first
    proxy saw it, rightmost the one our peer saw): walk from the right past trusted
    proxies; the first other hop is the client (what lies left of it anyone could have
    written). A hop that is no address makes the client ``unknown``."""
    client = "unknown"
    for hop in reversed(hops):
        if hop is None:
            return "unknown"
        client = hop
        if not _trusted(hop, proxies):
            break
    return client


@web.middleware
async def _passthrough(request: web.Request, handler: Handler) -> web.StreamResponse:
    return await handler(request)


def forwarded_middleware(proxies: Sequence[Network]) -> Middleware:
    """A middleware that believes forwarding headers from ``proxies`` only."""
    if not proxies:
        return _passthrough

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not _trusted(request.remote, proxies):
            return await handler(request)
        changes: dict[str, Any] = {}
        if request.forwarded:  # RFC 7239, parsed by aiohttp, one mapping per hop
            hops = [_address(element.get("for")) for element in request.forwarded]
            nearest = request.forwarded[-1]
            proto, host = nearest.get("proto"), nearest.get("host")
        else:
            items = ",".join(request.headers.getall("X-Forwarded-For", ()))
            hops = [_address(item) for item in items.split(",")] if items else []
            proto = _last(request.headers.getall("X-Forwarded-Proto", ()))
            host = _last(request.headers.getall("X-Forwarded-Host", ()))
        if hops:
            changes["remote"] = client_behind(hops, proxies)
        if proto in ("http", "https"):
            changes["scheme"] = proto
        if host:
            changes["host"] = host
        return await handler(request.clone(**changes) if changes else request)

    return middleware


def _last(values: Sequence[str]) -> str | None:
    """The value the nearest proxy added (the last of a comma-separated list)."""
    joined = ",".join(values)
    return joined.rsplit(",", 1)[-1].strip() or None if joined else None
