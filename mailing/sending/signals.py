"""What a runner says and hears through Redis: the halt flag, its heartbeat and
progress samples (rates are pacer.py's). Keys are named in mailing/queueing.py;
the pages and the maintenance loop read the same keys."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import redis

from .. import queueing


class Signals:
    def __init__(self, r: redis.Redis, issue_id: int, owner: str, lease: int):
        self.redis, self.issue_id, self.owner, self.lease = r, issue_id, owner, lease
        self.halt_key = queueing.halt_key(issue_id)
        self._watcher: threading.Thread | None = None
        self._stop = threading.Event()

    # --- halt ---------------------------------------------------------------

    def watch_halt(self, on_halt: Callable[[], None]) -> None:
        """Call `on_halt` once when Pause, Cancel or an interrupt raises the issue's flag:
        the published message arrives within a millisecond; the flag itself is re-read
        every 100 ms in case a message was missed. Runs in its own thread until
        `stop_watching`."""
        self._watcher = threading.Thread(target=self._watch, args=(on_halt,), daemon=True, name="halt-watch")
        self._watcher.start()

    def _watch(self, on_halt: Callable[[], None]) -> None:
        pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(self.halt_key)
        try:
            while not self._stop.is_set():
                if self.redis.exists(self.halt_key) or pubsub.get_message(timeout=0.1) is not None:
                    on_halt()
                    return
        finally:
            pubsub.close()

    def stop_watching(self) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join()

    # --- liveness -----------------------------------------------------------

    def heartbeat(self) -> None:
        """This runner is alive until one lease from now (the maintenance loop starts a
        new runner for a Sending issue with no live one)."""
        key = queueing.runners_key(self.issue_id)
        pipe = self.redis.pipeline()
        pipe.zadd(key, {self.owner: time.time() + self.lease})
        pipe.zrem(key, "maintenance")  # the maintenance loop's placeholder until a runner beats
        pipe.expire(key, 86400)
        pipe.execute()

    def leave(self) -> None:
        self.redis.zrem(queueing.runners_key(self.issue_id), self.owner)

    # --- progress -----------------------------------------------------------

    def progress(self, done: int) -> None:
        queueing.note_progress(self.redis, self.issue_id, done)
