"""Journal queries: an issue's history and the journal page (newest first, by id)."""

from __future__ import annotations

import sqlalchemy as sa

from ..extensions import db
from ..models import JournalEvent

PAGE = 50


def issue_journal(issue_id: int, limit: int = 200) -> list[JournalEvent]:
    return list(db.session.scalars(
        sa.select(JournalEvent).where(JournalEvent.issue_id == issue_id)
        .order_by(JournalEvent.id.desc()).limit(limit)))


def events_query(issue: int | None = None, actor: str | None = None, event: str | None = None) -> sa.Select:
    """Journal rows newest first, narrowed to an issue, an actor (part of the label) or a kind."""
    q = sa.select(JournalEvent).order_by(JournalEvent.id.desc())
    if issue is not None:  # parsed by the caller: digits only, bounded
        q = q.where(JournalEvent.issue_id == issue)
    if actor:
        q = q.where(JournalEvent.actor_label.contains(actor, autoescape=True))
    if event:
        q = q.where(JournalEvent.event == event)
    return q


def journal_page(page: int, issue: int | None = None, actor: str | None = None,
                 event: str | None = None) -> tuple[list[JournalEvent], bool]:
    q = events_query(issue, actor, event)
    rows = list(db.session.scalars(q.offset((page - 1) * PAGE).limit(PAGE + 1)))
    return rows[:PAGE], len(rows) > PAGE


def journal_event_types() -> list[str]:
    return list(db.session.scalars(sa.select(JournalEvent.event).distinct().order_by(JournalEvent.event)))


def events_of(*events: str, limit: int = 50) -> list[JournalEvent]:
    """The latest account-wide events of these kinds (package top-ups, ...), newest first."""
    return list(db.session.scalars(
        sa.select(JournalEvent).where(JournalEvent.event.in_(events)).order_by(JournalEvent.id.desc()).limit(limit)))
