"""Command line: `flask stack` (everything), `flask worker`, `flask users create`, `flask demo`."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import click
import sqlalchemy as sa
from flask import Flask, current_app
from flask.cli import AppGroup

from .extensions import db
from .models import Role, User


def create_user(email: str, role: str, password: str | None = None) -> tuple[User, str]:
    password = password or secrets.token_urlsafe(12)
    user = User(email=email.strip().lower(), role=role)
    user.set_password(password)
    db.session.add(user)
    db.session.commit()
    return user, password


def register_cli(app: Flask) -> None:
    users = AppGroup("users", help="Manage users.")

    @users.command("create")
    @click.argument("email")
    @click.option("--role", type=click.Choice([r.value for r in Role]), default=Role.EDITOR.value)
    @click.option("--password", default=None, help="Generated and printed when omitted.")
    def users_create(email: str, role: str, password: str | None) -> None:
        """Add a user with a role."""
        if db.session.scalar(sa.select(User).where(User.email == email.strip().lower())):
            raise click.ClickException(f"{email} already exists")
        _user, pw = create_user(email, role, password)
        click.echo(f"created {email} ({role}) password: {pw}")

    app.cli.add_command(users)

    @app.cli.command("demo")
    def demo_cmd() -> None:
        """Fill an empty database with demo users, senders, contacts and a draft issue."""
        from .demo import seed

        logins = seed(Path(current_app.instance_path))
        for email, role, pw in logins:
            click.echo(f"  {role:10} {email:28} {pw}")

    @app.cli.command("worker")
    @click.option("--burst", is_flag=True, help="Stop when the queue is empty.")
    @click.option("--name", default=None)
    def worker_cmd(burst: bool, name: str | None) -> None:
        """An RQ worker with its scheduler, plus the maintenance loop (lease reaper).
        SIGTERM or Ctrl-C: letters in flight finish, then it exits (warm shutdown)."""
        from jobs import get_app
        from jobs.maintenance import run_forever
        from jobs.worker import Maintenance, OutboxWorker

        # The maintenance loop runs in its own process, forked before any thread exists:
        # RQ forks a process per job, and a fork taken while another thread holds a lock
        # (a connection pool's, a statement cache's) would leave that lock held forever.
        maintenance = Maintenance(run_forever, os.getpid())
        get_app()  # preloaded once; forked job processes reuse it
        # The worker's own connection: RQ sets a long socket timeout on it for its
        # blocking dequeue, which must not leak into the pool the jobs share.
        import redis

        from .queueing import queue

        conn = redis.Redis.from_url(current_app.config["REDIS_URL"])
        q = queue()
        worker = OutboxWorker([q.name], connection=conn, name=name)
        maintenance.watch()  # restarts it when it dies; a thread, so only after the fork above
        try:
            worker.work(with_scheduler=True, burst=burst, logging_level="WARNING")
        finally:
            maintenance.stop()

    @app.cli.command("stack")
    @click.option("--port", envvar="PORT", default=5000, type=int)
    @click.option("--workers", envvar="WORKERS", default=2, type=int)
    def stack_cmd(port: int, workers: int) -> None:
        """Start web, workers, Redis and the sandbox SMTP server; Ctrl-C stops them all."""
        from .launcher import run_stack

        raise SystemExit(run_stack(current_app._get_current_object(), port, workers))

    from .bench import bench
    from .bench_soak import soak

    bench.add_command(soak)  # its own module: it builds on bench.py's Stack
    app.cli.add_command(bench)
