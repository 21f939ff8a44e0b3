"""Named queries for the pages: each says why it is shaped the way it is."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
import sqlalchemy.orm as so

from . import clock, queueing, settings
from .addresses import search_form
from .enums import IssueStatus
from .extensions import db
from .models import Delivery, Issue, JournalEvent, utcnow
from .sending.policy import Spread
from .states import FINAL
from .store.stoplists import applies_to_sender

S = IssueStatus
PAGE = 50

# Outgoing's filters: the live ones together, each status, and the finished tabs.
OUTGOING_FILTERS = {
    "": None,  # everything not final
    "draft": [S.DRAFT], "scheduled": [S.SCHEDULED], "moderation": [S.MODERATION],
    "accepted": [S.ACCEPTED], "sending": [S.SENDING, S.STOPPING], "paused": [S.PAUSED],
    "interrupted": [S.INTERRUPTED], "sent": [S.SENT], "cancelled": [S.CANCELLED],
}


def outgoing_page(status: str, page: int) -> tuple[list[Issue], bool]:
    """One page of issues, newest first; keyset-free OFFSET is fine at 50 a page
    thanks to the status index, and no delivery is touched."""
    q = sa.select(Issue).options(so.joinedload(Issue.sender), so.joinedload(Issue.contact_list)) \
        .order_by(Issue.id.desc())
    wanted = OUTGOING_FILTERS[status]
    if wanted is None:
        q = q.where(Issue.status.not_in([s.value for s in FINAL]))
    else:
        q = q.where(Issue.status.in_([s.value for s in wanted]))
    rows = list(db.session.scalars(q.offset((page - 1) * PAGE).limit(PAGE + 1)))
    return rows[:PAGE], len(rows) > PAGE


@dataclass
class Progress:
    percent: int
    sent: int
    failed: int
    suppressed: int
    stopped: int
    remaining: int
    rate: float
    eta_seconds: int | None
    countdown: int | None  # seconds until an accepted issue starts
    live: bool
    next_portion_at: datetime | None = None


def progress(issue: Issue) -> Progress:
    """From the issue's counters (moved with the deliveries) and Redis' rate samples."""
    r = queueing.rate(issue.id) if issue.status == S.SENDING else 0.0
    remaining = issue.remaining
    eta = int(remaining / r) if r > 0 and remaining else None
    countdown = None
    if issue.status == S.ACCEPTED and issue.send_at:
        countdown = max(int((issue.send_at - utcnow()).total_seconds() + 0.999), 0)
    return Progress(
        percent=issue.percent, sent=issue.sent_count,
        failed=issue.bounced_count + issue.failed_count, suppressed=issue.suppressed_count,
        stopped=issue.stopped_count, remaining=remaining, rate=round(r, 1), eta_seconds=eta,
        countdown=countdown, live=issue.status in (S.ACCEPTED, S.SENDING, S.STOPPING),
        next_portion_at=_next_portion(issue) if issue.status in (S.SENDING, S.PAUSED) else None,
    )


def _next_portion(issue: Issue) -> datetime | None:
    """When a spread issue's next portion leaves (no query: the row polls this)."""
    spread = Spread.of(issue)
    return spread.next_at(clock.now()) if spread else None


def edit_lock_reason(issue: Issue) -> str | None:
    """Why the editor is locked, or None when the issue may be edited."""
    from flask_babel import gettext as _

    if issue.status == S.DRAFT:
        return None
    if issue.status == S.SCHEDULED:
        if issue.send_at is None:
            return None
        lock = timedelta(minutes=float(settings.get("edit_lock_minutes")))
        if utcnow() < issue.send_at - lock:
            return None
        return _("A scheduled issue is locked %(minutes)s minutes before it is sent; cancel it to change it.",
                 minutes=int(lock.total_seconds() // 60))
    return _("The issue has been launched; only drafts and scheduled issues can be edited.")


def issue_journal(issue_id: int, limit: int = 200) -> list[JournalEvent]:
    return list(db.session.scalars(
        sa.select(JournalEvent).where(JournalEvent.issue_id == issue_id)
        .order_by(JournalEvent.id.desc()).limit(limit)))


def journal_page(page: int, issue: int | None = None, actor: str | None = None,
                 event: str | None = None) -> tuple[list[JournalEvent], bool]:
    q = sa.select(JournalEvent).order_by(JournalEvent.id.desc())
    if issue is not None:  # parsed by the view (views/params.py): digits only, bounded
        q = q.where(JournalEvent.issue_id == issue)
    if actor:
        q = q.where(JournalEvent.actor_label.contains(actor, autoescape=True))
    if event:
        q = q.where(JournalEvent.event == event)
    rows = list(db.session.scalars(q.offset((page - 1) * PAGE).limit(PAGE + 1)))
    return rows[:PAGE], len(rows) > PAGE


def journal_event_types() -> list[str]:
    return list(db.session.scalars(sa.select(JournalEvent.event).distinct().order_by(JournalEvent.event)))


def delivery_states(issue_id: int) -> dict[str, int]:
    d = Delivery.__table__
    return dict(db.session.execute(
        sa.select(d.c.state, sa.func.count()).where(d.c.issue_id == issue_id).group_by(d.c.state)).all())


@dataclass
class ReplyGroup:
    code: int | None
    enhanced: str | None
    count: int
    example: str | None


def reply_groups(issue_id: int) -> list[ReplyGroup]:
    """The relay's replies grouped by code and enhanced code, with an example text."""
    d = Delivery.__table__
    rows = db.session.execute(
        sa.select(d.c.reply_code, d.c.reply_enhanced, sa.func.count(), sa.func.max(d.c.reply_text))
        .where(d.c.issue_id == issue_id, d.c.reply_code.is_not(None))
        .group_by(d.c.reply_code, d.c.reply_enhanced)
        .order_by(sa.func.count().desc())
    ).all()
    return [ReplyGroup(*r) for r in rows]


def reply_recipients(issue_id: int, *, code: int | None = None, enhanced: str | None = None,
                     q: str | None = None, page: int = 1, per_page: int = 100) -> tuple[list, bool]:
    """The recipients of one reply group, or those whose address contains `q`."""
    d = Delivery.__table__
    stmt = sa.select(d.c.email, d.c.name, d.c.state, d.c.reply_code, d.c.reply_enhanced, d.c.reply_text,
                     d.c.reason, d.c.updated_at).where(d.c.issue_id == issue_id)
    if code is not None:
        stmt = stmt.where(d.c.reply_code == code)
        stmt = stmt.where(d.c.reply_enhanced == enhanced if enhanced else d.c.reply_enhanced.is_(None))
    if q:
        stmt = stmt.where(d.c.email_key.contains(search_form(q), autoescape=True))
    rows = db.session.execute(stmt.order_by(d.c.id).offset((page - 1) * per_page).limit(per_page + 1)).all()
    return rows[:per_page], len(rows) > per_page


def sent_per_minute(issue_id: int) -> list[tuple[str, int]]:
    """Letters accepted by the relay per minute, for the Report tab's chart."""
    d = Delivery.__table__
    if db.engine.dialect.name == "postgresql":
        minute = sa.func.to_char(sa.func.date_trunc("minute", d.c.sent_at), "YYYY-MM-DD HH24:MI")
    else:
        minute = sa.func.strftime("%Y-%m-%d %H:%M", d.c.sent_at)
    rows = db.session.execute(
        sa.select(minute.label("m"), sa.func.count()).where(d.c.issue_id == issue_id, d.c.sent_at.is_not(None))
        .group_by("m").order_by("m")).all()
    return [(m, n) for m, n in rows]


@dataclass
class TimelineRow:
    issue_id: int
    subject: str
    issue_status: str
    state: str
    at: datetime | None
    reply: str | None
    why: str


def _why(state: str, reason: str | None, issue_status: str, attempts: int, next_at: datetime | None) -> str:
    """Why nothing was sent (or what happened), in words support staff can repeat."""
    if state == "sent":
        return "delivered to the relay"
    if state == "suppressed":
        return f"suppressed by the stop-list “{reason}”"
    if state == "stopped_manually":
        return "stopped manually (the issue was cancelled before this letter's turn)"
    if state == "bounced":
        return "bounced: the relay refused it permanently"
    if state == "failed":
        return f"failed: {reason}" if reason else f"failed after {attempts} attempts"
    if state == "deferred":
        return f"deferred by the relay, retrying at {next_at:%Y-%m-%d %H:%M} UTC" if next_at else "deferred, retrying"
    if issue_status == "cancelled":
        return "the issue was cancelled"
    if issue_status in ("paused", "interrupted"):
        return f"waiting: the issue is {issue_status}"
    return "waiting for its turn"


def recipient_timeline(q: str) -> tuple[list[TimelineRow], list]:
    """One person's deliveries across issues, newest first, and the stop-lists they are in.
    An address is matched by its key (any case or IDN variant finds the person); a phone
    through the contact base."""
    from .models import Contact, StopEntry, StopList
    from .stoplists import parse_item

    try:
        kind, value = parse_item(q, "RU")
    except ValueError:
        kind, value = "email", q.strip().lower()
    emails = [value] if kind == "email" else list(db.session.scalars(
        sa.select(Contact.email_key).where(Contact.phone == value, Contact.email_key.is_not(None))))
    d = Delivery.__table__
    rows = db.session.execute(
        sa.select(d.c.issue_id, Issue.subject, Issue.status, d.c.state, d.c.updated_at, d.c.sent_at,
                  d.c.reply_code, d.c.reply_enhanced, d.c.reply_text, d.c.reason, d.c.attempts,
                  d.c.next_attempt_at)
        .join(Issue, Issue.id == d.c.issue_id).where(d.c.email_key.in_(emails))
        .order_by(d.c.updated_at.desc().nulls_last(), d.c.id.desc()).limit(500)).all() if emails else []
    timeline = [TimelineRow(r.issue_id, r.subject, r.status, r.state, r.sent_at or r.updated_at,
                            f"{r.reply_code} {r.reply_enhanced or ''} {r.reply_text or ''}".strip() if r.reply_code else None,
                            _why(r.state, r.reason, r.status, r.attempts, r.next_attempt_at)) for r in rows]
    values = emails + ([value] if kind == "phone" else [])
    stops = db.session.execute(sa.select(StopList.name, StopEntry.value, StopEntry.created_at, StopEntry.source)
                               .join(StopList).where(StopEntry.value.in_(values))).all() if values else []
    return timeline, stops


def audience_preview(issue: Issue) -> dict:
    """Who will get it: the list's size, how many each stop-list excludes, and how many
    addresses need a relay with SMTPUTF8, before launch. Stop-lists match address keys."""
    from .models import Contact, StopEntry, StopList, list_members

    if issue.list_id is None:
        return {"members": 0, "excluded": [], "recipients": 0, "international": 0}
    members_q = (sa.select(sa.func.count()).select_from(list_members)
                 .join(Contact, Contact.id == list_members.c.contact_id)
                 .where(list_members.c.list_id == issue.list_id, Contact.email_key.is_not(None)))
    members = db.session.scalar(members_q) or 0
    # A key's domain is its A-label, so a key with non-ASCII characters has a non-ASCII
    # local part: more octets than characters.
    octets = (sa.func.octet_length(Contact.email_key) if db.engine.dialect.name == "postgresql"
              else sa.func.length(sa.cast(Contact.email_key, sa.LargeBinary)))
    international = db.session.scalar(members_q.where(octets != sa.func.length(Contact.email_key))) or 0
    applies = sa.and_(StopEntry.value == Contact.email_key, applies_to_sender(issue.sender_id))
    excluded = db.session.execute(
        sa.select(StopList.name, sa.func.count(sa.distinct(Contact.id)))
        .select_from(list_members).join(Contact, Contact.id == list_members.c.contact_id)
        .join(StopEntry, applies).join(StopList, StopList.id == StopEntry.list_id)
        .where(list_members.c.list_id == issue.list_id).group_by(StopList.name)).all()
    blocked_any = db.session.scalar(
        sa.select(sa.func.count(sa.distinct(Contact.id))).select_from(list_members)
        .join(Contact, Contact.id == list_members.c.contact_id).join(StopEntry, applies)
        .where(list_members.c.list_id == issue.list_id)) or 0
    return {"members": members, "excluded": excluded, "recipients": members - blocked_any,
            "international": international}
