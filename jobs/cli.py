"""`flask worker`, found by Flask through the `flask.commands` entry point in pyproject.toml
(the app package never imports the jobs)."""

from __future__ import annotations

import os

import click
import redis
from flask import current_app
from flask.cli import with_appcontext

from mailing.queueing import queue

from . import get_app
from .maintenance import run_forever
from .worker import Maintenance, OutboxWorker


@click.command("worker")
@click.option("--burst", is_flag=True, help="Stop when the queue is empty.")
@click.option("--name", default=None)
@with_appcontext
def worker(burst: bool, name: str | None) -> None:
    """An RQ worker with its scheduler, plus the maintenance loop (lease reaper).
    SIGTERM or Ctrl-C: letters in flight finish, then it exits (warm shutdown)."""
    # The maintenance loop runs in its own process, forked before any thread exists:
    # RQ forks a process per job, and a fork taken while another thread holds a lock
    # (a connection pool's, a statement cache's) would leave that lock held forever.
    maintenance = Maintenance(run_forever, os.getpid())
    get_app()  # preloaded once; forked job processes reuse it
    # The worker's own connection: RQ sets a long socket timeout on it for its
    # blocking dequeue, which must not leak into the pool the jobs share.
    conn = redis.Redis.from_url(current_app.config["REDIS_URL"])
    q = queue()
    rq_worker = OutboxWorker([q.name], connection=conn, name=name)
    maintenance.watch()  # restarts it when it dies; a thread, so only after the fork above
    try:
        rq_worker.work(with_scheduler=True, burst=burst, logging_level="WARNING")
    finally:
        maintenance.stop()
