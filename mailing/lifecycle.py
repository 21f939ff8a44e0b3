"""Use cases on an issue: launch, pause, resume, send whole, cancel, and the engine's
own steps (start, what follows a run, finish, interrupt). Each goes through
states.transition() and enqueues work only after the commit that made it necessary.
Each owns its transaction: the queries it calls (mailing/store) do not commit."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from flask import current_app
from flask_babel import gettext as _

from . import chains, package, queueing, rates, settings
from .contacts import known_fields
from .enums import DeliveryState as D
from .enums import IssueStatus, Role
from .extensions import db
from .fielderror import FieldError
from .models import Delivery, Issue, JournalEvent, utcnow
from .sending.letter import TEMPLATE_FIELDS, check_letter, template_fields
from .states import IllegalTransition, IssueNotFound, lock_for, record, transition
from .store import deliveries
from .store import package as package_store

S = IssueStatus


class LaunchError(FieldError):
    """The issue is not ready to go (HTTP 400), with the field that is wrong."""


class AdminOnly(Exception):
    """A step only an admin may take on this issue (HTTP 403), with why."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def _check_package() -> None:
    if package.empty():
        raise LaunchError("package", _("The letter package is empty: ask an admin to top it up."))


def _issue(issue_id: int) -> Issue:
    issue = db.session.get(Issue, issue_id, populate_existing=True)
    if issue is None:
        raise IssueNotFound(issue_id)
    return issue


def check_ready(issue: Issue) -> None:
    chains.check_launchable(issue)  # a chain step waits for the step before it
    if not (issue.subject or "").strip():
        raise LaunchError("subject", _("The subject is empty."))
    if issue.sender_id is None:
        raise LaunchError("sender_id", _("Choose a sender."))
    if issue.list_id is None:
        raise LaunchError("list_id", _("Choose a contact list."))
    if not (issue.body_html or "").strip():
        raise LaunchError("body_html", _("The letter is empty."))
    problems = letter_problems(issue)
    if problems:
        field, found = next(iter(problems.items()))
        raise LaunchError(field, f"{field}: {'; '.join(found)}")


def letter_problems(issue: Issue) -> dict[str, list[str]]:
    """What is wrong with the letter's placeholders and headers, per field; checked at
    save time and again at launch (a custom field may have gone since)."""
    values = {f: getattr(issue, f) or "" for f in TEMPLATE_FIELDS}
    known = known_fields()
    if issue.kind == "triggered":  # its fields come with each participant, not from contacts
        known += sorted(set().union(*(template_fields(v) for v in values.values())))
    return check_letter(values, known)


def edit_lock_reason(issue: Issue) -> str | None:
    """Why the editor is locked, or None when the issue may be edited."""
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


def launch(issue_id: int, actor: Any, *, at: datetime | None = None, postpone: bool = False) -> str:
    """Launch now (after the launch delay), at a time, or postpone until someone presses Send."""
    issue = _issue(issue_id)
    check_ready(issue)
    if issue.kind == "triggered":
        if postpone or at is not None:
            raise LaunchError("mode", _("A triggered mailing goes live now and sends as participants arrive."))
        return go_live(issue_id, actor)
    if not (postpone or at is not None):
        _check_package()
    if postpone or at is not None:
        if at is not None and at <= utcnow():
            raise LaunchError("send_at", _("The send time is in the past."))
        transition(issue_id, "schedule", actor=actor, values={"send_at": at},
                   details={"send_at": at.isoformat() if at else None, "postponed": postpone})
        if at is not None:
            queueing.enqueue("jobs.sending.start_issue", issue_id, at=at)
        return S.SCHEDULED
    return _accept(issue, "launch", actor)


def go_live(issue_id: int, actor: Any) -> str:
    """A triggered mailing (mailing/triggers.py): Sending at once, with nobody yet. Its
    letter and sender were checked as any launch's; there is no audience to form or
    moderate, and no letter package to check until a participant arrives."""
    now = utcnow()
    transition(issue_id, "go_live", actor=actor,
               values={"started_at": now, "launched_at": now, "total": 0, "send_at": None,
                       "launched_by_id": getattr(actor, "id", None),
                       "settings": {"kind": "triggered", **rates.Limits.current().frozen()}})
    queueing.clear_halt(issue_id)
    return S.SENDING


def send_now(issue_id: int, actor: Any) -> str:
    issue = _issue(issue_id)
    check_ready(issue)
    _check_package()
    return _accept(issue, "send_now", actor)


def _accept(issue: Issue, action: str, actor: Any, delay: float | None = None,
            enqueue: bool = True) -> str:
    """Materialise the recipients and enter Accepted in one transaction; the start job
    runs after the launch delay, during which Pause guarantees nothing left."""
    if delay is None:
        delay = float(settings.get("launch_delay_seconds"))
    now = utcnow()
    start_at = now + timedelta(seconds=delay)
    lock_for(issue.id, action)
    counts = deliveries.materialise(issue)
    if action in ("launch", "send_now"):
        # The pre-send check runs on the formed audience; a failing issue is held.
        from . import moderation

        db.session.flush()
        issue = db.session.get(Issue, issue.id, populate_existing=True)
        failures = moderation.check(issue)
        if failures:
            transition(issue.id, "hold", actor=actor, reason="; ".join(f.reason for f in failures),
                       details={**counts, **moderation.as_details(failures)},
                       values={"launched_at": now, "launched_by_id": getattr(actor, "id", None)})
            return S.MODERATION
    size, interval = issue.spread_size, issue.spread_interval
    if issue.spread_hours:
        # Evenly over H hours: one portion a minute (or the interval given), sized to fit.
        interval = interval or 60
        portions = max(int(issue.spread_hours * 3600 // interval), 1)
        size = max(-(-(counts["total"] - counts["suppressed"]) // portions), 1)
    frozen = {"launch_delay_seconds": delay, "send_concurrency": current_app.config["SEND_CONCURRENCY"],
              "send_jobs": current_app.config["SEND_JOBS"], "spread_size": size,
              "spread_interval": interval, "spread_hours": issue.spread_hours,
              "audience": counts["total"], "suppressed_at_launch": counts["suppressed"],
              **rates.Limits.current().frozen()}
    transition(issue.id, action, actor=actor, details=counts,
               values={"send_at": start_at, "launched_at": now, "settings": frozen,
                       "spread_size": size, "spread_interval": interval, "released": False,
                       "launched_by_id": getattr(actor, "id", None)})
    queueing.clear_halt(issue.id)
    if enqueue:
        queueing.enqueue("jobs.sending.start_issue", issue.id, delay=delay)
    return S.ACCEPTED


def approve(issue_id: int, actor: Any, comment: str = "") -> str:
    """A moderator lets a held issue go: Accepted, then the launch delay applies."""
    issue = _issue(issue_id)
    if issue.launched_by_id is not None and issue.launched_by_id == getattr(actor, "id", None):
        raise IllegalTransition("approve", issue.status, _("a moderator cannot approve an issue they launched"))
    delay = float(settings.get("launch_delay_seconds"))
    transition(issue_id, "approve", actor=actor, reason=comment or None,
               values={"send_at": utcnow() + timedelta(seconds=delay)})
    queueing.clear_halt(issue_id)
    queueing.enqueue("jobs.sending.start_issue", issue_id, delay=delay)
    return S.ACCEPTED


def reject(issue_id: int, actor: Any, comment: str) -> str:
    """Back to Draft with the moderator's comment; the formed audience is dropped."""
    if not comment.strip():
        raise LaunchError("comment", _("Say why the issue is rejected."))
    transition(issue_id, "reject", actor=actor, reason=comment.strip(), commit=False,
               values={"total": 0, "suppressed_count": 0, "launched_at": None})
    db.session.execute(sa.delete(Delivery).where(Delivery.issue_id == issue_id))
    db.session.commit()
    return S.DRAFT


def start(issue_id: int) -> bool:
    """Scheduled or Accepted → Sending when its time has come. A start later than the
    grace period (the scheduler was down) does not go out silently: the issue is
    interrupted with the reason 'late start' and waits for a user."""
    issue = _issue(issue_id)
    now = utcnow()
    due_at = issue.send_at
    if issue.status not in (S.SCHEDULED, S.ACCEPTED) or due_at is None \
            or now < due_at - timedelta(seconds=0.5):
        db.session.commit()
        return False  # not ours to start, or an early wake-up: the scheduled job comes again
    late = (now - due_at).total_seconds()
    try:
        if issue.status == S.SCHEDULED:
            _accept(issue, "send_now", "scheduler", delay=0, enqueue=False)
        if late > float(settings.get("late_start_grace_seconds")):
            queueing.set_halt(issue_id)
            transition(issue_id, "interrupt", reason="late start",
                       details={"due_at": due_at.isoformat(), "late_by_s": round(late)})
            chains.hold_later_steps(issue_id, "late start")
            return False
        transition(issue_id, "start", values={"started_at": now})
    except IllegalTransition:
        return False
    queueing.clear_halt(issue_id)
    _spawn(issue_id)
    return True


def _spawn(issue_id: int) -> None:
    for _n in range(max(1, int(current_app.config["SEND_JOBS"]))):
        queueing.enqueue("jobs.sending.send_issue", issue_id)


def pause(issue_id: int, actor: Any) -> str:
    # The halt key is set before the status commits, so that no message starts after
    # the click is acknowledged; an illegal pause takes it back.
    queueing.set_halt(issue_id)
    try:
        transition(issue_id, "pause", actor=actor, details={"done_at_click": _done(issue_id)})
    except (IllegalTransition, IssueNotFound):
        _restore_halt(issue_id)
        raise
    return S.PAUSED


def resume(issue_id: int, actor: Any, comment: str = "") -> str:
    """Sending again. An issue its bounce or complaint rate interrupted is resumed only by
    an admin, with a comment for the journal (seed 004: "contact support, discuss, then
    resume or cancel"), and its rate window starts again; one the letter package stopped
    waits for a top-up."""
    issue = _issue(issue_id)
    kind, status = issue.interrupt_kind, issue.status
    db.session.commit()
    if status == S.INTERRUPTED and kind == "rates":
        if getattr(actor, "role", None) != Role.ADMIN:
            raise AdminOnly(_("Only an admin can resume an issue interrupted for its bounce or complaint rate."))
        if not comment.strip():
            raise LaunchError("comment", _("Say why it is safe to resume."))
    if status == S.INTERRUPTED and package.empty():
        raise IllegalTransition("resume", status, _("the letter package is empty: top it up before resuming"))
    transition(issue_id, "resume", actor=actor, reason=comment.strip() or None, values={"interrupt_kind": None})
    if kind == "rates":
        rates.forget(queueing.redis_connection(), issue_id)
    queueing.clear_halt(issue_id)
    _spawn(issue_id)
    return S.SENDING


def send_whole(issue_id: int, actor: Any) -> str:
    if _issue(issue_id).kind == "triggered":
        raise IllegalTransition("send_whole", S.SENDING, _("a triggered mailing has nothing held back to release"))
    transition(issue_id, "send_whole", actor=actor, values={"released": True})
    queueing.clear_halt(issue_id)
    _spawn(issue_id)  # a spread issue may have no runner between portions
    return S.SENDING


def cancel(issue_id: int, actor: Any) -> str:
    """Stopping at once; recipients not yet handed over get stopped_manually in one
    update; Cancelled when no message is left in flight."""
    queueing.set_halt(issue_id)
    try:
        transition(issue_id, "cancel", actor=actor, commit=False)
    except (IllegalTransition, IssueNotFound):
        _restore_halt(issue_id)
        raise
    deliveries.stop_waiting(issue_id)
    db.session.commit()
    return finish_stopping(issue_id)


def finish_stopping(issue_id: int) -> str:
    """Stopping → Cancelled once no recipient is in flight (a dead runner's count as not sent)."""
    stale = deliveries.expire_stale_sending(issue_id)
    if not package.unlimited():
        package_store.give_back(stale)  # their dead runner's units, never spent
    in_flight = deliveries.open_counts(issue_id).get("sending", 0)
    if in_flight:
        db.session.commit()
        return S.STOPPING
    try:
        transition(issue_id, "stopped", reason="stopped_manually")
    except IllegalTransition:
        return _issue(issue_id).status
    chains.hold_later_steps(issue_id)  # a chain's later steps wait for a person again
    return S.CANCELLED


def note_paused(issue_id: int) -> None:
    """Journal how many recipients were processed after the Pause click (the messages
    that were already in an SMTP transaction), once the last runner has stopped."""
    click = db.session.scalar(
        sa.select(JournalEvent).where(JournalEvent.issue_id == issue_id, JournalEvent.event == "pause")
        .order_by(JournalEvent.id.desc()).limit(1))
    if click is None:
        db.session.commit()
        return
    left = db.session.scalar(sa.select(sa.func.count()).select_from(Delivery).where(
        Delivery.issue_id == issue_id, Delivery.sent_at > click.created_at)) or 0
    record(issue_id, "pause_settled", details={
        "left_after_click": left, "done": _done(issue_id), "pause_event": click.id})
    db.session.commit()


def after_run(issue_id: int, outcome: Any) -> str:
    """What a runner's end means for the issue (`outcome` is a sending.runner.Outcome):
    the one place that decides it. Returns what happened, for the job's result."""
    if outcome.kind == "not sending":
        return "not sending"  # paused, cancelled or finished before this runner began
    if outcome.kind == "interrupted":
        interrupt(issue_id, outcome.reason, outcome.last_reply, kind=outcome.interrupt_kind,
                  details=outcome.details)
        return "interrupted"
    status = _issue(issue_id).status
    db.session.commit()
    if status == S.STOPPING:
        finish_stopping(issue_id)
        return "stopped"
    if status == S.PAUSED and not queueing.live_runners(issue_id):
        note_paused(issue_id)  # the last runner out says what left after the click
    if outcome.kind == "halted" or status != S.SENDING:
        return "halted"
    if outcome.kind == "exhausted":
        # The last runner out interrupts: the others are still sending units they took.
        # Two ending at once leave it to the maintenance loop's next runner.
        if queueing.live_runners(issue_id):
            return "others sending"
        if deliveries.open_counts(issue_id):
            db.session.commit()
            interrupt(issue_id, package.EXHAUSTED, kind="package")
            return "interrupted"
        db.session.commit()
    if outcome.kind == "drained" and _issue(issue_id).kind == "triggered":
        db.session.commit()
        return "idle"  # the next participant enqueues a runner (triggers.wake)
    if outcome.kind == "waiting" and outcome.next_at is not None:
        queueing.enqueue("jobs.sending.send_issue", issue_id, at=outcome.next_at)
        return "waiting for the next portion"
    waiting = deliveries.open_counts(issue_id)
    db.session.commit()
    if not waiting:
        finish(issue_id)
        return "finished"
    if waiting.get(D.DEFERRED) and not waiting.get(D.PENDING) and not waiting.get(D.SENDING):
        at = deliveries.next_retry_at(issue_id)
        db.session.commit()
        if at is not None:
            queueing.enqueue("jobs.sending.send_issue", issue_id, at=at)
        return "retry scheduled"
    return "others sending"


def finish(issue_id: int) -> None:
    if _issue(issue_id).kind == "triggered":
        db.session.commit()
        return  # a triggered mailing stays live until someone stops it
    try:
        transition(issue_id, "finish", values={"finished_at": utcnow()})
    except IllegalTransition:
        return  # another runner finished it first
    chains.previous_finished(issue_id, check_ready)  # a chain's next step becomes due


def interrupt(issue_id: int, reason: str, last_reply: str | None = None, *, kind: str | None = None,
              details: dict[str, Any] | None = None) -> None:
    """`last_reply` is the failing reply or connection error that caused the interrupt:
    it replaces the last success as the issue's "last server response", which would
    otherwise say "250 Ok" next to a relay that is down. `kind` ("rates", "package")
    decides who may resume it."""
    queueing.set_halt(issue_id)
    # Without a failing reply (a late start, a rate over its threshold) the last success is
    # cleared rather than shown as the cause; the reason says what happened.
    values: dict[str, Any] = {"interrupt_kind": kind, "last_reply": last_reply[:500] if last_reply else None}
    try:
        transition(issue_id, "interrupt", reason=reason, values=values,
                   details={**({"last_reply": last_reply} if last_reply else {}), **(details or {})} or None)
    except IllegalTransition:
        return
    chains.hold_later_steps(issue_id, reason)  # a chain's later steps wait for a person again


def late_report(issue_id: int, *, bounced: int = 0, complained: int = 0) -> bool:
    """Late hard bounces and complaints of an issue still sending count in its rate
    window, taking no place in it; returns whether they interrupted the issue."""
    issue = _issue(issue_id)
    status, limits = issue.status, rates.Limits.of(issue.settings)
    db.session.commit()
    if status != S.SENDING or not (bounced or complained):
        return False
    breach = rates.push(queueing.redis_connection(), issue_id, limits, 0, bounced=bounced, complained=complained)
    if breach is None:
        return False
    interrupt(issue_id, breach.reason(), kind="rates", details=breach.details())
    return True


def _done(issue_id: int) -> int:
    issue = _issue(issue_id)
    return issue.done


def _restore_halt(issue_id: int) -> None:
    status = db.session.execute(
        sa.select(Issue.status).where(Issue.id == issue_id)
    ).scalar_one_or_none()
    db.session.commit()
    if status in (S.SENDING, S.ACCEPTED):
        queueing.clear_halt(issue_id)
