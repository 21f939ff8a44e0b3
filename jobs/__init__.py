"""RQ jobs. Each takes ids, runs in its own app context, and is safe to run twice."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from flask import Flask

_app: Flask | None = None
_pid: int | None = None


def get_app() -> Flask:
    """The worker's app, created once; after a fork the child drops the parent's
    database connections and Redis sockets instead of sharing them."""
    global _app, _pid
    if _app is None:
        from mailing import create_app

        _app = create_app()
        _pid = os.getpid()
    elif _pid != os.getpid():
        from mailing.extensions import db
        from mailing.queueing import reset_pools

        with _app.app_context():
            db.engine.dispose(close=False)
        reset_pools()
        _pid = os.getpid()
    return _app


@contextmanager
def job_context() -> Iterator[Flask]:
    app = get_app()
    with app.app_context():
        from mailing.extensions import db

        try:
            yield app
        finally:
            db.session.remove()
