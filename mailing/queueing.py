"""Redis and RQ access, plus the small Redis keys the engine and the pages share."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

import redis
from flask import current_app
from rq import Queue

_pools: dict[str, redis.ConnectionPool] = {}


def redis_connection(url: str | None = None) -> redis.Redis:
    url = url or current_app.config["REDIS_URL"]
    pool = _pools.get(url)
    if pool is None:
        pool = _pools[url] = redis.ConnectionPool.from_url(url)
    return redis.Redis(connection_pool=pool)


def reset_pools() -> None:
    """After fork: never share a socket with the parent."""
    _pools.clear()


def queue() -> Queue:
    return Queue(current_app.config["RQ_QUEUE"], connection=redis_connection())


def enqueue(func: str, *args: Any, at: datetime | None = None, delay: float = 0) -> None:
    """Enqueue a job by dotted name; call only after the commit that made it necessary."""
    q = queue()
    opts: dict[str, Any] = {"job_timeout": -1, "result_ttl": 600, "failure_ttl": 7 * 86400}
    if at is not None:
        q.enqueue_at(at, func, *args, **opts)
    elif delay > 0:
        q.enqueue_in(timedelta(seconds=delay), func, *args, **opts)
    else:
        q.enqueue(func, *args, **opts)


# --- keys -----------------------------------------------------------------

def halt_key(issue_id: int) -> str:
    """Set while an issue must not start new messages (pause, cancel, interrupt)."""
    return f"outbox:issue:{issue_id}:halt"


def runners_key(issue_id: int) -> str:
    """Sorted set of live runners on an issue, scored by their heartbeat deadline."""
    return f"outbox:issue:{issue_id}:runners"


def progress_key(issue_id: int) -> str:
    return f"outbox:issue:{issue_id}:progress"


def set_halt(issue_id: int) -> None:
    """Raise the flag and tell the runners at once (they also re-read the flag)."""
    r = redis_connection()
    pipe = r.pipeline()
    pipe.set(halt_key(issue_id), "1", ex=7 * 86400)
    pipe.publish(halt_key(issue_id), "halt")
    pipe.execute()


def clear_halt(issue_id: int) -> None:
    redis_connection().delete(halt_key(issue_id))


def note_progress(r: redis.Redis, issue_id: int, done: int) -> None:
    """Keep the last samples of (time, done) to compute the rate the row shows."""
    key = progress_key(issue_id)
    pipe = r.pipeline()
    pipe.rpush(key, f"{time.time():.3f}:{done}")
    pipe.ltrim(key, -30, -1)
    pipe.expire(key, 3600)
    pipe.execute()


def rate(issue_id: int, window: float = 15.0) -> float:
    """Letters per second over the last `window` seconds of samples."""
    try:
        raw = redis_connection().lrange(progress_key(issue_id), 0, -1)
    except redis.RedisError:
        return 0.0
    samples = [tuple(map(float, s.decode().split(":"))) for s in raw]
    if len(samples) < 2:
        return 0.0
    now = time.time()
    recent = [s for s in samples if now - s[0] <= window] or samples[-2:]
    if len(recent) < 2:
        recent = samples[-2:]
    (t0, d0), (t1, d1) = recent[0], recent[-1]
    if now - t1 > window:
        return 0.0
    return max(d1 - d0, 0) / (t1 - t0) if t1 > t0 else 0.0
