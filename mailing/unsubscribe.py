"""Personal unsubscribe tokens: the delivery id and an HMAC, so a link needs no login
and a forged or altered one is refused."""

from __future__ import annotations

import functools
import hashlib
import hmac
import re

_ID = re.compile(r"[0-9]{1,18}")
_MAC = re.compile(r"[0-9a-f]{20}")


@functools.lru_cache(maxsize=8)
def keyed(secret: bytes) -> hmac.HMAC:
    """An HMAC-SHA256 with the key already absorbed; copies of it sign without redoing that."""
    return hmac.new(secret, digestmod=hashlib.sha256)


def sign(secret: bytes, message: bytes) -> str:
    mac = keyed(secret).copy()
    mac.update(message)
    return mac.hexdigest()


def make_token(secret: bytes, delivery_id: int) -> str:
    return f"{delivery_id}.{sign(secret, f'unsub:{delivery_id}'.encode())[:20]}"


def read_token(secret: bytes, token: str) -> int | None:
    """The delivery id a genuine token names, else None."""
    head, _, mac = (token or "").partition(".")
    # ASCII only: str.isdigit() accepts "²" (which int() refuses) and compare_digest
    # refuses non-ASCII text; either made a forged link a 500 instead of a 400.
    if not _ID.fullmatch(head) or not _MAC.fullmatch(mac):
        return None
    expected = make_token(secret, int(head)).partition(".")[2]
    return int(head) if hmac.compare_digest(mac, expected) else None


def unsubscribe_url(base_url: str, secret: bytes, delivery_id: int) -> str:
    return f"{base_url}/u/{make_token(secret, delivery_id)}"


def make_test_token(secret: bytes, issue_id: int) -> str:
    """The link of a test letter: names the issue, not a delivery, and changes nothing."""
    return f"t{issue_id}.{sign(secret, f'unsub-test:{issue_id}'.encode())[:20]}"


def read_test_token(secret: bytes, token: str) -> int | None:
    """The issue id a genuine test-letter token names, else None."""
    head, _, mac = (token or "").partition(".")
    if not head.startswith("t") or not _ID.fullmatch(head[1:]) or not _MAC.fullmatch(mac):
        return None
    expected = make_test_token(secret, int(head[1:])).partition(".")[2]
    return int(head[1:]) if hmac.compare_digest(mac, expected) else None


def test_unsubscribe_url(base_url: str, secret: bytes, issue_id: int) -> str:
    return f"{base_url}/u/{make_test_token(secret, issue_id)}"
