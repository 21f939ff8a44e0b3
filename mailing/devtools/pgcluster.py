"""A throw-away PostgreSQL cluster in a temp directory, for tests and benchmarks: the same
server production runs, started in a second and removed afterwards."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import sqlalchemy as sa


def pg_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for d in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (d / name).exists():
            return str(d / name)
    raise RuntimeError(f"PostgreSQL's {name} is missing (make install installs postgresql)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """initdb + pg_ctl start on a free port; `base` is the URL without a database name.
    Durability is off (fsync, full pages): a throw-away cluster never outlives a crash."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="outbox-pg-"))
        self.port = _free_port()
        self.run_as: list[str] = []
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            user = pwd.getpwnam("postgres")
            os.chown(self.dir, user.pw_uid, user.pw_gid)
            self.run_as = ["runuser", "-u", "postgres", "--"]
        self.data = self.dir / "data"
        subprocess.run(self.run_as + [pg_bin("initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
                                      "-E", "UTF8", "--no-instructions"], check=True, stdout=subprocess.DEVNULL)
        subprocess.run(self.run_as + [pg_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "log"), "-w",
                                      "-o", f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 "
                                      "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                                      "-c max_connections=200", "start"], check=True, stdout=subprocess.DEVNULL)
        self.base = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}"

    def stop(self) -> None:
        subprocess.run(self.run_as + [pg_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"],
                       stdout=subprocess.DEVNULL)
        shutil.rmtree(self.dir, ignore_errors=True)


class FreshDatabase:
    """A new, empty database on a server (a URL naming any database there), dropped on
    `drop()`: every run starts clean, so runs repeat back to back."""

    def __init__(self, server_url: str, prefix: str = "outbox_bench") -> None:
        parts = urlsplit(server_url)
        self.name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        self.admin = sa.create_engine(urlunsplit(parts._replace(path="/postgres")), isolation_level="AUTOCOMMIT")
        with self.admin.connect() as c:
            c.execute(sa.text(f'CREATE DATABASE "{self.name}"'))
        self.url = urlunsplit(parts._replace(path=f"/{self.name}"))

    def drop(self) -> None:
        with self.admin.connect() as c:
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
        self.admin.dispose()
