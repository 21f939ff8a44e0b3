"""The real processes tests run against: Redis, the migrated database, `flask worker`
processes and the web server as `make run` starts it (gunicorn)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import redis
import sqlalchemy as sa

from mailing.devtools.launcher import signal_tree, stop_tree, web_command

from .base import ROOT, SECRET, counter, free_port, wait_for


def environment(database_url: str, redis_url: str, smtp_url: str, tmp_path: Path) -> dict[str, str]:
    """The environment a test's app, workers and web server share: its own database, its own
    Redis database and queue (nothing a finished test left running can take its jobs or its
    maintenance lock), its SMTP server and instance directory, and fast timings."""
    n = next(counter) % 4095 + 1
    return {
        "DATABASE_URL": database_url, "REDIS_URL": f"{redis_url}?db={n}", "SMTP_URL": smtp_url,
        "SECRET_KEY": SECRET, "OUTBOX_INSTANCE": str(tmp_path / "instance"),
        "MAILDIR": str(tmp_path / "maildir"), "BASE_URL": "http://127.0.0.1:5999",
        "RQ_QUEUE": f"outbox-test-{os.getpid()}-{n}", "SEND_CONCURRENCY": "4", "SEND_CHUNK": "50",
        "LEASE_SECONDS": "5", "RETRY_BASE_SECONDS": "0.5", "SMTP_TIMEOUT": "5",
        # Tests that take the relay down want the interrupt promptly (the default waits 2 min).
        "RELAY_RETRY_WINDOW": "1",
    }


class RedisServer:
    """redis-server on a unix socket in a temp directory, with a database for each test."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is required (make install installs it)"
        self.dir = Path(tempfile.mkdtemp(prefix="outbox-redis-"))
        sock = self.dir / "redis.sock"
        self.proc = subprocess.Popen(
            [binary, "--port", "0", "--unixsocket", str(sock), "--save", "", "--databases", "4096",
             "--appendonly", "no", "--dir", str(self.dir), "--loglevel", "warning"],
            stdout=subprocess.DEVNULL)
        self.url = f"unix://{sock}"
        wait_for(sock.exists, 10, what="redis socket")
        wait_for(self.answers, 10, what="redis ping")

    def answers(self) -> bool:
        try:
            return bool(redis.Redis.from_url(self.url).ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


def migrate(url: str, instance: Path) -> None:
    """`flask db upgrade` on `url`, as a release does."""
    env = dict(os.environ, DATABASE_URL=url, OUTBOX_INSTANCE=str(instance), SECRET_KEY=SECRET,
               REDIS_URL="redis://127.0.0.1:1", FLASK_APP="app.py")
    subprocess.run([sys.executable, "-m", "flask", "db", "upgrade"], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class SchemaTemplate:
    """The migrated schema, made once: a SQLite file to copy, or (given a PostgreSQL
    server's base URL) a template database; `fresh` hands each test its own copy."""

    def __init__(self, instance: Path, pg_base: str | None = None) -> None:
        self.pg_base = pg_base
        if pg_base is not None:
            self.admin = sa.create_engine(f"{pg_base}/postgres", isolation_level="AUTOCOMMIT")
            with self.admin.connect() as c:
                c.execute(sa.text("DROP DATABASE IF EXISTS outbox_template"))
                c.execute(sa.text("CREATE DATABASE outbox_template"))
            migrate(f"{pg_base}/outbox_template", instance)
        else:
            self.path = instance / "template.sqlite3"
            migrate(f"sqlite:///{self.path}", instance)

    def fresh(self, tmp_path: Path) -> str:
        """A new database with the schema; its URL."""
        if self.pg_base is None:
            path = tmp_path / "outbox.sqlite3"
            shutil.copy(self.path, path)
            return f"sqlite:///{path}"
        name = f"t{os.getpid()}_{next(counter)}"
        with self.admin.connect() as c:
            c.execute(sa.text(f"CREATE DATABASE {name} TEMPLATE outbox_template"))
        return f"{self.pg_base}/{name}"

    def drop(self, url: str) -> None:
        if self.pg_base is not None:
            with self.admin.connect() as c:
                c.execute(sa.text(f"DROP DATABASE IF EXISTS {url.rsplit('/', 1)[1]} WITH (FORCE)"))


class Workers:
    """`flask worker` processes on the test's environment, stopped at the end."""

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
        signal_tree(p.pid, signal.SIGKILL)
        p.wait(10)

    def stop_all(self) -> None:
        for p in self.procs:
            stop_tree(p, 10)


class WebServer:
    """The app served by gunicorn on a free port, sharing the test's database and Redis."""

    def __init__(self, env: dict[str, str]):
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(web_command(port, processes=2), cwd=ROOT,
                                     env={**os.environ, **env, "BASE_URL": self.url},
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for(self.answers, 20, 0.1, "web server")
        except AssertionError:
            self.stop()
            raise

    def answers(self) -> bool:
        try:
            return urllib.request.urlopen(self.url + "/login", timeout=1).status == 200
        except OSError:
            return False

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
