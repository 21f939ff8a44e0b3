"""Driving Debian's Chromium through Playwright: where it is, signing in, screenshots."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from .base import ROOT

ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium_path() -> str | None:
    path = os.environ.get("CHROMIUM_PATH") or "/usr/bin/chromium"
    return path if Path(path).exists() else shutil.which("chromium")


@contextlib.contextmanager
def chromium():
    """Debian's Chromium through Playwright, headless; skipped where it is missing, failed
    under CI."""
    import pytest

    path = chromium_path()
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("Chromium is missing: under CI a browser test never skips")
        pytest.skip("Chromium is not installed (make install installs it)")
    from playwright.sync_api import sync_playwright  # only browser tests pay for loading it

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def log_in(page, url: str, email: str, password: str) -> None:
    page.goto(url + "/login")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(url + "/")


def screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
