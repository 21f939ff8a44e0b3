"""Redis and RQ access, plus the small Redis keys the engine and the pages share."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

import redis
from flask import current_app
from rq import Queue

_clients: dict[str, redis.Redis] = {}


def redis_connection(url: str | None = None) -> redis.Redis:
    """One client (and connection pool) per URL and process; the client is thread-safe,
    and building one costs more than the command a polled page sends."""
    url = url or current_app.config["REDIS_URL"]
    client = _clients.get(url)
    if client is None:
        client = _clients[url] = redis.Redis.from_url(url)
    return client


def reset_pools() -> None:
    """After fork: never share a socket with the parent."""
    _clients.clear()


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


# The polled row of a live issue, rendered at most once a second per language and
# role class however many pages poll it; dropped when the issue changes status.
ROW_TTL = 1.0


def row_key(issue_id: int) -> str:
    return f"outbox:issue:{issue_id}:row"


def cached_row(issue_id: int, variant: str) -> str | None:
    try:
        raw = redis_connection().hget(row_key(issue_id), variant)
    except redis.RedisError:
        return None
    if raw is None:
        return None
    at, _, html = raw.decode().partition("|")
    return html if time.time() - float(at) < ROW_TTL else None


def cache_row(issue_id: int, variant: str, html: str) -> None:
    pipe = redis_connection().pipeline()
    pipe.hset(row_key(issue_id), variant, f"{time.time():.3f}|{html}")
    pipe.expire(row_key(issue_id), 60)
    try:
        pipe.execute()
    except redis.RedisError:
        pass


def forget_rows(issue_ids: set[int]) -> None:
    try:
        redis_connection().delete(*(row_key(i) for i in issue_ids))
    except redis.RedisError:
        pass


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


def last_activity(issue_id: int) -> float | None:
    """When the issue last sent (its newest progress sample), as a Unix time."""
    try:
        raw = redis_connection().lindex(progress_key(issue_id), -1)
    except redis.RedisError:
        return None
    return float(raw.decode().split(":")[0]) if raw else None


def live_runners(issue_id: int) -> int:
    """Runners on the issue whose heartbeat has not run out."""
    return int(redis_connection().zcount(runners_key(issue_id), time.time(), "+inf"))
