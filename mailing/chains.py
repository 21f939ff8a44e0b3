"""Around the send: chains of issues, copy, resend and delete.

A chain is a row of issues linked by `chain_parent_id`. When a step is Sent, the next one
becomes due (`chain_due`: Scheduled at the previous finish plus its delay, or at its
date) and is then formed and started by the same path as any scheduled issue
(`lifecycle.start`: the audience is materialised with the step's rule in
`store.deliveries`, the pre-send check runs). When a step is interrupted or cancelled
the later steps go back to Draft (`chain_reset`), the reason in their journal; a reset
step never runs by itself again: a person relaunches it.

Copy makes a Draft of any issue; resend makes a new issue linked to a Sent or Cancelled
one, to its whole list again or to those it did not reach; delete removes a Draft and
every later step of its chain. Each is a row of `states.OPERATIONS`, checked and
journalled by `states.operate`. The use cases in `lifecycle` call the hooks here; this
module never calls them back (the views launch a resent issue through `lifecycle`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from flask_babel import gettext as _

from . import queueing
from .enums import IssueStatus
from .extensions import db
from .fielderror import FieldError
from .models import Delivery, Issue, JournalEvent, utcnow
from .states import FINAL, IllegalTransition, IssueNotFound, operate, record, transition
from .store import deliveries
from .store.deliveries import AUDIENCE_RULES

S = IssueStatus
RESEND_AUDIENCES = ("all", "not_reached")
MAX_DELAY_SECONDS = 366 * 86400

# What a copy (and a new step) takes from its original: the letter, who sends it to whom,
# how it is spread. Never the audience, counters, statuses or journal.
COPIED = ("subject", "body_html", "body_text", "preheader", "from_name", "reply_to", "custom_headers",
          "sender_id", "list_id", "spread_size", "spread_interval", "spread_hours")


class ChainError(FieldError):
    """A value for a step or a resend that cannot be used (HTTP 400), with its field."""


def _issue(issue_id: int) -> Issue:
    issue = db.session.get(Issue, issue_id, populate_existing=True)
    if issue is None:
        raise IssueNotFound(issue_id)
    return issue


def _new_from(original: Issue, actor: Any, **values: Any) -> Issue:
    issue = Issue(**{f: getattr(original, f) for f in COPIED}, created_by_id=getattr(actor, "id", None), **values)
    db.session.add(issue)
    db.session.flush()
    return issue


# --- copy and resend -------------------------------------------------------------

def copy(issue_id: int, actor: Any) -> int:
    """A new Draft with the original's letter, sender, list and spread; a send time still
    ahead is kept for the launch form to offer."""
    original = _issue(issue_id)
    at = original.send_at if original.send_at and original.send_at > utcnow() else None
    new = _new_from(original, actor, send_at=at)
    operate(issue_id, "copy", actor=actor, details={"copy": new.id})
    record(new.id, "created", actor=actor, details={"copied_from": issue_id})
    db.session.commit()
    return new.id


def resend_counts(issue_id: int) -> dict[str, int]:
    """Who each resend choice would reach now (the dialog shows both before the choice)."""
    issue = _issue(issue_id)
    out = {rule: deliveries.follow_up_count(issue.list_id, issue.sender_id, issue.id, rule)
           if issue.list_id is not None else 0 for rule in RESEND_AUDIENCES}
    db.session.commit()
    return out


def resend(issue_id: int, actor: Any, audience: str) -> int:
    """A new issue linked to a Sent or Cancelled one, with its letter, to the whole list
    again ("all") or to those it did not reach ("not_reached"); bounced and stop-listed
    recipients are never among them. Returns the new Draft, which the caller launches."""
    if audience not in RESEND_AUDIENCES:
        raise ChainError("audience", _("Choose whom to send it to again: all or not_reached."))
    original = _issue(issue_id)
    if original.status in (S.SENT, S.CANCELLED) and original.list_id is not None and not \
            deliveries.follow_up_count(original.list_id, original.sender_id, original.id, audience):
        db.session.rollback()
        raise ChainError("audience", _("Nobody is left to send it to."))
    new = _new_from(original, actor, resent_from_id=issue_id, resend_audience=audience)
    operate(issue_id, "resend", actor=actor, details={"resend": new.id, "audience": audience})
    record(new.id, "created", actor=actor, details={"resent_from": issue_id, "audience": audience})
    db.session.commit()
    return new.id


# --- chains ----------------------------------------------------------------------

def steps(issue: Issue) -> list[Issue]:
    """Every step of the issue's chain in order (the issue alone when it has none)."""
    if issue.chain_root_id is None:
        return [issue]
    return list(db.session.scalars(sa.select(Issue).where(Issue.chain_root_id == issue.chain_root_id)
                                   .order_by(Issue.chain_step)))


def later_steps(issue: Issue) -> list[Issue]:
    return [s for s in steps(issue) if (s.chain_step or 0) > (issue.chain_step or 0)]


def add_step(issue_id: int, actor: Any, *, audience: str = "all", delay_seconds: int | None = None,
             at: datetime | None = None) -> int:
    """Append a step to the issue's chain (after its last step; the issue becomes step 1 if
    it had none): a Draft with the last step's letter, sender and list, due `delay_seconds`
    after that step finishes or at `at`, to `audience` of it."""
    if audience not in AUDIENCE_RULES:
        raise ChainError("audience", _("The audience is one of: all, sent, not_reached."))
    if at is not None and delay_seconds is not None:
        raise ChainError("at", _("Give a delay or a date, not both."))
    if delay_seconds is not None and not 0 <= delay_seconds <= MAX_DELAY_SECONDS:
        raise ChainError("delay_seconds", _("The delay is from 0 to 366 days."))
    if at is not None and at <= utcnow():
        raise ChainError("at", _("The date is in the past."))
    last = steps(_issue(issue_id))[-1]
    operate(last.id, "add_step", actor=actor, details={"audience": audience, "delay_seconds": delay_seconds,
                                                        "at": at.isoformat() if at else None})
    root_id = last.chain_root_id or last.id
    if last.chain_root_id is None:
        last.chain_root_id, last.chain_step = last.id, 1
    new = _new_from(last, actor, chain_parent_id=last.id, chain_root_id=root_id,
                    chain_step=(last.chain_step or 1) + 1, chain_audience=audience,
                    chain_delay_seconds=None if at is not None else (delay_seconds or 0), chain_at=at)
    record(new.id, "created", actor=actor, details={"step_of": root_id, "step": new.chain_step})
    db.session.commit()
    return new.id


def check_launchable(issue: Issue) -> None:
    """A step is launched by hand only once the step before it has ended: its audience is
    made from that step's recipients."""
    if issue.chain_parent_id is None:
        return
    previous = db.session.get(Issue, issue.chain_parent_id)
    if previous is not None and previous.status not in FINAL:
        raise IllegalTransition("launch", issue.status, _(
            "step %(n)s is launched once step %(p)s has been sent or cancelled", n=issue.chain_step,
            p=previous.chain_step))


def due_at(step: Issue, previous: Issue) -> datetime:
    """When a step goes, its previous step being Sent: at its date, or its delay after the
    previous one finished; never in the past."""
    now = utcnow()
    if step.chain_at is not None:
        return max(step.chain_at, now)
    end = previous.finished_at or now
    return max(end + timedelta(seconds=step.chain_delay_seconds or 0), now)


def previous_finished(issue_id: int, check: Callable[[Issue], None]) -> int | None:
    """The issue is Sent: its next step, a Draft never reset, becomes due (Scheduled at its
    time; the scheduler forms and starts it). `check` is the launch's readiness check: a
    step that fails it goes back to Draft with the reason instead. Returns the step made due."""
    issue = _issue(issue_id)
    step = db.session.scalar(sa.select(Issue).where(Issue.chain_parent_id == issue_id))
    if step is None or step.status != S.DRAFT or _was_reset(step.id):
        db.session.commit()
        return None
    try:
        check(step)
    except ValueError as exc:
        transition(step.id, "chain_reset", reason=_("step %(n)s cannot go: %(why)s", n=step.chain_step,
                                                      why=getattr(exc, "message", str(exc))))
        return None
    at = due_at(step, issue)
    try:
        transition(step.id, "chain_due", values={"send_at": at},
                   details={"after": issue_id, "due_at": at.isoformat()})
    except IllegalTransition:
        return None  # someone acted on the step meanwhile
    queueing.enqueue("jobs.sending.start_issue", step.id, at=at)
    return step.id


def _was_reset(issue_id: int) -> bool:
    return db.session.scalar(sa.select(sa.exists().where(
        JournalEvent.issue_id == issue_id, JournalEvent.event == "chain_reset"))) or False


def hold_later_steps(issue_id: int, interrupted: str | None = None) -> list[int]:
    """The issue was interrupted (`interrupted` is why) or cancelled (None): every later
    step not yet under way goes back to Draft (a formed audience is dropped), with the
    reason in its journal."""
    issue = _issue(issue_id)
    if interrupted is None:
        why = _("step %(n)s was cancelled", n=issue.chain_step)
    else:
        why = _("step %(n)s was interrupted: %(reason)s", n=issue.chain_step, reason=interrupted)
    held = []
    for step in later_steps(issue) if issue.chain_step is not None else []:
        if step.status not in (S.DRAFT, S.SCHEDULED, S.MODERATION):
            continue
        try:
            transition(step.id, "chain_reset", commit=False, reason=why,
                       values={"send_at": None, "total": 0, "suppressed_count": 0, "launched_at": None},
                       details={"after": issue_id})
        except IllegalTransition:
            continue
        db.session.execute(sa.delete(Delivery).where(Delivery.issue_id == step.id))
        db.session.commit()
        held.append(step.id)
    db.session.commit()
    return held


# --- delete ----------------------------------------------------------------------

def has_statistics(issue: Issue) -> bool:
    return bool(issue.total or issue.done or issue.started_at or issue.launched_at) or bool(
        db.session.scalar(sa.select(sa.exists().where(Delivery.issue_id == issue.id))))


def delete(issue_id: int, actor: Any) -> list[int]:
    """Delete a Draft and every later step of its chain, all or nothing. Each must be a
    Draft without statistics. Their journal rows stay, with the issue's title."""
    issue = _issue(issue_id)
    doomed = [issue, *later_steps(issue)]
    for step in doomed:
        if step.status != S.DRAFT:
            raise IllegalTransition("delete", step.status, _(
                "step %(n)s is %(status)s: only drafts are deleted", n=step.chain_step, status=step.status)
                if step is not issue else _("only a draft can be deleted"))
        if has_statistics(step):
            raise IllegalTransition("delete", step.status, _(
                "“%(subject)s” has statistics and cannot be deleted", subject=step.subject))
    ids = [s.id for s in doomed]
    for step in doomed:
        operate(step.id, "delete", actor=actor, details={
            "issue_id": step.id, "chain_step": step.chain_step, "with": ids if step is issue else None})
    db.session.flush()
    titles = {s.id: s.subject for s in doomed}
    j = JournalEvent.__table__
    for sid, title in titles.items():
        db.session.execute(sa.update(j).where(j.c.issue_id == sid).values(issue_title=title[:300]))
    db.session.execute(sa.delete(Delivery).where(Delivery.issue_id.in_(ids)))
    issues = Issue.__table__
    for step in sorted(doomed, key=lambda s: -(s.chain_step or 0)):  # the last step first: FKs
        db.session.execute(sa.delete(issues).where(issues.c.id == step.id))
    root_id = issue.chain_root_id
    if root_id is not None and root_id not in ids:
        left = db.session.scalar(sa.select(sa.func.count()).where(issues.c.chain_root_id == root_id))
        if left == 1:  # the first step alone: no chain any more
            db.session.execute(sa.update(issues).where(issues.c.id == root_id)
                               .values(chain_root_id=None, chain_step=None))
    db.session.commit()
    for step in doomed:
        db.session.expunge(step)
    return ids


# --- what pages show -------------------------------------------------------------

@dataclass
class Place:
    """A step's place in its chain for the pages and the API."""

    step: int
    of: int
    audience: str
    delay_seconds: int | None
    at: datetime | None
    due_at: datetime | None  # known once the step is Scheduled


def place(issue: Issue, total: int | None = None) -> Place | None:
    if issue.chain_step is None:
        return None
    if total is None:
        total = db.session.scalar(sa.select(sa.func.count()).select_from(Issue)
                                  .where(Issue.chain_root_id == issue.chain_root_id)) or 1
    due = issue.send_at if issue.status in (S.SCHEDULED, S.ACCEPTED) else None
    return Place(issue.chain_step, total, issue.chain_audience or "all", issue.chain_delay_seconds,
                 issue.chain_at, due)
