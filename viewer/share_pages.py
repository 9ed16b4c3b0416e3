"""The page a share link opens: it trades the link for a study-narrowed token.

A link is ``/share/<id>#<secret>``. The fragment never reaches a server, a log or a
Referer; the page's script reads it, removes it from the address bar and history, and
POSTs it (with the PIN when the link has one) to ``/share/<id>/open``. The answer's token
goes to ``sessionStorage`` (this tab only), where the share variant of the viewer reads it;
the viewer URL carries the study UID, never the link or the token.

The page is the same for every id, so it tells nothing about which links exist; what the
visitor is told (PIN needed, wrong PIN, locked, expired, revoked, not found) comes from
the POST answer. No inline script: the CSP allows only this origin's ``share.js``.
"""

from __future__ import annotations

import html

from viewer.config import SHARE_TOKEN_KEY

__all__ = ["SHARE_CSP", "SHARE_SCRIPT", "share_headers", "share_page"]

SHARE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "connect-src 'self'; img-src 'self' data:; form-action 'self'; base-uri 'none'; "
    "frame-ancestors 'none'"
)


def share_headers() -> dict[str, str]:
    """Headers of the share page and its script: no caching, no Referer, no framing."""
    return {
        "Content-Security-Policy": SHARE_CSP,
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Cache-Control": "no-store",
    }


def share_page(viewer_url: str, script_url: str) -> str:
    """The HTML of ``/share/<id>`` (the same for every id)."""
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>Shared study</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 32rem; margin: 4rem auto;
       padding: 0 1rem; color: #1b1f24; }}
h1 {{ font-size: 1.4rem; }}
.message {{ padding: .8rem 1rem; border-radius: .4rem; background: #f1f3f5; }}
.refused {{ background: #fdecea; color: #8a1c12; }}
button, input {{ font-size: 1rem; padding: .5rem .8rem; margin-top: .6rem; }}
[hidden] {{ display: none; }}
</style>
</head>
<body data-viewer="{html.escape(viewer_url)}" data-token-key="{html.escape(SHARE_TOKEN_KEY)}">
<h1>Shared study</h1>
<p id="status" class="message" role="status">Opening the shared study&hellip;</p>
<form id="pin-form" hidden>
  <label for="pin">This link is protected by a PIN. Enter it to continue:</label><br>
  <input id="pin" name="pin" type="password" inputmode="numeric" autocomplete="off" required>
  <button type="submit">Open</button>
</form>
<p id="actions" hidden>
  <button id="view" type="button">View the images</button>
  <button id="download" type="button" hidden>Download (ZIP with DICOMDIR)</button>
</p>
<script src="{html.escape(script_url)}"></script>
</body>
</html>
"""


SHARE_SCRIPT = r"""
"use strict";
(function () {
  const body = document.body;
  const status = document.getElementById("status");
  const pinForm = document.getElementById("pin-form");
  const actions = document.getElementById("actions");
  const downloadButton = document.getElementById("download");
  const secret = window.location.hash.slice(1);
  // the secret leaves the address bar and the history at once
  history.replaceState(null, "", window.location.pathname + window.location.search);
  let opened = null;

  function say(text, refused) {
    status.textContent = text;
    status.className = refused ? "message refused" : "message";
    status.hidden = false;
  }

  async function open(pin) {
    let answer;
    try {
      answer = await fetch(window.location.pathname + "/open", {
        method: "POST",
        headers: {"Content-Type": "application/json"},
        body: JSON.stringify({secret: secret, pin: pin || null}),
        credentials: "omit",
        referrerPolicy: "no-referrer",
      });
    } catch (err) {
      say("The archive cannot be reached. Please try again later.", true);
      return;
    }
    let body = {};
    try { body = await answer.json(); } catch (err) { /* not JSON */ }
    if (answer.ok) {
      opened = body;
      sessionStorage.setItem(document.body.dataset.tokenKey, body.access_token);
      pinForm.hidden = true;
      say("The study is ready.", false);
      actions.hidden = false;
      downloadButton.hidden = !(body.actions || []).includes("download");
      if (!downloadButton.hidden) return;  // let the visitor choose
      showViewer();
      return;
    }
    if (body.error === "pin_required" || body.error === "wrong_pin") {
      pinForm.hidden = false;
      say(body.message || "Enter the PIN.", body.error === "wrong_pin");
      document.getElementById("pin").focus();
      return;
    }
    pinForm.hidden = true;
    say(body.message || "This link cannot be opened.", true);
  }

  function showViewer() {
    // the page's own query (viewer options such as viewportRendering) goes along
    const extra = window.location.search ? "&" + window.location.search.slice(1) : "";
    const url = body.dataset.viewer + "?StudyInstanceUIDs=" +
      encodeURIComponent(opened.study_uid) + extra;
    window.location.assign(url);
  }

  async function download() {
    say("Preparing the download\u2026", false);
    const answer = await fetch(opened.download_url, {
      headers: {"Authorization": "Bearer " + opened.access_token},
      credentials: "omit",
      referrerPolicy: "no-referrer",
    });
    if (!answer.ok) {
      say("The download failed (" + answer.status + "). Open the link again to retry.", true);
      return;
    }
    const blob = await answer.blob();
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = "study-" + opened.study_uid + ".zip";
    document.body.appendChild(link);
    link.click();
    link.remove();
    say("Downloaded.", false);
  }

  pinForm.addEventListener("submit", function (event) {
    event.preventDefault();
    open(document.getElementById("pin").value);
  });
  document.getElementById("view").addEventListener("click", showViewer);
  downloadButton.addEventListener("click", download);

  if (!secret) {
    say("This link is incomplete. Open the whole link you received again.", true);
  } else {
    open(null);
  }
})();
"""
