"""Stop-lists: normalisation of entries and the checks that keep mail from people who must not get it."""

from __future__ import annotations

import sqlalchemy as sa
from email_validator import EmailNotValidError, validate_email

from .extensions import db
from .models import StopEntry, StopList

SYSTEM_LISTS = {
    "unsubscribed": "Unsubscribed from all",
    "blocked": "Blocked manually",
    "sender_unsubscribed": "Unsubscribed from senders",
}


def normalise_email(value: str) -> str:
    """The address as stored everywhere: checked without DNS, domain lower-cased."""
    info = validate_email(value.strip(), check_deliverability=False)
    return info.normalized


def is_valid_email(value: str) -> bool:
    try:
        normalise_email(value)
    except EmailNotValidError:
        return False
    return True


def ensure_system_lists() -> None:
    existing = set(db.session.scalars(sa.select(StopList.code).where(StopList.code.is_not(None))))
    for code, name in SYSTEM_LISTS.items():
        if code not in existing:
            db.session.add(StopList(code=code, name=name))


def applicable_entries_sql(email_expr: str, sender_param: str) -> str:
    """A correlated subquery giving the name of the first stop-list that applies to
    an address: every list, except that per-sender unsubscribes apply to their sender only."""
    return f"""
        SELECT sl.name FROM stop_entries e JOIN stop_lists sl ON sl.id = e.list_id
        WHERE e.value = {email_expr} AND e.kind = 'email'
          AND (e.sender_id IS NULL OR e.sender_id = {sender_param})
        ORDER BY sl.id LIMIT 1
    """


def suppressed_among(emails: list[str], sender_id: int | None) -> dict[str, str]:
    """Which of these addresses are stopped now, and by which list: one query per chunk."""
    if not emails:
        return {}
    rows = db.session.execute(
        sa.select(StopEntry.value, StopList.name)
        .join(StopList, StopList.id == StopEntry.list_id)
        .where(StopEntry.kind == "email", StopEntry.value.in_(set(emails)),
               sa.or_(StopEntry.sender_id.is_(None), StopEntry.sender_id == sender_id))
        .order_by(StopList.id)
    ).all()
    db.session.commit()
    found: dict[str, str] = {}
    for value, name in rows:
        found.setdefault(value, name)
    return found


def add_entry(list_code: str, email: str, *, source: str, sender_id: int | None = None,
              actor_id: int | None = None) -> bool:
    """Put one address in a system list; True when it was not there yet. Idempotent."""
    stop = db.session.scalar(sa.select(StopList).where(StopList.code == list_code))
    if stop is None:
        ensure_system_lists()
        db.session.flush()
        stop = db.session.scalar(sa.select(StopList).where(StopList.code == list_code))
    value = normalise_email(email)
    exists = db.session.scalar(
        sa.select(StopEntry.id).where(StopEntry.list_id == stop.id, StopEntry.value == value,
                                      StopEntry.sender_id.is_(None) if sender_id is None
                                      else StopEntry.sender_id == sender_id))
    if exists:
        return False
    db.session.add(StopEntry(list_id=stop.id, kind="email", value=value, sender_id=sender_id,
                             source=source, created_by_id=actor_id))
    return True


def unsubscribe_delivery(delivery, *, source: str) -> bool:
    """The recipient of `delivery` asked to stop: every later letter is suppressed."""

    added = add_entry("unsubscribed", delivery.email, source=source)
    db.session.commit()
    return added
