"""Sending limits admins set: receiving-domain groups with their pace, and senders'
warm-up schedules. The send loop enforces them (sending/pacer.py); this module says
what they are and changes them."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from flask_babel import gettext as _

from .extensions import db
from .fielderror import FieldError
from .models import DomainGroup, SenderWarmup
from .states import record


@dataclass(frozen=True)
class Pace:
    key: str  # the Redis name of what is paced together
    label: str  # what the issue row shows ("Gmail", or the domain itself)
    limit: float  # letters per second per relay; 0: none


class Groups:
    """A snapshot of the domain groups, answering "which group, which limit" for a
    recipient's domain without a query (the send loop asks for every letter)."""

    def __init__(self, rows: list[DomainGroup]):
        self._exact: dict[str, Pace] = {}
        self._prefix: list[tuple[str, Pace]] = []  # "hotmail." for "hotmail.*"
        self._other_limit = 0.0
        for g in sorted(rows, key=lambda g: g.position):
            if g.catch_all:
                self._other_limit = float(g.rate_per_second or 0)
                continue
            pace = Pace(f"g{g.id}", g.name, float(g.rate_per_second or 0))
            for domain in parse_domains(g.domains):
                if domain.endswith(".*"):
                    self._prefix.append((domain[:-1], pace))
                else:
                    self._exact.setdefault(domain, pace)
        self._cache: dict[str, Pace] = {}

    @classmethod
    def load(cls) -> Groups:
        return cls(list(db.session.scalars(sa.select(DomainGroup))))

    def of(self, domain: str) -> Pace:
        """A domain in no group is paced on its own, at the catch-all's limit: one
        slow provider never slows the others."""
        pace = self._cache.get(domain)
        if pace is None:
            pace = self._exact.get(domain) or next(
                (p for prefix, p in self._prefix if domain.startswith(prefix)), None
            ) or Pace(f"d:{domain}", domain, self._other_limit)
            if len(self._cache) < 100_000:
                self._cache[domain] = pace
        return pace

    @property
    def limited(self) -> bool:
        """Any limit at all (without one and without a relay cap, no letter waits)."""
        return self._other_limit > 0 or any(p.limit > 0 for p in self._exact.values()) \
            or any(p.limit > 0 for _, p in self._prefix)


def parse_domains(text: str) -> list[str]:
    return [line.strip().lower() for line in (text or "").replace(",", "\n").splitlines() if line.strip()]


class LimitError(FieldError):
    """Bad input on the Pacing page: the field and what is wrong."""


def ordered_groups() -> list[DomainGroup]:
    return list(db.session.scalars(sa.select(DomainGroup).order_by(DomainGroup.position, DomainGroup.id)))


def save_group(group_id: int | None, name: str, domains: str, rate: float, actor: Any) -> DomainGroup:
    """Add or change a group; a domain may belong to one group only. Journalled; the
    caller commits. Runners pick the change up within seconds."""
    name = (name or "").strip()
    if not name or len(name) > 60:
        raise LimitError("name", _("A name of 1–60 characters is required."))
    if not (0 <= rate <= 100_000) or math.isnan(rate):
        raise LimitError("rate", _("The rate must be between 0 and 100000 letters per second."))
    group = db.session.get(DomainGroup, group_id) if group_id else DomainGroup(
        position=(db.session.scalar(sa.select(sa.func.max(DomainGroup.position))) or 0) + 1)
    if group is None:
        raise LimitError("name", _("No such group."))
    listed = parse_domains(domains)
    if not group.catch_all:
        if not listed:
            raise LimitError("domains", _("List at least one domain."))
        for d in listed:
            bare = d[:-2] if d.endswith(".*") else d
            if not bare or any(not part or len(part) > 63 for part in bare.split(".")) or " " in d:
                raise LimitError("domains", _("Not a domain: %(domain)s", domain=d))
        taken = {d: g.name for g in ordered_groups() if g.id != group.id for d in parse_domains(g.domains)}
        clash = [d for d in listed if d in taken]
        if clash:
            raise LimitError("domains", _("%(domain)s is already in %(group)s.", domain=clash[0],
                                                group=taken[clash[0]]))
    clash_name = db.session.scalar(sa.select(DomainGroup.id).where(DomainGroup.name == name))
    if clash_name is not None and clash_name != group.id:
        raise LimitError("name", _("A group with this name exists."))
    group.name, group.rate_per_second = name, float(rate)
    group.domains = "" if group.catch_all else "\n".join(listed)
    db.session.add(group)
    db.session.flush()
    record(None, "pacing_changed", actor=actor, details={"group": name, "rate_per_second": float(rate),
                                                          "domains": listed[:50]})
    return group


def delete_group(group_id: int, actor: Any) -> None:
    group = db.session.get(DomainGroup, group_id)
    if group is None:
        raise LimitError("name", _("No such group."))
    if group.catch_all:
        raise LimitError("name", _("The catch-all group cannot be deleted."))
    record(None, "pacing_changed", actor=actor, details={"group": group.name, "deleted": True})
    db.session.delete(group)


# --- warm-up ----------------------------------------------------------------------

def warmup_of(sender_id: int) -> SenderWarmup | None:
    return db.session.get(SenderWarmup, sender_id)


def daily_cap(warmup: SenderWarmup, day: date) -> int:
    """start × factor^(days since it started); the first day is day 0."""
    days = max((day - warmup.started_on).days, 0)
    return int(min(warmup.start * warmup.factor ** days, 1e12))


def set_warmup(sender_id: int, start: int | None, factor: float, started_on: date, actor: Any) -> None:
    """Give a sender a warm-up schedule, or (start None) lift it. Journalled; the caller commits."""
    row = warmup_of(sender_id)
    if start is None:
        if row is not None:
            db.session.delete(row)
            record(None, "warmup_changed", actor=actor, details={"sender_id": sender_id, "lifted": True})
        return
    if not (1 <= start <= 10_000_000):
        raise LimitError("start", _("The first day's cap must be between 1 and 10000000."))
    if not (1.0 <= factor <= 10.0) or math.isnan(factor):
        raise LimitError("factor", _("The daily factor must be between 1 and 10."))
    if row is None:
        row = SenderWarmup(sender_id=sender_id)
        db.session.add(row)
    row.start, row.factor, row.started_on = start, factor, started_on
    record(None, "warmup_changed", actor=actor, details={"sender_id": sender_id, "start": start,
                                                         "factor": factor, "started_on": started_on.isoformat()})


def next_day(now: datetime) -> datetime:
    """Midnight UTC after `now`: when a capped day's sending continues."""
    return datetime(now.year, now.month, now.day) + timedelta(days=1)
