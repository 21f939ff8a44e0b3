"""The time the spread schedule follows. Tests move it forward through Redis
(OUTBOX_TEST_CLOCK=1) to watch portions leave without waiting for real hours."""

from __future__ import annotations

from datetime import datetime, timedelta

from flask import current_app

from .models import utcnow

OFFSET_KEY = "outbox:clock:offset"


def now() -> datetime:
    base = utcnow()
    if current_app.config.get("TEST_CLOCK"):
        from .queueing import redis_connection

        offset = redis_connection().get(OFFSET_KEY)
        if offset:
            base += timedelta(seconds=float(offset))
    return base


def advance(seconds: float) -> None:
    from .queueing import redis_connection

    redis_connection().incrbyfloat(OFFSET_KEY, seconds)
