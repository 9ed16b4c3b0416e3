"""The share page and the per-address throttle of failed link openings."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine

from dicomweb.api import GatewaySettings
from dicomweb.exchange.share import FAILURE_WINDOW, ShareService
from security.throttle import FailureThrottle
from tests.catalogdb import migrated
from viewer.api import SHARE_SCRIPT, share_headers, share_page


def test_the_page_has_no_inline_script_and_escapes_its_urls() -> None:
    page = share_page('https://vna.example/viewer/share/viewer?"x', "/share/share.js")
    assert '<script src="/share/share.js"></script>' in page
    assert page.count("<script") == 1  # the CSP allows no inline script
    assert '"x' not in page and "&quot;x" in page
    headers = share_headers()
    assert headers["Referrer-Policy"] == "no-referrer"
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert headers["Cache-Control"] == "no-store"


def test_the_script_drops_the_secret_from_the_address_bar_and_posts_it() -> None:
    assert "history.replaceState" in SHARE_SCRIPT
    assert '"/open"' in SHARE_SCRIPT and 'method: "POST"' in SHARE_SCRIPT
    assert "sessionStorage.setItem" in SHARE_SCRIPT
    assert "localStorage" not in SHARE_SCRIPT  # this tab only


def test_failed_openings_are_throttled_per_address_within_the_window(tmp_path: Path) -> None:
    engine = create_engine(migrated(f"sqlite:///{tmp_path / 'throttle.db'}"))
    clock = [1000.0]
    throttle = FailureThrottle(engine, limit=3, window=FAILURE_WINDOW, clock=lambda: clock[0])
    service = ShareService(None, GatewaySettings(), throttle)  # type: ignore[arg-type]
    for _ in range(3):
        assert not service.throttled("10.0.0.1")
        service.failed("10.0.0.1")
    clock[0] = 1001.0
    assert service.throttled("10.0.0.1")
    assert not service.throttled("10.0.0.2")  # another address is not
    # a second service (another gateway worker) on the same catalog sees the same count
    other = ShareService(None, GatewaySettings(), throttle)  # type: ignore[arg-type]
    assert other.throttled("10.0.0.1")
    clock[0] = 1000.0 + FAILURE_WINDOW + 1
    assert not service.throttled("10.0.0.1")  # the window passed
