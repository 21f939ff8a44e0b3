"""Driving Debian's Chromium through Playwright: where it is, signing in, screenshots."""

from __future__ import annotations

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
