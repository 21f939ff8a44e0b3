"""Fixtures: a real Redis, a real SMTP server (aiosmtpd in-process), real RQ workers
(`flask worker` subprocesses), and a fresh database per test on SQLite or, with
OUTBOX_TEST_BACKEND=postgresql, on a throw-away PostgreSQL cluster."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa
from aiosmtpd.controller import Controller

ROOT = Path(__file__).resolve().parent.parent
BACKEND = os.environ.get("OUTBOX_TEST_BACKEND", "sqlite")
SECRET = "test-secret-key-not-for-production"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.05, what: str = "condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


# --- Redis --------------------------------------------------------------------

@pytest.fixture(scope="session")
def redis_url():
    binary = shutil.which("redis-server")
    assert binary, "redis-server is required (make install installs it)"
    d = Path(tempfile.mkdtemp(prefix="outbox-redis-"))
    sock = d / "redis.sock"
    proc = subprocess.Popen([binary, "--port", "0", "--unixsocket", str(sock), "--save", "", "--databases", "4096",
                             "--appendonly", "no", "--dir", str(d), "--loglevel", "warning"],
                            stdout=subprocess.DEVNULL)
    url = f"unix://{sock}"
    wait_for(lambda: sock.exists(), 10, what="redis socket")
    wait_for(lambda: _ping(url), 10, what="redis ping")
    yield url
    proc.terminate()
    proc.wait(10)
    shutil.rmtree(d, ignore_errors=True)


def _ping(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url).ping())
    except redis.RedisError:
        return False


# --- databases ----------------------------------------------------------------

@pytest.fixture(scope="session")
def pg_server():
    """A throw-away cluster in its own temp directory, or TEST_DATABASE_URL's server."""
    if os.environ.get("TEST_DATABASE_URL"):
        yield os.environ["TEST_DATABASE_URL"].rsplit("/", 1)[0]
        return
    from mailing.devtools.pgcluster import Cluster

    cluster = Cluster()
    try:
        yield cluster.base
    finally:
        cluster.stop()


def _migrate(url: str, instance: Path) -> None:
    env = dict(os.environ, DATABASE_URL=url, OUTBOX_INSTANCE=str(instance), SECRET_KEY=SECRET,
               REDIS_URL="redis://127.0.0.1:1", FLASK_APP="app.py")
    subprocess.run([sys.executable, "-m", "flask", "db", "upgrade"], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.fixture(scope="session")
def db_template(tmp_path_factory, request):
    """The migrated schema, made once: a SQLite file to copy, or a PostgreSQL template."""
    inst = tmp_path_factory.mktemp("template")
    if BACKEND == "postgresql":
        base = request.getfixturevalue("pg_server")
        admin = sa.create_engine(f"{base}/postgres", isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.execute(sa.text("DROP DATABASE IF EXISTS outbox_template"))
            c.execute(sa.text("CREATE DATABASE outbox_template"))
        _migrate(f"{base}/outbox_template", inst)
        return ("postgresql", base, admin)
    path = inst / "template.sqlite3"
    _migrate(f"sqlite:///{path}", inst)
    return ("sqlite", path, None)


_counter = iter(range(1, 10**6))


@pytest.fixture
def database_url(db_template, tmp_path):
    kind, where, admin = db_template
    if kind == "postgresql":
        name = f"t{os.getpid()}_{next(_counter)}"
        with admin.connect() as c:
            c.execute(sa.text(f"CREATE DATABASE {name} TEMPLATE outbox_template"))
        yield f"{where}/{name}"
        with admin.connect() as c:
            c.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    else:
        path = tmp_path / "outbox.sqlite3"
        shutil.copy(where, path)
        yield f"sqlite:///{path}"


# --- SMTP ---------------------------------------------------------------------

class RecordingHandler:
    """Keeps every letter; can answer chosen recipients with scripted replies."""

    def __init__(self):
        self.lock = threading.Lock()
        self.letters: list[tuple[str, bytes, float]] = []
        self.scripted: dict[str, list[str]] = {}
        self.delay = 0.0
        self.pipelining = True  # as relays such as postfix and SES advertise it

    async def handle_EHLO(self, server, session, envelope, hostname, responses):  # noqa: N802
        session.host_name = hostname
        if self.pipelining:
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        with self.lock:
            queue = self.scripted.get(address)
            reply = queue.pop(0) if queue else None
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        if self.delay:
            import asyncio

            await asyncio.sleep(self.delay)
        now = time.time()
        with self.lock:
            for rcpt in envelope.rcpt_tos:
                self.letters.append((rcpt, envelope.original_content or envelope.content, now))
        return "250 2.0.0 Ok: queued"

    def counts(self) -> Counter:
        with self.lock:
            return Counter(r for r, _, _ in self.letters)


class SmtpServer:
    def __init__(self):
        self.port = free_port()
        self.handler = RecordingHandler()
        self.controller: Controller | None = None

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port,
                                     decode_data=False, ready_timeout=10)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


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
    n = next(_counter) % 4095 + 1
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
    from mailing import create_app
    from mailing.extensions import db

    app = create_app({"TESTING": True})
    with app.app_context():
        from mailing import settings
        from mailing.stoplists import ensure_system_lists

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
    from flask import g, has_app_context
    from flask.testing import FlaskClient

    from mailing.extensions import db

    class Client(FlaskClient):
        """Each request loads its user afresh, as it would in its own app context."""

        def open(self, *args, **kwargs):
            if has_app_context():
                g.__dict__.clear()  # user and locale are cached per context
            try:
                return super().open(*args, **kwargs)
            finally:
                if has_app_context():
                    # As at the end of a real request: no transaction stays open
                    # (on SQLite it would hold the write lock).
                    db.session.remove()

    app.test_client_class = Client
    return app.test_client()


class Workers:
    def __init__(self, env: dict[str, str]):
        self.env = dict(os.environ, **env, FLASK_APP="app.py")
        self.procs: list[subprocess.Popen] = []

    def start(self, n: int = 1, **extra: str) -> list[subprocess.Popen]:
        started = []
        for _ in range(n):
            p = subprocess.Popen([sys.executable, "-m", "flask", "worker"], cwd=ROOT,
                                 env=dict(self.env, **extra), start_new_session=True)
            self.procs.append(p)
            started.append(p)
        return started

    def kill(self, p: subprocess.Popen) -> None:
        """SIGKILL the worker and the job process it forked (which has its own group)."""
        from mailing.launcher import signal_tree

        signal_tree(p.pid, signal.SIGKILL)
        p.wait(10)

    def stop_all(self) -> None:
        from mailing.launcher import stop_tree

        for p in self.procs:
            stop_tree(p, 10)


@pytest.fixture
def workers(env):
    w = Workers(env)
    yield w
    w.stop_all()


# --- data and login helpers ---------------------------------------------------

def csrf_from(html: bytes | str) -> str:
    text = html.decode() if isinstance(html, bytes) else html
    m = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', text) or \
        re.search(r'"X-CSRFToken": "([^"]+)"', text)
    assert m, "no CSRF token on the page"
    return m.group(1)


@pytest.fixture
def make_user(ctx):
    from mailing.cli import create_user

    def make(role: str = "editor", email: str | None = None):
        user, pw = create_user(email or f"{role}-{next(_counter)}@test.local", role, "pw-" + role)
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
    from mailing.extensions import db
    from mailing.models import Contact, ContactList, Issue, Sender, list_members

    def make(n: int = 10, names=None, subject: str = "Monthly news", body: str | None = None,
             status_free: bool = True, emails=None):
        k = next(_counter)
        sender = Sender(name="Outbox News", email=f"news{k}@outbox.test")
        lst = ContactList(name=f"list {k}")
        db.session.add_all([sender, lst])
        db.session.flush()
        rows = []
        for i in range(n):
            email = emails[i] if emails else f"r{k}-{i:06d}@example.org"
            name = names[i % len(names)] if names else ("Анна Иванова" if i % 2 else f"Reader {i}")
            rows.append({"email": email, "name": name, "attributes": {}})
        if rows:
            db.session.execute(sa.insert(Contact), rows)
            ids = db.session.scalars(sa.select(Contact.id).where(Contact.email.in_([r["email"] for r in rows])))
            db.session.execute(sa.insert(list_members), [{"list_id": lst.id, "contact_id": i} for i in ids])
        issue = Issue(subject=subject, sender_id=sender.id, list_id=lst.id,
                      body_html=body or '<p>Hello, {{ name }} ({{ email }})</p><a href="{{ unsubscribe_url }}">u</a>')
        db.session.add(issue)
        db.session.commit()
        return issue.id

    return make


def issue_status(issue_id: int) -> str:
    from mailing.extensions import db
    from mailing.models import Issue

    db.session.commit()
    status = db.session.execute(sa.select(Issue.status).where(Issue.id == issue_id)).scalar_one()
    db.session.commit()
    return status


def wait_status(issue_id: int, wanted, timeout: float = 60.0) -> str:
    wanted = {wanted} if isinstance(wanted, str) else set(wanted)
    return wait_for(lambda: (s := issue_status(issue_id)) in wanted and s, timeout,
                    what=f"issue {issue_id} to reach {wanted}")


def deliveries_of(issue_id: int) -> list:
    """Plain rows, read and the transaction closed (SQLite writers must not wait on a test)."""
    from mailing.extensions import db
    from mailing.models import Delivery

    db.session.commit()
    rows = db.session.execute(sa.select(Delivery.__table__).where(Delivery.issue_id == issue_id)
                              .order_by(Delivery.id)).all()
    db.session.commit()
    return rows


def issue_row(issue_id: int):
    from mailing.extensions import db
    from mailing.models import Issue

    db.session.commit()
    row = db.session.execute(sa.select(Issue.__table__).where(Issue.id == issue_id)).one()
    db.session.commit()
    return row


def journal_of(issue_id: int) -> list:
    from mailing.extensions import db
    from mailing.models import JournalEvent

    db.session.commit()
    rows = db.session.execute(sa.select(JournalEvent.__table__).where(JournalEvent.issue_id == issue_id)
                              .order_by(JournalEvent.id)).all()
    db.session.commit()
    return rows


@pytest.fixture
def api_client(client, make_user):
    """A test client that speaks to /api/v1/ with a fresh token of the given role."""
    from mailing.extensions import db
    from mailing.models import ApiToken
    from mailing.views.api import token_hash

    def make(role: str = "editor"):
        user, _pw = make_user(role)
        token = f"obx_test_{role}_{next(_counter)}"
        db.session.add(ApiToken(user_id=user.id, name="test", token_hash=token_hash(token)))
        db.session.commit()
        headers = {"Authorization": f"Bearer {token}"}

        class Api:
            def __init__(self):
                self.headers = headers

            def get(self, path, **kw):
                return client.get("/api/v1" + path, headers=headers, **kw)

            def post(self, path, **kw):
                return client.post("/api/v1" + path, headers=headers, **kw)

        return Api()

    return make
