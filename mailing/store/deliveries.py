"""Delivery queries: forming an issue's audience, claiming recipients under a lease,
recording the relay's replies, and what the pages read about recipients.

None of these commits: the caller (a use case in lifecycle, or the sending runner,
which is the use case of one send) owns the transaction.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from .. import webhooks
from ..addresses import search_form
from ..enums import OPEN_STATES, IssueStatus
from ..enums import DeliveryState as D
from ..extensions import db
from ..models import Contact, Delivery, Issue, list_members, utcnow
from ..stoplists import parse_item
from . import among
from .stoplists import entries_holding, first_stopping_list, stopped_keys, stopping_lists_by_key

deliveries = Delivery.__table__
issues = Issue.__table__
contacts = Contact.__table__

# Which issue counter a final delivery state moves.
COUNTER = {
    D.SENT: "sent_count",
    D.BOUNCED: "bounced_count",
    D.FAILED: "failed_count",
    D.SUPPRESSED: "suppressed_count",
    D.STOPPED: "stopped_count",
}


# --- forming the audience ------------------------------------------------------

def materialise(issue: Issue) -> dict[str, int]:
    """Create one delivery per list member in one pass (no Python loop), and set the
    issue's counters. Members already in an applicable stop-list are written as
    `suppressed` with the name of the first such list (by id) as the reason."""
    if db.engine.dialect.name == "postgresql":
        total, suppressed = _materialise_joined(issue)
    else:
        total, suppressed = _materialise_then_stop(issue)
    db.session.execute(
        sa.update(issues).where(issues.c.id == issue.id).values(
            total=total, suppressed_count=suppressed, sent_count=0,
            bounced_count=0, failed_count=0, stopped_count=0,
        )
    )
    return {"total": total, "suppressed": suppressed}


_COLUMNS = ["issue_id", "contact_id", "email", "email_key", "name", "state", "reason", "attempts", "updated_at"]


def _members(issue: Issue) -> Any:
    """The list's members that have an address (a contact may hold only a phone); for a
    chain step or a resend, narrowed by its audience rule (see `follow_up`)."""
    m, c = list_members, contacts
    q = (sa.select().select_from(m.join(c, c.c.id == m.c.contact_id))
         .where(m.c.list_id == issue.list_id, c.c.email.is_not(None)))
    source, rule = follow_up(issue)
    return q if source is None else q.where(audience_rule(source, rule, c.c.id))


# A follow-up's audience rules, over the deliveries of the issue it follows: everyone on
# the list; those it was sent to; those it did not reach (failed, or stopped before their
# turn). Whoever bounced there is left out of every rule: the address refused for good.
AUDIENCE_RULES = ("all", "sent", "not_reached")
NOT_REACHED = (D.FAILED.value, D.STOPPED.value)


def follow_up(issue: Issue) -> tuple[int | None, str]:
    """(the issue whose recipients decide this one's audience, the rule), or (None, "all")."""
    if issue.chain_parent_id is not None:
        return issue.chain_parent_id, issue.chain_audience or "all"
    if issue.resent_from_id is not None:
        return issue.resent_from_id, issue.resend_audience or "all"
    return None, "all"


def audience_rule(source_id: int, rule: str, contact_id: Any) -> Any:
    """A condition on `contact_id` (a list member) applying `rule` to `source_id`'s
    deliveries; correlated EXISTS probes, so a NULL contact_id never turns NOT IN empty."""
    d = deliveries.alias("src")
    of = sa.and_(d.c.issue_id == source_id, d.c.contact_id == contact_id)
    if rule == "sent":
        return sa.exists().where(of, d.c.state == D.SENT.value)
    if rule == "not_reached":
        return sa.exists().where(of, d.c.state.in_(NOT_REACHED))
    return ~sa.exists().where(of, d.c.state == D.BOUNCED.value)


def follow_up_count(list_id: int, sender_id: int | None, source_id: int, rule: str) -> int:
    """How many a follow-up of `source_id` with `rule` would be sent to now: the list's
    members with an address, narrowed by the rule, less those an applicable stop-list holds
    (what the resend dialog shows before the user chooses)."""
    m, c = list_members, contacts
    return db.session.scalar(
        sa.select(sa.func.count()).select_from(m.join(c, c.c.id == m.c.contact_id))
        .where(m.c.list_id == list_id, c.c.email.is_not(None), audience_rule(source_id, rule, c.c.id),
               c.c.email_key.not_in(stopped_keys(sender_id)))) or 0


def _insert_counted(rows: Any) -> Any:
    """INSERT … SELECT whose row count is kept: psycopg's is gone once SQLAlchemy closes
    a cursor that returns no rows, unless asked to keep it."""
    return sa.insert(deliveries).from_select(_COLUMNS, rows).execution_options(preserve_rowcount=True)


def _materialise_joined(issue: Issue) -> tuple[int, int]:
    """PostgreSQL: one INSERT … SELECT with the applicable stop-list entries hash-joined
    on the address key, so the cost grows linearly with the list and the stop-lists.
    (An UPDATE after the INSERT, as on SQLite, meets a table with no statistics yet: the
    planner expects one row and probes the whole issue once per stop-list entry.)"""
    # The joins hash in memory rather than spill to disk (4 MB is PostgreSQL's default).
    db.session.execute(sa.text("SET LOCAL work_mem = '128MB'"))
    c = contacts.c
    s = stopping_lists_by_key(issue.sender_id)
    rows = _members(issue).add_columns(
        sa.literal(issue.id), c.id, c.email, c.email_key, c.name,
        sa.case((s.c.name.is_(None), sa.literal(D.PENDING.value)), else_=sa.literal(D.SUPPRESSED.value)),
        s.c.name, sa.literal(0), sa.literal(utcnow(), sa.DateTime),
    ).outerjoin(s, s.c.value == c.email_key)
    total = db.session.execute(_insert_counted(rows)).rowcount
    suppressed = db.session.scalar(
        sa.select(sa.func.count()).select_from(deliveries)
        .where(deliveries.c.issue_id == issue.id, deliveries.c.state == D.SUPPRESSED)) or 0
    return total, suppressed


def _materialise_then_stop(issue: Issue) -> tuple[int, int]:
    """SQLite: everyone goes in as pending, then the stop-lists are walked once: each
    applicable entry is one probe into the deliveries' address index. That costs what
    the stop-lists hold, not a probe per recipient."""
    c = contacts.c
    rows = _members(issue).add_columns(
        sa.literal(issue.id), c.id, c.email, c.email_key, c.name, sa.literal(D.PENDING.value),
        sa.null(), sa.literal(0), sa.literal(utcnow(), sa.DateTime))
    total = db.session.execute(_insert_counted(rows)).rowcount
    d = deliveries.c
    suppressed = db.session.execute(
        sa.update(deliveries)
        .where(d.issue_id == issue.id, d.email_key.in_(stopped_keys(issue.sender_id)))
        .values(state=D.SUPPRESSED, reason=first_stopping_list(d.email_key, issue.sender_id))
    ).rowcount
    return total, suppressed


# --- claiming and recording ------------------------------------------------------

@dataclass
class Claimed:
    id: int
    contact_id: int | None
    email: str
    email_key: str
    name: str
    attempts: int
    # Claimed back from a runner whose lease expired: it already holds a package unit.
    reclaimed: bool = False


def claim(issue_id: int, owner: str, limit: int, lease_seconds: int, *, reclaim: bool = True) -> list[Claimed]:
    """Take up to `limit` recipients that are due: first those whose lease expired
    (their runner died), then deferred ones whose retry is due, then pending ones.
    With `reclaim` False the expired leases are not looked for (that probe walks every
    row in flight, some 1.5 ms a claim on PostgreSQL), unless nothing else is due: a
    runner never takes "nothing left" for an answer while a dead runner's rows wait.
    Each pick walks the (issue, state, id) index in order and stops at the limit,
    so a claim costs the same at the start of a million-recipient issue as at its
    end. SKIP LOCKED lets many runners on PostgreSQL claim disjoint chunks; on
    SQLite the write lock serialises claims. The caller commits at once: the lease
    is what keeps other runners off these rows."""
    now = utcnow()
    c = deliveries.c
    due = (
        sa.and_(c.state == D.SENDING, c.lease_until < now),
        sa.and_(c.state == D.DEFERRED, c.next_attempt_at <= now),
        c.state == D.PENDING,
    )
    rows: list[Claimed] = []
    for i, condition in enumerate(due):
        if len(rows) >= limit:
            break
        if i == 0 and not reclaim:
            continue
        pick = sa.select(c.id).where(c.issue_id == issue_id, condition).order_by(c.id).limit(limit - len(rows))
        if db.engine.dialect.name == "postgresql":
            pick = pick.with_for_update(skip_locked=True)
        # One statement per condition: the pick is a subquery of the UPDATE, so the ids
        # never travel to the client and back as a list of parameters.
        stmt = (
            sa.update(deliveries)
            .where(c.id.in_(pick.scalar_subquery()))
            .values(state=D.SENDING, lease_owner=owner, lease_until=now + timedelta(seconds=lease_seconds),
                    attempts=c.attempts + 1, updated_at=now)
            .returning(c.id, c.contact_id, c.email, c.email_key, c.name, c.attempts)
        )
        rows.extend(Claimed(*r, reclaimed=i == 0) for r in db.session.execute(stmt).all())
    if not rows and not reclaim:
        return claim(issue_id, owner, limit, lease_seconds)
    rows.sort(key=lambda r: r.id)
    return rows


@dataclass
class Result:
    """What became of one claimed delivery (see sending/policy.py)."""
    id: int
    state: str
    reply: Any = None  # the relay's final Reply, when it gave one
    message_id: str | None = None
    reason: str | None = None
    at: datetime | None = None
    retry_at: datetime | None = None
    uncount: int = 0  # 1: this attempt does not count (a provider asked us to slow down)


_RECORD = (
    sa.update(deliveries)
    .where(deliveries.c.id == sa.bindparam("b_id"), deliveries.c.lease_owner == sa.bindparam("owner"),
           deliveries.c.state == sa.literal_column(f"'{D.SENDING.value}'"))
    .values(state=sa.bindparam("new_state"), lease_owner=sa.null(), lease_until=sa.null(),
            reply_code=sa.bindparam("code"), reply_enhanced=sa.bindparam("enhanced"),
            reply_text=sa.bindparam("text"),
            message_id=sa.func.coalesce(sa.bindparam("mid", type_=sa.String), deliveries.c.message_id),
            reason=sa.bindparam("reason"), sent_at=sa.bindparam("sent_at", type_=sa.DateTime),
            next_attempt_at=sa.bindparam("retry_at", type_=sa.DateTime),
            attempts=deliveries.c.attempts - sa.bindparam("uncount", type_=sa.Integer),
            updated_at=sa.bindparam("now", type_=sa.DateTime))
)


class _DriverStatement:
    """A hot statement compiled once per dialect and run with the driver's executemany.

    SQLAlchemy's per-row parameter handling costs more than SQLite's own UPDATE at
    thousands of rows a second; here each row is a plain tuple (SQLite) or dict
    (PostgreSQL). Date-times are given as SQLite stores them through SQLAlchemy,
    so both paths write the same text.
    """

    def __init__(self, stmt: sa.Update, times: tuple[str, ...]):
        self.stmt, self.times = stmt, times
        self._compiled: dict[str, tuple[str, list[str] | None]] = {}

    def executemany(self, rows: list[dict[str, Any]]) -> int:
        conn = db.session.connection()
        dialect = conn.dialect
        if dialect.name not in self._compiled:
            compiled = self.stmt.compile(dialect=dialect)
            order = list(compiled.positiontup) if compiled.positiontup else None
            self._compiled[dialect.name] = (str(compiled), order)
        sql, order = self._compiled[dialect.name]
        text_times = dialect.name == "sqlite"
        out: list[Any] = []
        for row in rows:
            if text_times:
                for k in self.times:
                    if row[k] is not None:
                        row[k] = row[k].strftime("%Y-%m-%d %H:%M:%S.%f")
            out.append(tuple(row[k] for k in order) if order else row)
        return conn.exec_driver_sql(sql, out).rowcount


_RECORD_MANY = _DriverStatement(_RECORD, ("retry_at", "sent_at", "now"))


def record(issue_id: int, owner: str, results: list[Result]) -> Counter[str]:
    """Write the outcome of claimed deliveries and move the issue's counters (the
    caller commits both together). Only rows this owner still holds are written (the
    UPDATE says so and its row count is what the counters move by), so a runner whose
    lease was taken over cannot count a recipient twice."""
    if not results:
        return Counter()
    now = utcnow()
    counts = _record_rows(owner, results, now)
    _tell_webhooks(results, now)
    bumps = {COUNTER[s]: issues.c[COUNTER[s]] + n for s, n in counts.items() if s in COUNTER and n}
    last = next((r.reply for r in reversed(results) if r.reply), None)
    values: dict[str, Any] = dict(bumps)
    if last is not None and bumps:
        # A runner still flushing after another one interrupted the issue must not put a
        # success back over the error that interrupted it.
        values["last_reply"] = sa.case((issues.c.status == IssueStatus.INTERRUPTED.value, issues.c.last_reply),
                                       else_=str(last)[:500])
    if values:
        db.session.execute(sa.update(issues).where(issues.c.id == issue_id).values(**values))
    return +counts


# --- webhooks: recipients that reached a final state (mailing/webhooks.py) ---------------

_TOLD = (D.SENT.value, D.BOUNCED.value, D.FAILED.value)


def _tell_webhooks(results: list[Result], now: datetime) -> None:
    """One event per state and flush for the subscribed endpoints. Without a subscriber
    this is the cached check alone. The rows are read back by the time this flush wrote
    them, so a recipient whose lease another runner took (this write did nothing) is
    never told twice."""
    wanted = [webhooks.RECIPIENT_EVENTS[s] for s in _TOLD]
    if not webhooks.wanted(wanted):
        return
    ids = sorted({r.id for r in results if r.state in _TOLD})
    if not ids:
        return
    c = deliveries.c
    rows = db.session.execute(
        sa.select(c.id, c.issue_id, c.email, c.state, c.reply_code, c.reply_enhanced, c.reply_text)
        .where(among(c.id, ids), c.state.in_(_TOLD), c.updated_at == now).order_by(c.id)).all()
    by_state: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        reply = " ".join(str(x) for x in (r.reply_code, r.reply_enhanced, r.reply_text) if x) or None
        by_state.setdefault(r.state, []).append(webhooks.recipient(r.id, r.issue_id, r.email, r.state, reply))
    for state, items in by_state.items():
        webhooks.recipients(state, items)


def _record_rows(owner: str, results: list[Result], now: datetime) -> Counter[str]:
    """The UPDATE once per row through the driver's executemany (psycopg pipelines the
    rows; measured faster than one UPDATE … FROM unnest(…) per flush), one call per new
    state: the row count per call is what that state's counter moves by."""
    by_state: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        reply = r.reply
        by_state.setdefault(r.state, []).append({
            "b_id": r.id, "owner": owner, "new_state": r.state,
            "code": reply.code if reply else None, "enhanced": reply.enhanced if reply else None,
            "text": reply.text[:2000] if reply else None, "mid": r.message_id, "reason": r.reason,
            "sent_at": r.at if r.state == D.SENT else None, "retry_at": r.retry_at, "uncount": r.uncount,
            "now": now,
        })
    counts: Counter[str] = Counter()
    for state, params in by_state.items():
        counts[state] = _RECORD_MANY.executemany(params)
    return counts


def release(issue_id: int, owner: str, ids: list[int]) -> int:
    """Give back claimed recipients that were never handed to the relay: pending again,
    their attempt not counted. Returns how many this owner still held."""
    if not ids:
        return 0
    return db.session.execute(
        sa.update(deliveries)
        .where(among(deliveries.c.id, ids), deliveries.c.lease_owner == owner,
               deliveries.c.state == D.SENDING)
        .values(state=D.PENDING, lease_owner=None, lease_until=None,
                attempts=deliveries.c.attempts - 1, updated_at=utcnow())
    ).rowcount


def hold_back(issue_id: int, owner: str, items: list[tuple[int, datetime]]) -> int:
    """Give back claimed recipients whose receiving domain must wait: deferred to when
    it may send again, their attempt not counted, no lease held meanwhile. Returns how
    many this owner still held."""
    if not items:
        return 0
    held = 0
    by_due: dict[datetime, list[int]] = {}
    for delivery_id, due in items:
        by_due.setdefault(due, []).append(delivery_id)
    for due, ids in by_due.items():
        held += db.session.execute(
            sa.update(deliveries)
            .where(among(deliveries.c.id, ids), deliveries.c.lease_owner == owner,
                   deliveries.c.state == D.SENDING)
            .values(state=D.DEFERRED, lease_owner=None, lease_until=None, next_attempt_at=due,
                    attempts=deliveries.c.attempts - 1, updated_at=utcnow())
        ).rowcount
    return held


def renew_leases(issue_id: int, owner: str, lease_seconds: int) -> None:
    """A live runner keeps its claimed rows (walks the (issue, state) index)."""
    db.session.execute(
        sa.update(deliveries)
        .where(deliveries.c.issue_id == issue_id, deliveries.c.state == D.SENDING,
               deliveries.c.lease_owner == owner)
        .values(lease_until=utcnow() + timedelta(seconds=lease_seconds))
    )


def open_counts(issue_id: int) -> dict[str, int]:
    """How many recipients still wait, by state (uses the (issue, state) index)."""
    return dict(
        db.session.execute(
            sa.select(deliveries.c.state, sa.func.count())
            .where(deliveries.c.issue_id == issue_id, deliveries.c.state.in_(list(OPEN_STATES)))
            .group_by(deliveries.c.state)
        ).all()
    )


def pending_count(issue_id: int) -> int:
    """Recipients not yet claimed (a spread issue's portion is counted from it)."""
    return db.session.scalar(
        sa.select(sa.func.count()).select_from(deliveries)
        .where(deliveries.c.issue_id == issue_id, deliveries.c.state == D.PENDING)) or 0


def due_count(issue_id: int, now: datetime) -> int:
    """Recipients a runner would claim now (see `claim`): the maintenance loop starts a
    runner for a Sending issue that has some and no live runner."""
    c = deliveries.c
    return db.session.scalar(
        sa.select(sa.func.count()).select_from(deliveries).where(
            c.issue_id == issue_id,
            sa.or_(c.state == D.PENDING,
                   sa.and_(c.state == D.SENDING, c.lease_until < now),
                   sa.and_(c.state == D.DEFERRED, c.next_attempt_at <= now)))) or 0


def deferred_count(issue_id: int) -> int:
    """Recipients waiting to be retried: a range of the (issue, state, id) index, short
    unless the relay is deferring many."""
    c = deliveries.c
    return db.session.scalar(sa.select(sa.func.count()).select_from(deliveries).where(
        c.issue_id == issue_id, c.state == D.DEFERRED)) or 0


def next_retry_at(issue_id: int) -> datetime | None:
    """When the earliest deferred recipient is due again."""
    return db.session.scalar(
        sa.select(sa.func.min(deliveries.c.next_attempt_at))
        .where(deliveries.c.issue_id == issue_id, deliveries.c.state == D.DEFERRED)
    )


def _mark_stopped(issue_id: int, *conditions: Any) -> int:
    """Set `stopped_manually` on the issue's deliveries matching `conditions`, in one
    set-based update, and move the counter in the same transaction."""
    stmt = (
        sa.update(deliveries)
        .where(deliveries.c.issue_id == issue_id, *conditions)
        .values(state=D.STOPPED, reason="stopped_manually", lease_owner=None,
                lease_until=None, next_attempt_at=None, updated_at=utcnow())
    )
    if webhooks.wanted([webhooks.RECIPIENT_EVENTS[D.STOPPED.value]]):
        # Subscribed: the stopped rows come back from the UPDATE itself for the event.
        rows = db.session.execute(stmt.returning(deliveries.c.id, deliveries.c.email)).all()
        n = len(rows)
        webhooks.recipients(D.STOPPED.value, [webhooks.recipient(r.id, issue_id, r.email, D.STOPPED.value)
                                              for r in sorted(rows)])
    else:
        n = db.session.execute(stmt).rowcount
    if n:
        db.session.execute(
            sa.update(issues).where(issues.c.id == issue_id)
            .values(stopped_count=issues.c.stopped_count + n)
        )
    return n


def stop_waiting(issue_id: int) -> int:
    """Cancel: every recipient not yet handed to the relay gets `stopped_manually`."""
    return _mark_stopped(issue_id, deliveries.c.state.in_([D.PENDING, D.DEFERRED]))


def stop_claimed(issue_id: int, owner: str, ids: list[int]) -> int:
    """Cancel while these claimed recipients were never started: `stopped_manually`."""
    if not ids:
        return 0
    c = deliveries.c
    return _mark_stopped(issue_id, among(c.id, ids), c.lease_owner == owner, c.state == D.SENDING)


def expire_stale_sending(issue_id: int) -> int:
    """For a stopping issue: recipients whose runner died count as not handed over."""
    return _mark_stopped(issue_id, deliveries.c.state == D.SENDING, deliveries.c.lease_until < utcnow())


# --- what the pages read ---------------------------------------------------------

def of_issue(issue_id: int, state: str | None = None) -> sa.Select:
    """An issue's deliveries as ORM rows, in one state if given (the (issue, state) index)."""
    query = sa.select(Delivery).where(Delivery.issue_id == issue_id)
    return query.where(Delivery.state == state) if state else query


def delivery_states(issue_id: int) -> dict[str, int]:
    d = deliveries
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
    d = deliveries
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
    d = deliveries
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
    d = deliveries
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
    try:
        kind, value = parse_item(q, "RU")
    except ValueError:
        kind, value = "email", q.strip().lower()
    emails = [value] if kind == "email" else list(db.session.scalars(
        sa.select(Contact.email_key).where(Contact.phone == value, Contact.email_key.is_not(None))))
    d = deliveries
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
    return timeline, entries_holding(values)


@dataclass
class DomainRow:
    domain: str
    total: int
    sent: int
    bounced: int
    deferred: int
    failed: int


def top_domains(issue_id: int, limit: int = 10) -> list[DomainRow]:
    """The issue's largest receiving domains with what became of their letters, for the
    Report tab. The domain is the address key's (its A-label, lower case), so one
    provider is one row whatever case or script the addresses were typed in. A deferred
    letter counts while it waits; `deferred` also counts letters that were ever deferred
    and then went (a retry count above one)."""
    d = deliveries.c
    if db.engine.dialect.name == "postgresql":
        domain = sa.func.split_part(d.email_key, "@", 2)
    else:
        domain = sa.func.substr(d.email_key, sa.func.instr(d.email_key, "@") + 1)

    def count(condition: Any) -> Any:
        return sa.func.sum(sa.case((condition, 1), else_=0))

    rows = db.session.execute(
        sa.select(domain.label("domain"), sa.func.count(), count(d.state == D.SENT), count(d.state == D.BOUNCED),
                  count(sa.or_(d.state == D.DEFERRED, d.attempts > 1)), count(d.state == D.FAILED))
        .where(d.issue_id == issue_id, d.state != D.SUPPRESSED)
        .group_by("domain").order_by(sa.func.count().desc(), sa.literal_column("domain")).limit(limit)).all()
    return [DomainRow(r[0], r[1], r[2] or 0, r[3] or 0, r[4] or 0, r[5] or 0) for r in rows]


def refusal_reasons(issue_id: int, limit: int = 10) -> list[ReplyGroup]:
    """Why letters were refused (bounced, failed or waiting deferred), grouped by reply
    code and enhanced code, most frequent first, with an example text."""
    d = deliveries.c
    rows = db.session.execute(
        sa.select(d.reply_code, d.reply_enhanced, sa.func.count(), sa.func.max(d.reply_text))
        .where(d.issue_id == issue_id, d.state.in_([D.BOUNCED, D.FAILED, D.DEFERRED]))
        .group_by(d.reply_code, d.reply_enhanced).order_by(sa.func.count().desc()).limit(limit)).all()
    return [ReplyGroup(*r) for r in rows]
