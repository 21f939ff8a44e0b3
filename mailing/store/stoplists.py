"""Stop-list queries: which entries apply to an issue, and which addresses they stop."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import distinct_on

from ..extensions import db
from ..models import StopEntry, StopList
from . import among

entries = StopEntry.__table__
lists = StopList.__table__


def applies_to_sender(sender_id: Any, entry: Any = entries) -> Any:
    """Does stop-list entry `entry` apply to an issue of sender `sender_id`? Every list
    applies, except that per-sender unsubscribes apply to their own sender only; phone
    entries never stop an email. The one rule: launch, the send-time check, "who will
    get it" and the lookup all use this expression."""
    return sa.and_(entry.c.kind == "email",
                   sa.or_(entry.c.sender_id.is_(None), entry.c.sender_id == sender_id))


def first_stopping_list(key: Any, sender_id: Any) -> Any:
    """The name of the first stop-list (by id) with an applicable entry for the address
    key `key`: a correlated scalar subquery, one probe into ix_stop_entries_value."""
    e = entries.alias("e")
    return (sa.select(lists.c.name).join_from(e, lists, lists.c.id == e.c.list_id)
            .where(e.c.value == key, applies_to_sender(sender_id, e))
            .order_by(lists.c.id).limit(1).scalar_subquery())


def stopped_keys(sender_id: Any) -> Any:
    """Every address key an applicable entry stops (a subquery for `IN`)."""
    e = entries.alias("e")
    return sa.select(e.c.value).where(applies_to_sender(sender_id, e))


def stopping_lists_by_key(sender_id: Any) -> Any:
    """One row per stopped key with the first stopping list's name (PostgreSQL only:
    DISTINCT ON keeps the first by list id), so a hash join against it stays linear."""
    e = entries.alias("e")
    return (sa.select(e.c.value, lists.c.name).ext(distinct_on(e.c.value))
            .join_from(e, lists, lists.c.id == e.c.list_id)
            .where(applies_to_sender(sender_id, e))
            .order_by(e.c.value, lists.c.id).subquery("s"))


def suppressed_among(keys: list[str], sender_id: int | None) -> dict[str, str]:
    """Which of these address keys are stopped now, and by which list: one query per
    claimed chunk (the send-time check: an entry added after launch still stops)."""
    if not keys:
        return {}
    rows = db.session.execute(
        sa.select(entries.c.value, lists.c.name)
        .join_from(entries, lists, lists.c.id == entries.c.list_id)
        .where(among(entries.c.value, sorted(set(keys))), applies_to_sender(sender_id))
        .order_by(lists.c.id)
    ).all()
    found: dict[str, str] = {}
    for value, name in rows:
        found.setdefault(value, name)
    return found


def entries_holding(values: list[str]) -> list[tuple[StopList, StopEntry]]:
    """Every stop-list entry for these address keys or phones, with its list, whoever
    it applies to (the contact card and the recipient lookup show them all; per-sender
    entries name their sender). One probe per value into ix_stop_entries_value."""
    if not values:
        return []
    return [(stop, entry) for stop, entry in db.session.execute(
        sa.select(StopList, StopEntry).join(StopEntry, StopEntry.list_id == StopList.id)
        .where(StopEntry.value.in_(values)).order_by(StopList.id, StopEntry.id)).all()]
