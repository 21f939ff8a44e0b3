"""Queries over the reports that came back after the send (models.BounceReport): what the
Server response and Report tabs show of them, and the admins' quarantine."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from ..enums import DeliveryState as D
from ..extensions import db
from ..models import BounceReport, Delivery

reports = BounceReport.__table__
PAGE = 50


@dataclass
class LateGroup:
    kind: str
    status: str | None
    count: int
    example: str | None


def late_groups(issue_id: int) -> list[LateGroup]:
    """An issue's applied late reports by kind and status, most frequent first, with an
    example diagnostic (the (issue, received) index narrows them to the issue)."""
    r = reports.c
    rows = db.session.execute(
        sa.select(r.kind, r.status, sa.func.count(), sa.func.max(r.diagnostic))
        .where(r.issue_id == issue_id, r.outcome == "applied")
        .group_by(r.kind, r.status).order_by(sa.func.count().desc())).all()
    return [LateGroup(*row) for row in rows]


def _hour(column: sa.ColumnElement) -> sa.ColumnElement:
    if db.engine.dialect.name == "postgresql":
        return sa.func.to_char(sa.func.date_trunc("hour", column), "YYYY-MM-DD HH24:00")
    return sa.func.strftime("%Y-%m-%d %H:00", column)


@dataclass
class HourRow:
    hour: str
    immediate: int = 0  # the relay refused at once (5xx)
    late_hard: int = 0
    late_soft: int = 0
    complaints: int = 0


def over_time(issue_id: int) -> list[HourRow]:
    """Bounces (immediate and late, hard and soft) and complaints per hour."""
    d, r = Delivery.__table__.c, reports.c
    hours: dict[str, HourRow] = {}
    immediate = db.session.execute(
        sa.select(_hour(d.updated_at).label("h"), sa.func.count())
        .where(d.issue_id == issue_id, d.state == D.BOUNCED, d.reply_code >= 500).group_by("h")).all()
    for h, n in immediate:
        hours.setdefault(h, HourRow(h)).immediate = n
    late = db.session.execute(
        sa.select(_hour(r.received_at).label("h"), r.kind, sa.func.count())
        .where(r.issue_id == issue_id, r.outcome == "applied").group_by("h", r.kind)).all()
    for h, kind, n in late:
        row = hours.setdefault(h, HourRow(h))
        if kind == "hard":
            row.late_hard = n
        elif kind == "soft":
            row.late_soft = n
        elif kind == "complaint":
            row.complaints = n
    return [hours[h] for h in sorted(hours)]


def quarantined(page: int = 1) -> tuple[list, bool]:
    """Quarantined reports, newest first (the (outcome, id) index), one page."""
    rows = db.session.execute(
        sa.select(reports).where(reports.c.outcome == "quarantined").order_by(reports.c.id.desc())
        .offset((page - 1) * PAGE).limit(PAGE + 1)).all()
    return rows[:PAGE], len(rows) > PAGE


def recent_applied(limit: int = 50) -> list:
    return db.session.execute(
        sa.select(reports.c.id, reports.c.kind, reports.c.issue_id, reports.c.email_key, reports.c.status,
                  reports.c.diagnostic, reports.c.source, reports.c.received_at)
        .where(reports.c.outcome == "applied").order_by(reports.c.id.desc()).limit(limit)).all()


def counts() -> dict[str, int]:
    return dict(db.session.execute(sa.select(reports.c.outcome, sa.func.count()).group_by(reports.c.outcome)).all())


def delete_quarantined(report_id: int) -> bool:
    """An admin has read a quarantined report: its row goes (an applied one never does:
    it is what makes a replay a no-op). Caller commits."""
    return bool(db.session.execute(sa.delete(reports).where(reports.c.id == report_id,
                                                            reports.c.outcome == "quarantined")).rowcount)
