"""Personal unsubscribe tokens: the delivery id and an HMAC, so a link needs no login
and a forged or altered one is refused."""

from __future__ import annotations

import functools
import hashlib
import hmac


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
    if not head.isdigit() or len(head) > 18:
        return None
    expected = make_token(secret, int(head)).partition(".")[2]
    return int(head) if hmac.compare_digest(mac, expected) else None


def unsubscribe_url(base_url: str, secret: bytes, delivery_id: int) -> str:
    return f"{base_url}/u/{make_token(secret, delivery_id)}"
