"""Fixtures: a real Redis, a real SMTP server (aiosmtpd in-process), real RQ workers
(`flask worker` subprocesses), and a fresh database per test on SQLite or, with
OUTBOX_TEST_BACKEND=postgresql, on a throw-away PostgreSQL cluster. The helpers they are
built from are in tests/support/."""

from __future__ import annotations

import os

import pytest
import redis

from mailing import create_app, settings
from mailing.cli import create_user
from mailing.devtools.pgcluster import Cluster
from mailing.extensions import db
from mailing.models import ApiToken
from mailing.stoplists import ensure_system_lists
from mailing.views.api import token_hash

from .support import BACKEND, SECRET, SmtpServer, counter, create_issue, csrf_from
from .support.browser import CHROMIUM_ARGS, chromium_path
from .support.clients import ApiClient, PageClient
from .support.servers import RedisServer, SchemaTemplate, WebServer, Workers

# --- Redis --------------------------------------------------------------------

@pytest.fixture(scope="session")
def redis_url():
    server = RedisServer()
    yield server.url
    server.stop()


# --- databases ----------------------------------------------------------------

@pytest.fixture(scope="session")
def pg_server():
    """A throw-away cluster in its own temp directory, or TEST_DATABASE_URL's server."""
    if os.environ.get("TEST_DATABASE_URL"):
        yield os.environ["TEST_DATABASE_URL"].rsplit("/", 1)[0]
        return
    cluster = Cluster()
    try:
        yield cluster.base
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def db_template(tmp_path_factory, request):
    """The migrated schema, made once: a SQLite file to copy, or a PostgreSQL template."""
    pg_base = request.getfixturevalue("pg_server") if BACKEND == "postgresql" else None
    return SchemaTemplate(tmp_path_factory.mktemp("template"), pg_base)


@pytest.fixture
def database_url(db_template, tmp_path):
    url = db_template.fresh(tmp_path)
    yield url
    db_template.drop(url)


# --- SMTP ---------------------------------------------------------------------

@pytest.fixture
def smtp():
    server = SmtpServer()
    server.start()
    yield server
    server.stop()


# --- the app ------------------------------------------------------------------

@pytest.fixture
def env(database_url, redis_url, smtp, tmp_path, monkeypatch):
    """The environment shared by the test's app, its workers and its web server. Each test
    has its own Redis database and queue, so nothing a finished test left running can
    take this test's jobs or its maintenance lock."""
    n = next(counter) % 4095 + 1
    redis_url = f"{redis_url}?db={n}"
    values = {
        "DATABASE_URL": database_url, "REDIS_URL": redis_url, "SMTP_URL": smtp.url,
        "SECRET_KEY": SECRET, "OUTBOX_INSTANCE": str(tmp_path / "instance"),
        "MAILDIR": str(tmp_path / "maildir"), "BASE_URL": "http://127.0.0.1:5999",
        "RQ_QUEUE": f"outbox-test-{os.getpid()}-{n}", "SEND_CONCURRENCY": "4", "SEND_CHUNK": "50",
        "LEASE_SECONDS": "5", "RETRY_BASE_SECONDS": "0.5", "SMTP_TIMEOUT": "5",
        # Tests that take the relay down want the interrupt promptly (the default waits 2 min).
        "RELAY_RETRY_WINDOW": "1",
    }
    for k, v in values.items():
        monkeypatch.setenv(k, v)
    redis.Redis.from_url(redis_url).flushdb()
    return values


@pytest.fixture
def app(env):
    app = create_app({"TESTING": True})
    with app.app_context():
        ensure_system_lists()
        settings.put("launch_delay_seconds", 0)
        db.session.commit()
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def ctx(app):
    with app.app_context():
        yield app


@pytest.fixture
def client(app):
    app.test_client_class = PageClient
    return app.test_client()


@pytest.fixture
def workers(env):
    w = Workers(env)
    yield w
    w.stop_all()


@pytest.fixture
def web(env):
    """The app served by gunicorn (as `make run` starts it) on a free port; its URL."""
    server = WebServer(env)
    yield server.url
    server.stop()


@pytest.fixture
def browser():
    """Debian's Chromium through Playwright, headless."""
    path = chromium_path()
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("Chromium is missing: under CI a browser test never skips")
        pytest.skip("Chromium is not installed (make install installs it)")
    from playwright.sync_api import sync_playwright  # only browser tests pay for loading it

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


# --- data and login helpers ---------------------------------------------------

@pytest.fixture
def make_user(ctx):
    def make(role: str = "editor", email: str | None = None):
        user, pw = create_user(email or f"{role}-{next(counter)}@test.local", role, "pw-" + role)
        return user, pw

    return make


@pytest.fixture
def login(client, make_user):
    def do(role: str = "editor"):
        user, pw = make_user(role)
        page = client.get("/login")
        r = client.post("/login", data={"email": user.email, "password": pw, "csrf_token": csrf_from(page.data)})
        assert r.status_code == 302, r.data
        return user

    return do


@pytest.fixture
def make_issue(ctx):
    """An issue to `n` contacts with the given names (default: ascii and non-ascii)."""
    return create_issue


@pytest.fixture
def api_client(client, make_user):
    """A test client that speaks to /api/v1/ with a fresh token of the given role."""
    def make(role: str = "editor"):
        user, _pw = make_user(role)
        token = f"obx_test_{role}_{next(counter)}"
        db.session.add(ApiToken(user_id=user.id, name="test", token_hash=token_hash(token)))
        db.session.commit()
        return ApiClient(client, token)

    return make
