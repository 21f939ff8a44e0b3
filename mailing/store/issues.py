"""Issue-row queries: the Outgoing list and its progress rows, and the ones the engine
runs many times a second (each reads one row by its primary key and nothing else)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
import sqlalchemy.orm as so

from .. import clock, queueing
from ..enums import DeliveryState, IssueStatus
from ..extensions import db
from ..models import Delivery, Issue, JournalEvent, User, utcnow
from ..sending.policy import Spread
from ..states import FINAL

issues = Issue.__table__

S = IssueStatus
PAGE = 50

# Outgoing's filters: the live ones together, each status, and the finished tabs.
OUTGOING_FILTERS = {
    "": None,  # everything not final
    "draft": [S.DRAFT], "scheduled": [S.SCHEDULED], "moderation": [S.MODERATION],
    "accepted": [S.ACCEPTED], "sending": [S.SENDING, S.STOPPING], "paused": [S.PAUSED],
    "interrupted": [S.INTERRUPTED], "sent": [S.SENT], "cancelled": [S.CANCELLED],
    "finished": [S.SENT, S.CANCELLED], "all": list(S),
}

# Outgoing's orders. "status" follows an issue's life: what needs a person first.
_STATUS_ORDER = [S.MODERATION, S.INTERRUPTED, S.SENDING, S.STOPPING, S.ACCEPTED, S.PAUSED, S.SCHEDULED,
                 S.DRAFT, S.SENT, S.CANCELLED]
OUTGOING_SORTS = {
    "created": lambda: [Issue.id.desc()],
    "send_at": lambda: [Issue.send_at.is_(None), Issue.send_at.desc(), Issue.id.desc()],
    "status": lambda: [sa.case({s.value: i for i, s in enumerate(_STATUS_ORDER)}, value=Issue.status,
                               else_=len(_STATUS_ORDER)), Issue.id.desc()],
}


def outgoing_page(status: str, page: int, q: str = "", sort: str = "created") -> tuple[list[Issue], bool]:
    """One page of issues, newest first unless `sort` says otherwise, with `q` in the
    title if given; keyset-free OFFSET is fine at 50 a page thanks to the status index,
    and no delivery is touched."""
    query = outgoing_query(status, q).options(so.joinedload(Issue.sender), so.joinedload(Issue.contact_list)) \
        .order_by(*OUTGOING_SORTS[sort]())
    rows = list(db.session.scalars(query.offset((page - 1) * PAGE).limit(PAGE + 1)))
    return rows[:PAGE], len(rows) > PAGE


def outgoing_query(status: str, q: str = "") -> sa.Select:
    """The issues one of Outgoing's filters shows (unordered), with `q` in the title if given."""
    query = sa.select(Issue)
    wanted = OUTGOING_FILTERS[status]
    if wanted is None:
        query = query.where(Issue.status.not_in([s.value for s in FINAL]))
    else:
        query = query.where(Issue.status.in_([s.value for s in wanted]))
    if q:
        query = query.where(Issue.subject.icontains(q, autoescape=True))
    return query


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
    last_activity: datetime | None = None  # a triggered mailing: when it last sent


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
        last_activity=_last_activity(issue) if issue.kind == "triggered" else None,
    )


def _last_activity(issue: Issue) -> datetime | None:
    at = queueing.last_activity(issue.id)
    return datetime.fromtimestamp(at, UTC).replace(tzinfo=None) if at else None


def _next_portion(issue: Issue) -> datetime | None:
    """When a spread issue's next portion leaves (no query: the row polls this)."""
    spread = Spread.of(issue)
    return spread.next_at(clock.now()) if spread else None


def status_of(issue_id: int) -> str | None:
    """The status as committed now (not the session's cached object)."""
    return db.session.execute(sa.select(issues.c.status).where(issues.c.id == issue_id)).scalar_one_or_none()


def done_count(issue_id: int) -> int:
    """Recipients with a final state, from the counters `record` moves (no count over
    the deliveries)."""
    c = issues.c
    return db.session.execute(
        sa.select(c.sent_count + c.bounced_count + c.failed_count + c.suppressed_count + c.stopped_count)
        .where(c.id == issue_id)).scalar_one()


def held_rules(issue_id: int) -> list[dict[str, Any]]:
    """The rules the pre-send check failed, from the issue's latest `hold` journal row (one
    indexed read; only rows on moderation ask)."""
    details = db.session.scalar(sa.select(JournalEvent.details).where(
        JournalEvent.issue_id == issue_id, JournalEvent.event == "hold").order_by(JournalEvent.id.desc()).limit(1))
    return list((details or {}).get("failed_rules", []))


def moderation_queue() -> list[dict[str, Any]]:
    """Held issues, oldest first, each with the rules it failed (from its latest `hold`
    journal row), the first ten recipients and who launched it. A handful of issues
    wait at a time: three small indexed reads each."""
    held = db.session.scalars(sa.select(Issue).where(Issue.status == IssueStatus.MODERATION)
                              .order_by(Issue.updated_at, Issue.id)).all()
    items = []
    for issue in held:
        hold = db.session.scalar(sa.select(JournalEvent).where(
            JournalEvent.issue_id == issue.id, JournalEvent.event == "hold").order_by(JournalEvent.id.desc()).limit(1))
        sample = db.session.execute(sa.select(Delivery.email, Delivery.name).where(
            Delivery.issue_id == issue.id, Delivery.state == DeliveryState.PENDING)
            .order_by(Delivery.id).limit(10)).all()
        launcher = db.session.get(User, issue.launched_by_id) if issue.launched_by_id else None
        items.append({"issue": issue, "failures": (hold.details or {}).get("failed_rules", []) if hold else [],
                      "sample": sample, "launcher": launcher})
    return items
