"""The RQ worker behind `flask worker`: warm shutdown that reaches the running job, and a
maintenance process that is restarted when it dies."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
import time
from typing import Any

from rq import Worker

from mailing.supervision import Backoff, describe_exit

from . import shutdown


class OutboxWorker(Worker):
    """RQ's forking worker, except that a warm shutdown (SIGTERM or SIGINT to the worker)
    is passed on to the job process as SIGTERM, where the running job stops at a safe
    point instead of running to the end of its issue. RQ's own job process would die
    on SIGTERM mid-letter; ours handles it (see jobs.shutdown)."""

    def setup_work_horse_signals(self) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is the worker's to handle
        signal.signal(signal.SIGTERM, shutdown.request)

    def handle_warm_shutdown_request(self) -> None:
        super().handle_warm_shutdown_request()
        if self.horse_pid:
            try:
                os.kill(self.horse_pid, signal.SIGTERM)
            except ProcessLookupError:
                pass


class Maintenance:
    """The maintenance loop's process beside the worker, restarted with back-off when it
    dies. The first one is forked before any thread exists; a restart is spawned (a fresh
    interpreter), because forking a process that runs a watcher thread could copy a lock
    some thread holds."""

    def __init__(self, target: Any, parent_pid: int):
        self.target, self.parent_pid = target, parent_pid
        self.backoff = Backoff()
        self.stopping = threading.Event()
        self.proc = self._start("fork")
        self.started = time.monotonic()

    def _start(self, method: str) -> Any:
        proc = multiprocessing.get_context(method).Process(
            target=self.target, args=(self.parent_pid,), name="outbox-maintenance", daemon=True)
        proc.start()
        return proc

    def watch(self) -> None:
        threading.Thread(target=self._watch, daemon=True, name="maintenance-watch").start()

    def _watch(self) -> None:
        while not self.stopping.wait(1.0):
            if self.proc.is_alive():
                continue
            if self.proc.exitcode == 0:
                return  # it was asked to stop (Ctrl-C in a terminal reaches it too): so are we
            delay = self.backoff.next_delay(time.monotonic() - self.started)
            print(f"outbox-maintenance (pid {self.proc.pid}) exited with "
                  f"{describe_exit(self.proc.exitcode)}; restarting in {delay:g} s", file=sys.stderr, flush=True)
            if self.stopping.wait(delay):
                return
            self.proc = self._start("spawn")
            self.started = time.monotonic()
            print(f"outbox-maintenance restarted (pid {self.proc.pid})", file=sys.stderr, flush=True)

    def stop(self) -> None:
        self.stopping.set()
        self.proc.terminate()
        self.proc.join(5)
