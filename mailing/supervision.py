"""Restart policy shared by the launcher (its children) and `flask worker` (its
maintenance process). Imports nothing of the project, so either can use it."""

from __future__ import annotations

import signal


class Backoff:
    """Restart delays for a process that keeps dying: `first`, doubling up to `cap`, and
    back to `first` once the process has stayed up `stable` seconds."""

    def __init__(self, first: float = 1.0, cap: float = 60.0, stable: float = 60.0):
        self.first, self.cap, self.stable = first, cap, stable
        self.delay = first

    def next_delay(self, uptime: float) -> float:
        if uptime >= self.stable:
            self.delay = self.first
        delay, self.delay = self.delay, min(self.delay * 2, self.cap)
        return delay


def describe_exit(code: int | None) -> str:
    """An exit status as people read it: `-9 (SIGKILL)` or `1`."""
    if code is not None and code < 0:
        try:
            return f"{code} ({signal.Signals(-code).name})"
        except ValueError:
            pass
    return str(code)
