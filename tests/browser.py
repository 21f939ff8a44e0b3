"""Playwright on Debian's Chromium, and the real web server (gunicorn, as `make run` starts it) for it to drive."""

from __future__ import annotations

import os
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest

from mailing.launcher import web_command

from .conftest import ROOT, free_port, wait_for

ARTIFACTS = ROOT / "tests" / "artifacts"


def chromium_path() -> str | None:
    path = os.environ.get("CHROMIUM_PATH") or "/usr/bin/chromium"
    return path if Path(path).exists() else shutil.which("chromium")


@pytest.fixture
def browser():
    path = chromium_path()
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("Chromium is missing: under CI a browser test never skips")
        pytest.skip("Chromium is not installed (make install installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        yield b
        b.close()


@pytest.fixture
def web(env):
    """The app served by gunicorn on a free port, sharing the test's database and Redis."""
    port = free_port()
    proc = subprocess.Popen(web_command(port, processes=2), cwd=ROOT,
                            env={**os.environ, **env, "BASE_URL": f"http://127.0.0.1:{port}"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return urllib.request.urlopen(url + "/login", timeout=1).status == 200
        except OSError:
            return False

    wait_for(up, 20, 0.1, "web server")
    yield url
    proc.terminate()
    proc.wait(10)


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
