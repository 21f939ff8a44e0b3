"""Personal unsubscribe tokens: the delivery id and an HMAC, so a link needs no login
and a forged or altered one is refused."""

from __future__ import annotations

import hashlib
import hmac


def make_token(secret: bytes, delivery_id: int) -> str:
    mac = hmac.new(secret, f"unsub:{delivery_id}".encode(), hashlib.sha256).hexdigest()[:20]
    return f"{delivery_id}.{mac}"


def read_token(secret: bytes, token: str) -> int | None:
    """The delivery id a genuine token names, else None."""
    head, _, mac = (token or "").partition(".")
    if not head.isdigit() or len(head) > 18:
        return None
    expected = make_token(secret, int(head)).partition(".")[2]
    return int(head) if hmac.compare_digest(mac, expected) else None


def unsubscribe_url(base_url: str, secret: bytes, delivery_id: int) -> str:
    return f"{base_url}/u/{make_token(secret, delivery_id)}"
