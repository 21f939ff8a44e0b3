"""VERP return paths (a per-recipient envelope sender): `bounces+d<id>-<mac>@<domain>`.

A bounce comes back to the envelope sender, so the address it arrives at names the
delivery it is about, whatever the bounce's shape. The MAC (HMAC-SHA256 of the id with
the app's secret, 10 hex digits) makes a forged one useless: only a report to an address
we made is matched. Digits and lower-case hex only, because some MTAs change the case of
local parts; 40 characters at most, well inside the 64 of RFC 5321.
"""

from __future__ import annotations

import hashlib
import hmac
import re

PREFIX = "bounces+"
_TOKEN = re.compile(r"bounces\+d(\d{1,18})-([0-9a-f]{10})@", re.IGNORECASE)


def _mac(secret: bytes, delivery_id: int) -> str:
    return hmac.new(secret, f"verp:{delivery_id}".encode(), hashlib.sha256).hexdigest()[:10]


def address(secret: bytes, delivery_id: int, domain: str) -> str:
    return f"{PREFIX}d{delivery_id}-{_mac(secret, delivery_id)}@{domain}"


def find(secret: bytes, text: str) -> int | None:
    """The delivery id of the first valid VERP address in `text` (a header, an envelope
    recipient, a whole message), or None. A token with a wrong MAC is not ours."""
    for m in _TOKEN.finditer(text or ""):
        delivery_id = int(m.group(1))
        if hmac.compare_digest(m.group(2).lower(), _mac(secret, delivery_id)):
            return delivery_id
    return None
