""""This is spam" complaints: ARF reports (RFC 5965) put the address in Unsubscribed from all."""

from __future__ import annotations

import email
import email.policy
import mailbox
from pathlib import Path

import sqlalchemy as sa

from .addresses import email_key
from .extensions import db
from .models import Delivery
from .stoplists import add_entry


class ComplaintError(ValueError):
    pass


def _original_recipient(raw: bytes) -> tuple[str | None, str | None]:
    """(Original-Rcpt-To, the original Message-ID) from a feedback report."""
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    if msg.get_content_type() != "multipart/report" or msg.get_param("report-type") != "feedback-report":
        raise ComplaintError("not an ARF report (multipart/report; report-type=feedback-report)")
    rcpt = message_id = None
    for part in msg.walk():
        ctype = part.get_content_type()
        if ctype == "message/feedback-report":
            payload = part.get_payload()
            text = payload[0].as_string() if isinstance(payload, list) else str(payload)
            for line in text.splitlines():
                name, _, value = line.partition(":")
                if name.strip().lower() == "original-rcpt-to" and value.strip():
                    rcpt = value.strip().strip("<>")
        elif ctype in ("message/rfc822", "text/rfc822-headers"):
            inner = part.get_payload()
            original = inner[0] if isinstance(inner, list) else email.message_from_string(
                str(inner), policy=email.policy.default)
            message_id = message_id or (str(original.get("Message-ID") or "").strip() or None)
            if rcpt is None and original.get("To"):
                addresses = getattr(original["To"], "addresses", ())
                if addresses:
                    rcpt = addresses[0].addr_spec
    return rcpt, message_id


def handle_arf(raw: bytes) -> str:
    """Unsubscribe the complaining recipient; returns the address."""
    rcpt, message_id = _original_recipient(raw)
    if message_id:
        found = db.session.scalar(sa.select(Delivery.email).where(Delivery.message_id == message_id))
        rcpt = found or rcpt
    if not rcpt:
        raise ComplaintError("the report names no recipient and no known Message-ID")
    try:
        address = email_key(rcpt)  # the person, whatever case the report uses
    except Exception as exc:
        raise ComplaintError(f"bad recipient address: {exc}") from None
    from .models import StopEvent, StopList

    if add_entry("unsubscribed", address, source="complaint"):
        stop = db.session.scalar(sa.select(StopList).where(StopList.code == "unsubscribed"))
        db.session.add(StopEvent(list_id=stop.id, action="add", value=address, source="complaint",
                                 actor_label="complaint"))
    db.session.commit()
    return address


def scan_maildir(path: str) -> int:
    """Process ARF reports dropped in a watched Maildir; handled ones move to cur/."""
    if not Path(path).is_dir():
        return 0
    box = mailbox.Maildir(path, create=False)
    done = 0
    for key in list(box.keys()):
        try:
            handle_arf(box.get_bytes(key))
            done += 1
        except ComplaintError:
            pass
        box.remove(key)
    return done
