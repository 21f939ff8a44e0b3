"""Helpers for the tests (the fixtures themselves are in tests/conftest.py)."""

from .base import BACKEND, ROOT, SECRET, counter, free_port, wait_for
from .records import (
    create_issue,
    csrf_from,
    deliveries_of,
    issue_row,
    issue_status,
    journal_of,
    wait_status,
)
from .smtp import RecordingHandler, SmtpServer

__all__ = [
    "BACKEND", "ROOT", "SECRET", "RecordingHandler", "SmtpServer", "counter", "create_issue", "csrf_from",
    "deliveries_of", "free_port", "issue_row", "issue_status", "journal_of", "wait_for",
    "wait_status",
]
