"""What the viewer's browser tests share: the skip rule, Debian's headless Chromium, and
reading OHIF's study list and canvas. (A gateway of their own and the readiness wait are
:mod:`tests.integration.harness`'s ``gateway_process`` and ``wait_until``.)

Import this module only from a test module that has applied :func:`skip_without_browser`
first (it imports playwright).
"""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.integration.harness import ROOT, wait_until
from viewer.api import default_bundle_dir

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "var" / "test-artifacts"

# the pixels of the viewport's canvas only (overlays such as dialogs are not in them)
CANVAS_PNG = "() => document.querySelector('canvas.cornerstone-canvas').toDataURL('image/png')"


def missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if not (default_bundle_dir() / "index.html").is_file():
        return "the OHIF bundle is not installed (make install / python -m viewer.fetch)"
    if not Path(CHROMIUM).is_file():
        return f"{CHROMIUM} is missing (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is missing (pip install -e '.[test]')"
    return None


def skip_without_browser() -> str | None:
    """Skip the calling module when something is missing, unless ``CI`` is set (then the
    module's fixtures must fail on the returned reason instead)."""
    reason = missing()
    if reason and not os.environ.get("CI"):
        pytest.skip(reason, allow_module_level=True)
    return reason


@contextmanager
def chromium() -> Iterator[Browser]:
    """Debian's chromium, never a downloaded one; software WebGL for cornerstone."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        launched = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--no-sandbox"],
        )
        try:
            yield launched
        finally:
            launched.close()


def listed(page: Page) -> list[str]:
    """Patient names in the study list's rows (OHIF shows ``Family, Given``)."""
    rows = page.locator("tbody tr[aria-selected]")
    return [rows.nth(i).locator("td").first.inner_text().strip() for i in range(rows.count())]


def shown(name: dict[str, Any]) -> str:
    """A DICOM JSON PatientName as OHIF's study list shows it."""
    family, _, given = str(name["Value"][0]["Alphabetic"]).partition("^")
    return f"{family}, {given}" if given else family


def variance(png: bytes) -> float:
    from PIL import Image, ImageStat

    image = Image.open(io.BytesIO(png)).convert("L")
    return float(ImageStat.Stat(image).var[0])


def wait_for_image(page: Page, screenshot: str) -> float:
    """Wait until the viewport's canvas holds an image (grey-level variance over 50) and
    keep a screenshot of the page in ``var/test-artifacts``; returns the last variance.

    Headless Chromium has no GPU: with SwiftShader the WebGL path fills the canvas but
    the page screenshot stays black, so the tests ask OHIF for its CPU renderer (same
    loaders, codecs and workers) to keep a screenshot a person can look at.
    """
    seen: list[float] = [0.0]

    def rendered() -> bool:
        data_url = page.evaluate(CANVAS_PNG)
        seen.append(variance(base64.b64decode(data_url.split(",", 1)[1])))
        return seen[-1] > 50.0

    try:
        canvas = page.locator("canvas.cornerstone-canvas").first
        canvas.wait_for(state="visible", timeout=90_000)
        wait_until(rendered, "the image in the viewport", deadline=90)
    finally:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / screenshot))
    return seen[-1]
