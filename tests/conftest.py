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

from .support import BACKEND, SmtpServer, counter, create_issue, csrf_from
from .support.browser import chromium
from .support.clients import ApiClient, PageClient
from .support.servers import RedisServer, SchemaTemplate, WebServer, Workers, environment

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
    values = environment(database_url, redis_url, smtp.url, tmp_path)
    for k, v in values.items():
        monkeypatch.setenv(k, v)
    redis.Redis.from_url(values["REDIS_URL"]).flushdb()
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
    with chromium() as b:
        yield b


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
