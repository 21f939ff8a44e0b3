"""What every test helper shares: where the checkout is, which database the run uses,
unique numbers, free ports and waiting for a condition."""

from __future__ import annotations

import itertools
import os
import socket
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BACKEND = os.environ.get("OUTBOX_TEST_BACKEND", "sqlite")
SECRET = "test-secret-key-not-for-production"

counter = itertools.count(1)  # unique names for databases, users, lists, Redis databases


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.05, what: str = "condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
