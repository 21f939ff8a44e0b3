"""Warm shutdown inside a job process.

RQ's worker answers SIGTERM or SIGINT with a warm shutdown: it waits for the job it
is running, then exits. A send job lasts as long as its issue, so the worker passes
the request on to the job process (see `jobs.worker.OutboxWorker`), where it reaches
the running job through `on_request`: a runner starts no new letter, lets those in
flight finish, and gives the rest back as pending for the next worker.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

_callbacks: list[Callable[[], None]] = []
_requested = threading.Event()


def request(_signum: int | None = None, _frame: Any = None) -> None:
    """The signal handler of a job process: tell the running job to stop at a safe point.
    A job that registered nothing (a start job, an import) simply runs to its end."""
    _requested.set()
    for callback in list(_callbacks):
        callback()


def requested() -> bool:
    return _requested.is_set()


@contextmanager
def on_request(callback: Callable[[], None]) -> Iterator[None]:
    """Call `callback` when a shutdown is requested while the block runs, or at once
    when it was requested before the job got this far."""
    _callbacks.append(callback)
    try:
        if _requested.is_set():
            callback()
        yield
    finally:
        _callbacks.remove(callback)
