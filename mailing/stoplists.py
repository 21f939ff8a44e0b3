"""Stop-lists: normalisation of entries and the checks that keep mail from people who must not get it."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import phonenumbers
import sqlalchemy as sa

from .addresses import EmailNotValidError, email_key, key_of, search_form
from .extensions import db
from .models import Contact, StopEntry, StopEvent, StopList, utcnow

SYSTEM_LISTS = {
    "unsubscribed": "Unsubscribed from all",
    "blocked": "Blocked manually",
    "sender_unsubscribed": "Unsubscribed from senders",
    # Addresses that bounced for good (mailing/bounces.py): a hard bounce, or soft bounces
    # of several issues in a row.
    "undeliverable": "Undeliverable",
}


def ensure_system_lists() -> None:
    existing = set(db.session.scalars(sa.select(StopList.code).where(StopList.code.is_not(None))))
    for code, name in SYSTEM_LISTS.items():
        if code not in existing:
            db.session.add(StopList(code=code, name=name))


def add_entry(list_code: str, email: str, *, source: str, sender_id: int | None = None,
              actor_id: int | None = None) -> bool:
    """Put one address in a system list; True when it was not there yet. Idempotent."""
    stop = db.session.scalar(sa.select(StopList).where(StopList.code == list_code))
    if stop is None:
        ensure_system_lists()
        db.session.flush()
        stop = db.session.scalar(sa.select(StopList).where(StopList.code == list_code))
    value = key_of(email)  # an address we sent to, or a key already
    exists = db.session.scalar(
        sa.select(StopEntry.id).where(StopEntry.list_id == stop.id, StopEntry.value == value,
                                      StopEntry.sender_id.is_(None) if sender_id is None
                                      else StopEntry.sender_id == sender_id))
    if exists:
        return False
    db.session.add(StopEntry(list_id=stop.id, kind="email", value=value, sender_id=sender_id,
                             source=source, created_by_id=actor_id))
    return True


def unsubscribe_delivery(delivery: Any, *, source: str) -> bool:
    """The recipient of `delivery` asked to stop: every later letter is suppressed. With
    per-sender unsubscribes on, only this sender's letters stop (complaints stop all)."""
    from . import settings
    from .models import Issue

    sender_id = None
    if settings.get("per_sender_unsubscribe") and source != "complaint":
        sender_id = db.session.scalar(sa.select(Issue.sender_id).where(Issue.id == delivery.issue_id))
    code = "sender_unsubscribed" if sender_id else "unsubscribed"
    added = add_entry(code, delivery.email_key, source=source, sender_id=sender_id)
    if added:
        stop = db.session.scalar(sa.select(StopList).where(StopList.code == code))
        db.session.add(StopEvent(list_id=stop.id, action="add", value=delivery.email_key,
                                 sender_id=sender_id, source=source, actor_label=delivery.email))
        if source != "complaint":  # a complaint is told as such (mailing/bounces.py)
            from . import webhooks

            webhooks.recipients("unsubscribed", [webhooks.recipient(
                delivery.id, delivery.issue_id, delivery.email, "unsubscribed", source)])
    db.session.commit()
    return added


# --- pasted lists -------------------------------------------------------------

MAX_ITEM = 254
_SPLIT = re.compile(r"[,;]")


@dataclass
class Rejected:
    line: int
    text: str
    reason: str


@dataclass
class Report:
    added: int = 0
    already: int = 0
    rejected: list[Rejected] = field(default_factory=list)


def parse_item(text: str, region: str) -> tuple[str, str]:
    """(kind, value) of one pasted item, or ValueError saying why not. An address is
    kept as its match key, so an entry stops every case and IDN variant of it."""
    if len(text) > MAX_ITEM:
        raise ValueError(f"longer than {MAX_ITEM} characters")
    if "@" in text:
        try:
            return "email", email_key(text)
        except EmailNotValidError as exc:
            raise ValueError(str(exc)) from None
    if not re.fullmatch(r"[+\d\s().-]{5,}", text):
        raise ValueError("neither an email address nor a phone number")
    return "phone", normalise_phone(text, region)


def normalise_phone(value: str, region: str) -> str:
    """E.164, or ValueError saying why the number is not one."""
    try:
        number = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException as exc:
        raise ValueError(f"not a phone number: {exc}") from None
    if not phonenumbers.is_valid_number(number):
        raise ValueError("not a valid phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def parse_paste(text: str, region: str) -> tuple[list[tuple[str, str]], list[Rejected]]:
    """One item per line or separated by commas/semicolons; bad and repeated items are
    reported with their line number."""
    items: list[tuple[str, str]] = []
    rejected: list[Rejected] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        for raw in _SPLIT.split(line):
            item = raw.strip()
            if not item:
                continue
            try:
                kind, value = parse_item(item, region)
            except ValueError as exc:
                rejected.append(Rejected(number, item[:80], str(exc)))
                continue
            if value in seen:
                rejected.append(Rejected(number, item[:80], f"repeated (first on line {seen[value]})"))
                continue
            seen[value] = number
            items.append((kind, value))
    return items, rejected


def _existing(list_id: int, values: list[str], sender_id: int | None) -> set[str]:
    found: set[str] = set()
    for start in range(0, len(values), 5000):
        chunk = values[start:start + 5000]
        found.update(db.session.scalars(sa.select(StopEntry.value).where(
            StopEntry.list_id == list_id, StopEntry.value.in_(chunk),
            StopEntry.sender_id.is_(None) if sender_id is None else StopEntry.sender_id == sender_id)))
    return found


def add_pasted(stop: StopList, text: str, *, actor: Any, source: str, region: str,
               sender_id: int | None = None) -> Report:
    """Add every good item in one transaction (all or nothing) and log each addition."""
    items, rejected = parse_paste(text, region)
    existing = _existing(stop.id, [v for _k, v in items], sender_id)
    new = [(k, v) for k, v in items if v not in existing]
    now = utcnow()
    actor_id, label = getattr(actor, "id", None), getattr(actor, "email", None) or str(actor)
    try:
        for start in range(0, len(new), 20_000):
            chunk = new[start:start + 20_000]
            db.session.execute(sa.insert(StopEntry), [
                {"list_id": stop.id, "kind": k, "value": v, "sender_id": sender_id, "source": source,
                 "created_by_id": actor_id, "created_at": now} for k, v in chunk])
            db.session.execute(sa.insert(StopEvent), [
                {"list_id": stop.id, "action": "add", "value": v, "sender_id": sender_id, "source": source,
                 "actor_id": actor_id, "actor_label": label, "created_at": now} for _k, v in chunk])
        db.session.commit()
    except Exception:
        db.session.rollback()
        raise
    return Report(added=len(new), already=len(items) - len(new), rejected=rejected)


class QuotaExceeded(Exception):
    def __init__(self, allowed: int, asked: int):
        super().__init__(f"Only {allowed} more addresses may leave Unsubscribed from all this month; "
                         f"{asked} were asked.")
        self.allowed = allowed
        self.asked = asked


def month_start(now: datetime) -> datetime:
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def removal_quota(now: datetime | None = None) -> tuple[int, int]:
    """(limit, used) for removals from Unsubscribed from all this calendar month:
    0.1 % of the contact base."""
    now = now or utcnow()
    base = db.session.scalar(sa.select(sa.func.count()).select_from(Contact)) or 0
    unsub = db.session.scalar(sa.select(StopList.id).where(StopList.code == "unsubscribed"))
    used = db.session.scalar(sa.select(sa.func.count()).select_from(StopEvent).where(
        StopEvent.list_id == unsub, StopEvent.action == "remove",
        StopEvent.created_at >= month_start(now))) or 0
    return base // 1000, used


def remove_entries(stop: StopList, ids: list[int], *, actor: Any, source: str,
                   now: datetime | None = None) -> int:
    """Remove ticked entries; from Unsubscribed from all the monthly quota applies and an
    attempt over it is refused whole."""
    now = now or utcnow()
    rows = db.session.execute(sa.select(StopEntry.id, StopEntry.value, StopEntry.sender_id).where(
        StopEntry.list_id == stop.id, StopEntry.id.in_(ids))).all()
    if stop.code == "unsubscribed":
        limit, used = removal_quota(now)
        if used + len(rows) > limit:
            db.session.rollback()
            raise QuotaExceeded(max(limit - used, 0), len(rows))
    actor_id, label = getattr(actor, "id", None), getattr(actor, "email", None) or str(actor)
    if rows:
        db.session.execute(sa.insert(StopEvent), [
            {"list_id": stop.id, "action": "remove", "value": v, "sender_id": sid, "source": source,
             "actor_id": actor_id, "actor_label": label, "created_at": now} for _i, v, sid in rows])
        db.session.execute(sa.delete(StopEntry).where(StopEntry.id.in_([r[0] for r in rows])))
    db.session.commit()
    return len(rows)


class SystemListError(Exception):
    pass


def clear(stop: StopList, *, actor: Any, source: str) -> int:
    """Empty Blocked manually in one action; every removal is logged (set-based)."""
    if stop.code != "blocked":
        raise SystemListError("Only Blocked manually can be cleared.")
    label = getattr(actor, "email", None) or str(actor)
    db.session.execute(sa.insert(StopEvent).from_select(
        ["list_id", "action", "value", "sender_id", "source", "actor_id", "actor_label", "created_at"],
        sa.select(StopEntry.list_id, sa.literal("remove"), StopEntry.value, StopEntry.sender_id,
                  sa.literal(source), sa.literal(getattr(actor, "id", None), sa.Integer),
                  sa.literal(label), sa.literal(utcnow(), sa.DateTime))
        .where(StopEntry.list_id == stop.id)))
    n = db.session.execute(sa.delete(StopEntry).where(StopEntry.list_id == stop.id)).rowcount
    db.session.commit()
    return n


def rename(stop: StopList, name: str) -> None:
    if stop.system:
        raise SystemListError("System stop-lists cannot be renamed.")
    stop.name = name
    db.session.commit()


def delete(stop: StopList) -> None:
    if stop.system:
        raise SystemListError("System stop-lists cannot be deleted.")
    db.session.delete(stop)
    db.session.commit()


def counts() -> dict[int, int]:
    return dict(db.session.execute(sa.select(StopEntry.list_id, sa.func.count()).group_by(StopEntry.list_id)).all())


def entries_query(stop: StopList, q: str = "") -> sa.Select:
    """(entry, in the contact base) rows of a list (unordered), `q` in the value if given."""
    in_base = sa.exists().where(sa.or_(Contact.email_key == StopEntry.value, Contact.phone == StopEntry.value))
    stmt = sa.select(StopEntry, in_base.label("in_base")).where(StopEntry.list_id == stop.id)
    if q:
        stmt = stmt.where(StopEntry.value.contains(search_form(q), autoescape=True))
    return stmt


def entries_page(stop: StopList, q: str = "", page: int = 1, per_page: int = 100) -> tuple[list, bool]:
    """Entries newest first, with whether each is in the contact base (an outer join,
    so a page costs one query however large the list)."""
    rows = db.session.execute(entries_query(stop, q).order_by(StopEntry.id.desc()).offset((page - 1) * per_page)
                              .limit(per_page + 1)).all()
    return rows[:per_page], len(rows) > per_page
