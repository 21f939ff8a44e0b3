"""The development commands: `flask stack` (what `make run` starts), `flask demo` and
`flask bench …`. Flask finds them through the `flask.commands` entry points in
pyproject.toml, so the app package never imports them."""

from __future__ import annotations

from pathlib import Path

import click
from flask import current_app
from flask.cli import with_appcontext

from .bench import bench
from .bench_soak import soak
from .demo import seed
from .launcher import run_stack

bench.add_command(soak)  # its own module: it builds on bench.py's Stack

__all__ = ["bench", "demo", "stack"]


@click.command("stack")
@click.option("--port", envvar="PORT", default=5000, type=int)
@click.option("--workers", envvar="WORKERS", default=2, type=int)
@with_appcontext
def stack(port: int, workers: int) -> None:
    """Start web, workers, Redis and the sandbox SMTP server; Ctrl-C stops them all."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]  # the proxy is typed as Flask
    raise SystemExit(run_stack(app, port, workers))


@click.command("demo")
@with_appcontext
def demo() -> None:
    """Fill an empty database with demo users, senders, contacts and a draft issue."""
    for email, role, pw in seed(Path(current_app.instance_path)):
        click.echo(f"  {role:10} {email:28} {pw}")
