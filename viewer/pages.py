"""Small static pages the gateway serves beside OHIF: after a staff sign-out.

Plain HTML with no script and no style, under a CSP that allows nothing to load; the only
thing on it is a link back to the viewer (which asks for a sign-in again).
"""

from __future__ import annotations

import html

from viewer.config import ViewerUrls

__all__ = ["SIGNED_OUT_CSP", "signed_out_page"]

SIGNED_OUT_CSP = "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
"""The signed-out page loads nothing and cannot be framed."""


def signed_out_page(urls: ViewerUrls) -> bytes:
    """The page the issuer's logout sends the browser back to (``urls.signed_out_url``)."""
    again = html.escape(urls.public_path, quote=True)
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        "<title>Signed out</title></head><body><h1>Signed out</h1>"
        "<p>You have signed out of the viewer.</p>"
        f"<p><a id='sign-in-again' href='{again}'>Sign in again</a></p></body></html>"
    ).encode()
