"""Issue status: the one state machine. Nothing else writes `issues.status`.

Every change is a conditional UPDATE (`WHERE id = :id AND status IN (:allowed)`)
plus a journal row, in one transaction. When no row changed the action was
illegal in the status the issue really had, and `IllegalTransition` says why.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
import sqlalchemy.orm as so
from flask_babel import lazy_gettext as _l

from . import webhooks
from .enums import IssueStatus
from .extensions import db
from .models import Issue, JournalEvent, utcnow
from .redact import redact, redact_value

S = IssueStatus
FINAL = frozenset({S.CANCELLED, S.SENT})
# Statuses in which the page keeps polling for progress.
LIVE = frozenset({S.ACCEPTED, S.SENDING, S.STOPPING, S.SCHEDULED})

LABELS = {
    S.DRAFT: _l("Draft"),
    S.SCHEDULED: _l("Scheduled"),
    S.MODERATION: _l("On moderation"),
    S.ACCEPTED: _l("Accepted"),
    S.SENDING: _l("Sending"),
    S.PAUSED: _l("Paused"),
    S.STOPPING: _l("Stopping"),
    S.CANCELLED: _l("Cancelled"),
    S.INTERRUPTED: _l("Interrupted"),
    S.SENT: _l("Sent"),
}


@dataclass(frozen=True)
class Action:
    name: str
    sources: frozenset[IssueStatus]
    target: IssueStatus | None  # None: an operation (below), which leaves the status as it is
    verb: Any  # how the refusal reads: "a sent issue cannot be <verb>"
    user: bool = True  # offered to people (False: only the engine takes it)


def _a(name: str, sources: set[IssueStatus], target: IssueStatus | None, verb: Any, user: bool = True) -> Action:
    return Action(name, frozenset(sources), target, verb, user)


ACTIONS: dict[str, Action] = {
    a.name: a
    for a in [
        _a("launch", {S.DRAFT}, S.ACCEPTED, _l("launched")),
        # A triggered mailing (mailing/triggers.py) goes live at once: no audience to form.
        _a("go_live", {S.DRAFT}, S.SENDING, _l("made live")),
        _a("hold", {S.DRAFT, S.SCHEDULED}, S.MODERATION, _l("sent to moderation"), user=False),
        _a("schedule", {S.DRAFT}, S.SCHEDULED, _l("scheduled")),
        _a("unschedule", {S.SCHEDULED}, S.DRAFT, _l("returned to draft")),
        _a("send_now", {S.SCHEDULED}, S.ACCEPTED, _l("sent now")),
        _a("approve", {S.MODERATION}, S.ACCEPTED, _l("approved")),
        _a("reject", {S.MODERATION}, S.DRAFT, _l("rejected")),
        _a("start", {S.ACCEPTED}, S.SENDING, _l("started"), user=False),
        _a("pause", {S.ACCEPTED, S.SENDING}, S.PAUSED, _l("paused")),
        _a("resume", {S.PAUSED, S.INTERRUPTED}, S.SENDING, _l("resumed")),
        _a("send_whole", {S.SENDING, S.PAUSED}, S.SENDING, _l("released whole")),
        _a(
            "cancel",
            {S.SCHEDULED, S.MODERATION, S.ACCEPTED, S.SENDING, S.PAUSED, S.INTERRUPTED},
            S.STOPPING,
            _l("cancelled"),
        ),
        _a("stopped", {S.STOPPING}, S.CANCELLED, _l("marked cancelled"), user=False),
        _a("interrupt", {S.ACCEPTED, S.SENDING}, S.INTERRUPTED, _l("interrupted"), user=False),
        _a("finish", {S.SENDING}, S.SENT, _l("finished"), user=False),
        # A chain (mailing/chains.py). The previous step is Sent: this one waits for its delay,
        # then starts as any scheduled issue does (formed, checked, sent).
        _a("chain_due", {S.DRAFT}, S.SCHEDULED, _l("made due in its chain"), user=False),
        # The previous step was interrupted or cancelled: a later step waits for a person again.
        _a("chain_reset", {S.DRAFT, S.SCHEDULED, S.MODERATION}, S.DRAFT, _l("returned to draft"), user=False),
    ]
}

# Operations: actions on an issue that leave its status as it is (mailing/chains.py). The
# same rows, legal from `sources`; `operate` checks one and journals it, and an illegal
# one is an IllegalTransition (409) like any refused action.
OPERATIONS: dict[str, Action] = {
    a.name: a
    for a in [
        _a("copy", set(S), None, _l("copied")),
        _a("resend", {S.SENT, S.CANCELLED}, None, _l("resent")),
        _a("delete", {S.DRAFT}, None, _l("deleted")),
        _a("assemble", {S.DRAFT}, None, _l("assembled from materials")),  # mailing/materials.py
        _a("add_step", set(S) - {S.STOPPING}, None, _l("given a next step")),
    ]
}

# The dropdown beside the Report button offers these, when legal.
CONTROL_ACTIONS = ("pause", "resume", "send_whole", "cancel")


class IllegalTransition(Exception):
    """The action is not allowed in the issue's current status (HTTP 409)."""

    def __init__(self, action: str, status: str | None, message: str):
        super().__init__(message)
        self.action = action
        self.status = status
        self.message = message


class IssueNotFound(Exception):
    pass


def _row(action: str) -> Action:
    return ACTIONS.get(action) or OPERATIONS[action]


def allowed(action: str, status: str) -> bool:
    return status in _row(action).sources


def available_actions(status: str, names: tuple[str, ...] = CONTROL_ACTIONS) -> list[str]:
    return [n for n in names if allowed(n, status)]


def refusal(action: str, status: str) -> str:
    """A sentence saying why `action` is refused in `status`."""
    from flask_babel import gettext

    label = str(LABELS.get(IssueStatus(status), status)).lower()
    return gettext("a %(status)s issue cannot be %(verb)s", status=label, verb=_row(action).verb)


def lock_for(issue_id: int, action: str) -> str:
    """Lock the issue's row and check that `action` is legal now, before work that must
    happen in the same transaction as the transition (e.g. forming the audience)."""
    issues = Issue.__table__
    status = db.session.execute(
        sa.select(issues.c.status).where(issues.c.id == issue_id).with_for_update()
    ).scalar_one_or_none()
    if status is None:
        db.session.rollback()
        raise IssueNotFound(issue_id)
    if status not in _row(action).sources:
        db.session.rollback()
        raise IllegalTransition(action, status, refusal(action, status))
    return status


def operate(issue_id: int, operation: str, *, actor: Any = None, reason: str | None = None,
            details: dict[str, Any] | None = None) -> str:
    """Check that `operation` (a row of OPERATIONS) is legal now, with the issue's row locked,
    and journal it; the caller does the work and commits both together. Returns the status."""
    status = lock_for(issue_id, operation)
    record(issue_id, operation, actor=actor, reason=reason, details=details)
    return status


# Status reasons of a Sending issue that is waiting for something: its relay, a
# slowed receiving domain, its sender's warm-up cap for the day.
RELAY_WAIT = "waiting for the relay: "
PACED = "paced: "
WARMUP = "warm-up: "
WAITS = (RELAY_WAIT, PACED, WARMUP)


def note_wait(issue_id: int, waiting: str | None) -> None:
    """While a Sending issue waits (`waiting` starts with one of WAITS) its status reason
    says so (the row, the issue page, the API); the reason goes once the wait is over.
    Not a transition: no journal row, and only a Sending issue's reason changes. Commits
    (the runner calls it between its own transactions)."""
    issues = Issue.__table__
    c = issues.c
    sending = sa.and_(c.id == issue_id, c.status == IssueStatus.SENDING)
    if waiting is not None:
        stmt = sa.update(issues).where(sending).values(status_reason=redact(waiting)[:1000])
    else:
        stmt = sa.update(issues).where(sending, sa.or_(*(c.status_reason.like(w + "%") for w in WAITS))) \
            .values(status_reason=None)
    db.session.execute(stmt)
    db.session.info.setdefault(CHANGED, set()).add(issue_id)  # drop the cached row
    db.session.commit()


# Issues whose status this session changed; once it commits their cached rows go.
CHANGED = "outbox_changed_issues"


@sa.event.listens_for(so.Session, "after_commit")
def _changed_committed(session: so.Session) -> None:
    ids = session.info.pop(CHANGED, None)
    if ids:
        from .queueing import forget_rows

        forget_rows(ids)


@sa.event.listens_for(so.Session, "after_rollback")
def _changed_rolled_back(session: so.Session) -> None:
    session.info.pop(CHANGED, None)


def transition(
    issue_id: int,
    action: str,
    *,
    actor: Any = None,
    reason: str | None = None,
    details: dict[str, Any] | None = None,
    values: dict[str, Any] | None = None,
    commit: bool = True,
) -> tuple[str, str]:
    """Apply `action` to the issue: conditional update and journal row in one transaction.

    Returns (from_status, to_status). Raises IllegalTransition when the issue is
    not in a status the action accepts, leaving everything as it was.
    """
    act = ACTIONS[action]
    assert act.target is not None
    now = utcnow()
    # Every status reason and journal row passes here: a relay error quoting a mistyped
    # SMTP_URL must not show its password to every role that reads the issue.
    reason, details, values = redact(reason), redact_value(details), redact_value(values)
    issues = Issue.__table__
    # The status we move from is read inside the same UPDATE on PostgreSQL and
    # SQLite (RETURNING gives the new row; the old one is among `sources`).
    old = db.session.execute(
        sa.select(issues.c.status).where(issues.c.id == issue_id)
    ).scalar_one_or_none()
    if old is None:
        db.session.rollback()
        raise IssueNotFound(issue_id)
    sources = [s.value for s in act.sources]
    if old not in sources:
        db.session.rollback()
        raise IllegalTransition(action, old, refusal(action, old))
    update = (
        sa.update(issues)
        .where(issues.c.id == issue_id, issues.c.status == old)
        .values(status=act.target.value, updated_at=now, status_reason=reason, **(values or {}))
    )
    if db.session.execute(update).rowcount != 1:
        # Someone else moved the issue between our read and our update.
        db.session.rollback()
        current = db.session.execute(
            sa.select(issues.c.status).where(issues.c.id == issue_id)
        ).scalar_one()
        raise IllegalTransition(action, current, refusal(action, current))
    db.session.info.setdefault(CHANGED, set()).add(issue_id)
    db.session.add(
        JournalEvent(
            issue_id=issue_id,
            actor_id=getattr(actor, "id", None),
            actor_label=getattr(actor, "email", None) or (actor if isinstance(actor, str) else "system"),
            event=action,
            from_status=old,
            to_status=act.target.value,
            reason=reason,
            details=details or {},
            created_at=now,
        )
    )
    # Webhooks (mailing/webhooks.py): the event is written in this same transaction.
    webhooks.status_changed(issue_id, action, old, act.target.value, reason, _actor_label(actor), now)
    if commit:
        db.session.commit()
    return old, act.target.value


def _actor_label(actor: Any) -> str:
    return getattr(actor, "email", None) or (actor if isinstance(actor, str) else "system")


def record(issue_id: int | None, event: str, *, actor: Any = None, reason: str | None = None,
           details: dict[str, Any] | None = None) -> None:
    """A journal event that is not a status change (test letter, settings, ...); caller commits."""
    reason, details = redact(reason), redact_value(details)

    db.session.add(
        JournalEvent(
            issue_id=issue_id,
            actor_id=getattr(actor, "id", None),
            actor_label=getattr(actor, "email", None) or (actor if isinstance(actor, str) else "system"),
            event=event,
            reason=reason,
            details=details or {},
            created_at=datetime.now(UTC).replace(tzinfo=None),
        )
    )
