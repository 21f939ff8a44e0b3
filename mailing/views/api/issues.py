"""Issues through the API: drafts (create, change, preview, test letter, delete), launching
and the dropdown's actions, copy, resend, chain steps, deliveries and the journal. Each
goes through the same use case as the page that does it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import g
from werkzeug.datastructures import MultiDict

from ... import chains, lifecycle, materials, proofs, states
from ...addresses import EmailNotValidError, normalise_key
from ...extensions import db
from ...fielderror import Conflict, FieldError
from ...models import Delivery, Issue, JournalEvent
from ...states import IssueNotFound, available_actions
from ...store import deliveries
from ...store import issues as issue_rows
from ...store import journal as journal_rows
from ..access import EDITORS, READERS
from ..outgoing import IssueForm
from . import schemas as s
from .base import ctx, endpoint, iso, keyset

TAG = "issues"


def issue_json(issue: Issue) -> dict[str, Any]:
    p = issue_rows.progress(issue)
    return {
        "id": issue.id, "subject": issue.subject, "status": issue.status,
        "kind": issue.kind, "status_reason": issue.status_reason, "interrupt_kind": issue.interrupt_kind,
        "sender_id": issue.sender_id, "list_id": issue.list_id,
        "send_at": iso(issue.send_at), "started_at": iso(issue.started_at), "finished_at": iso(issue.finished_at),
        "progress": {"total": issue.total, "sent": p.sent, "failed": p.failed,
                     "suppressed": p.suppressed, "stopped": p.stopped, "remaining": p.remaining,
                     "percent": p.percent, "rate_per_s": p.rate, "eta_s": p.eta_seconds,
                     # Each final state on its own ("failed" above counts bounced and failed
                     # together), and those waiting to be retried.
                     "states": {"sent": issue.sent_count, "bounced": issue.bounced_count,
                                "failed": issue.failed_count, "suppressed": issue.suppressed_count,
                                "stopped_manually": issue.stopped_count,
                                "deferred": deliveries.deferred_count(issue.id)}},
        "spread": {"size": issue.spread_size, "interval_s": issue.spread_interval,
                   "released": issue.released, "next_portion_at": iso(p.next_portion_at)},
        "actions": available_actions(issue.status),
        "last_reply": issue.last_reply,
        "chain": chain_json(issue),
        "resent_from_id": issue.resent_from_id, "resend_audience": issue.resend_audience,
    }


def full_json(issue: Issue) -> dict[str, Any]:
    return {**issue_json(issue), "body_html": issue.body_html, "body_text": issue.body_text,
            "preheader": issue.preheader, "from_name": issue.from_name, "reply_to": issue.reply_to,
            "custom_headers": issue.custom_headers, "trigger_on_join": issue.trigger_on_join,
            "spread_hours": issue.spread_hours}


def chain_json(issue: Issue, total: int | None = None) -> dict[str, Any] | None:
    """The issue's place in its chain (mailing/chains.py), or None outside a chain."""
    place = chains.place(issue, total)
    if place is None:
        return None
    return {"step": place.step, "of": place.of, "audience": place.audience,
            "delay_seconds": place.delay_seconds, "at": iso(place.at), "due_at": iso(place.due_at),
            "previous_id": issue.chain_parent_id}


def _issue(issue_id: int) -> Issue:
    issue = db.session.get(Issue, issue_id, populate_existing=True)
    if issue is None:
        raise IssueNotFound(issue_id)
    return issue


def _utc(moment: datetime | None) -> datetime | None:
    """A moment as the database keeps it: naive UTC (a moment without a zone is UTC)."""
    if moment is not None and moment.tzinfo is not None:
        return moment.astimezone(UTC).replace(tzinfo=None)
    return moment


@endpoint("/issues", "GET", READERS, out=s.IssuesOut, query=s.IssuesQuery, errors=(), tag=TAG)
def list_issues() -> Any:
    """Issues, newest first"""
    q = ctx("query")
    rows, cursor = keyset(issue_rows.outgoing_query(q.status), Issue.id, q.cursor, q.limit)
    return {"issues": [issue_json(i) for i in rows], "next_cursor": cursor}


@endpoint("/issues/<int:issue_id>", "GET", READERS, out=s.IssueFullOut, tag=TAG)
def get_issue(issue_id: int) -> Any:
    """One issue with its letter and progress"""
    return full_json(_issue(issue_id))


# --- drafts: the editor's form, through the API ------------------------------------

def _save_draft(issue: Issue, values: dict[str, Any]) -> None:
    """Check `values` with the editor's own form (every rule the page applies: the sender
    and list exist, placeholders name known fields, the spread is complete) and save them.
    The first fault is a FieldError naming its field; nothing is saved then."""
    data: MultiDict[str, str] = MultiDict()
    for key, value in values.items():
        if value is None or value is False:
            continue
        data[key] = "y" if value is True else str(value)
    form = IssueForm(formdata=data, meta={"csrf": False})
    form.fill_choices()
    if not form.validate():
        field, messages = next(iter(form.errors.items()))
        raise FieldError(field, f"{field}: {messages[0]}")
    form.save(issue)


@endpoint("/issues", "POST", EDITORS, ok=201, out=s.IssueFullOut, json=s.DraftIn, errors=(), tag=TAG)
def create_draft() -> Any:
    """Create a draft"""
    issue = Issue(created_by_id=g.api_user.id)
    _save_draft(issue, ctx("json").model_dump())
    db.session.add(issue)
    db.session.flush()
    states.record(issue.id, "created", actor=g.api_user)
    db.session.commit()
    return full_json(_issue(issue.id)), 201


@endpoint("/issues/<int:issue_id>", "PATCH", EDITORS, out=s.IssueFullOut, json=s.DraftPatch,
          errors=(404, 409), tag=TAG)
def update_draft(issue_id: int) -> Any:
    """Change a draft's letter or settings (fields left out keep their value)"""
    issue = _issue(issue_id)
    locked = lifecycle.edit_lock_reason(issue)
    if locked:
        raise Conflict("locked", locked)
    # The draft as the editor's form shows it (IssueForm.load speaks its spread), then the changes.
    current = IssueForm(formdata=None, obj=issue, meta={"csrf": False})
    current.load(issue)
    values = {k: v for k, v in current.data.items() if k != "csrf_token"}
    changes = ctx("json").model_dump(exclude_none=True)
    if changes.get("spread") in ("none", "hours"):
        values.pop("portion_size", None), values.pop("portion_minutes", None)
    values.update(changes)
    _save_draft(issue, values)
    states.record(issue.id, "edited", actor=g.api_user)
    db.session.commit()
    return full_json(_issue(issue_id))


@endpoint("/issues/<int:issue_id>", "DELETE", EDITORS, out=s.DeletedOut, errors=(404, 409), tag=TAG)
def delete_issue(issue_id: int) -> Any:
    """Delete a draft and every later step of its chain"""
    _issue(issue_id)
    return {"deleted": chains.delete(issue_id, g.api_user)}


@endpoint("/issues/<int:issue_id>/preview", "GET", READERS, out=s.PreviewOut, query=s.PreviewQuery,
          tag=TAG)
def preview(issue_id: int) -> Any:
    """The letter as a contact would get it (?as= an address; else the list's first)"""
    proof = proofs.preview(_issue(issue_id), ctx("query").as_)
    return {"subject": proof.subject, "html": proof.html, "recipient": proof.recipient}


@endpoint("/issues/<int:issue_id>/test", "POST", EDITORS, out=s.TestOut, json=s.TestIn,
          errors=(404, 502), tag=TAG)
def test_letter(issue_id: int) -> Any:
    """Send one test letter now through the sender's relay"""
    body = ctx("json")
    issue = _issue(issue_id)
    try:
        normalise_key(body.email)
    except EmailNotValidError as exc:
        raise FieldError("email", f"email: {exc}") from None
    try:
        result = proofs.send_test(issue, body.email.strip(), body.contact, g.api_user)
    except proofs.TestFailed as exc:
        return {"error": "relay", "message": exc.message}, 502
    return {"ok": result.ok, "reply": result.reply}


@endpoint("/issues/<int:issue_id>/launch", "POST", EDITORS, ok=202, out=s.IssueOut, json=s.LaunchIn,
          errors=(404, 409), tag=TAG)
def launch(issue_id: int) -> Any:
    """Launch now, at a time, or postpone"""
    body = ctx("json")
    if body.mode == "at" and body.send_at is None:
        raise FieldError("send_at", "send_at: give the date and time (ISO 8601, UTC) to send at.")
    _issue(issue_id)
    lifecycle.launch(issue_id, g.api_user, at=_utc(body.send_at) if body.mode == "at" else None,
                     postpone=body.mode == "postpone")
    return issue_json(_issue(issue_id)), 202


def _action(name: str, run: Any, summary: str) -> None:
    def act(issue_id: int) -> Any:
        _issue(issue_id)
        run(issue_id, g.api_user)
        return issue_json(_issue(issue_id))

    act.__name__ = f"issue_{name.replace('-', '_')}"
    act.__doc__ = summary
    endpoint(f"/issues/<int:issue_id>/{name}", "POST", EDITORS, out=s.IssueOut, errors=(404, 409), tag=TAG)(act)


_action("pause", lifecycle.pause, "Pause: no new message starts")
_action("send-whole", lifecycle.send_whole, "Release the whole remaining run at once")
_action("cancel", lifecycle.cancel, "Cancel for good; the rest get stopped manually")
_action("send-now", lifecycle.send_now, "Send a scheduled issue now")


@endpoint("/issues/<int:issue_id>/resume", "POST", EDITORS, out=s.IssueOut, json=s.ResumeIn,
          errors=(404, 409), tag=TAG)
def resume(issue_id: int) -> Any:
    """Resume a paused or interrupted issue (after a rate interrupt: admins, with a comment)"""
    _issue(issue_id)
    lifecycle.resume(issue_id, g.api_user, comment=ctx("json").comment)
    return issue_json(_issue(issue_id))


# --- around the send: copy, resend, chain steps ------------------------------------

@endpoint("/issues/<int:issue_id>/copy", "POST", EDITORS, ok=201, out=s.IssueOut, tag=TAG)
def copy_issue(issue_id: int) -> Any:
    """Copy into a new draft (letter, sender, list, spread)"""
    _issue(issue_id)
    return issue_json(_issue(chains.copy(issue_id, g.api_user))), 201


@endpoint("/issues/<int:issue_id>/resend", "GET", READERS, out=s.ResendCountsOut, tag=TAG)
def resend_counts(issue_id: int) -> Any:
    """How many each resend choice would reach now"""
    _issue(issue_id)
    return chains.resend_counts(issue_id)


@endpoint("/issues/<int:issue_id>/resend", "POST", EDITORS, ok=202, out=s.IssueOut, json=s.ResendIn,
          errors=(404, 409), tag=TAG)
def resend(issue_id: int) -> Any:
    """Send a sent or cancelled issue again, as a new linked issue launched now"""
    _issue(issue_id)
    new_id = chains.resend(issue_id, g.api_user, ctx("json").audience)
    lifecycle.launch(new_id, g.api_user)
    return issue_json(_issue(new_id)), 202


@endpoint("/issues/<int:issue_id>/steps", "GET", READERS, out=s.StepsOut, tag=TAG)
def list_steps(issue_id: int) -> Any:
    """The steps of the issue's chain, in order"""
    issue = _issue(issue_id)
    rows = chains.steps(issue) if issue.chain_root_id is not None else []
    return {"steps": [{"id": x.id, "step": x.chain_step, "subject": x.subject, "status": x.status,
                       "chain": chain_json(x, len(rows))} for x in rows]}


@endpoint("/issues/<int:issue_id>/steps", "POST", EDITORS, ok=201, out=s.IssueOut, json=s.StepIn,
          errors=(404, 409), tag=TAG)
def add_step(issue_id: int) -> Any:
    """Append a step: a delay after the previous step finishes, or a date"""
    body = ctx("json")
    _issue(issue_id)
    step_id = chains.add_step(issue_id, g.api_user, audience=body.audience, delay_seconds=body.delay_seconds,
                              at=_utc(body.at))
    return issue_json(_issue(step_id)), 201


@endpoint("/issues/<int:issue_id>/assemble", "POST", EDITORS, out=s.AssembledOut, json=s.AssembleIn,
          errors=(404, 409), tag=TAG)
def assemble(issue_id: int) -> Any:
    """Build a draft's letter from materials through a template"""
    body = ctx("json")
    _issue(issue_id)
    materials.assemble(issue_id, body.material_ids, body.template_id, g.api_user, section_ids=body.section_ids)
    issue = _issue(issue_id)
    return {**issue_json(issue), "body_html": issue.body_html}


# --- what happened: deliveries and the journal -------------------------------------

def _reply(d: Any) -> str | None:
    return f"{d.reply_code} {d.reply_enhanced or ''} {d.reply_text or ''}".replace("  ", " ").strip() \
        if d.reply_code else None


@endpoint("/issues/<int:issue_id>/deliveries", "GET", READERS, out=s.DeliveriesOut,
          query=s.DeliveriesQuery, tag=TAG)
def list_deliveries(issue_id: int) -> Any:
    """The issue's recipients and what happened to each (?state= to narrow)"""
    q = ctx("query")
    _issue(issue_id)
    rows, cursor = keyset(deliveries.of_issue(issue_id, q.state), Delivery.id, q.cursor, q.limit)
    return {"deliveries": [{"id": d.id, "email": d.email, "name": d.name, "state": d.state,
                            "attempts": d.attempts, "reply": _reply(d), "reason": d.reason,
                            "message_id": d.message_id, "sent_at": iso(d.sent_at),
                            "next_attempt_at": iso(d.next_attempt_at)} for d in rows],
            "next_cursor": cursor}


def event_json(e: JournalEvent) -> dict[str, Any]:
    return {"id": e.id, "at": iso(e.created_at), "issue_id": e.issue_id, "issue_title": e.issue_title,
            "actor": e.actor_label, "event": e.event, "from_status": e.from_status, "to_status": e.to_status,
            "reason": e.reason, "details": e.details or {}}


@endpoint("/issues/<int:issue_id>/journal", "GET", READERS, out=s.JournalOut, query=s.Page, tag=TAG)
def issue_journal(issue_id: int) -> Any:
    """Who did what to the issue, newest first"""
    q = ctx("query")
    _issue(issue_id)
    rows, cursor = keyset(journal_rows.events_query(issue_id), JournalEvent.id, q.cursor, q.limit)
    return {"events": [event_json(e) for e in rows], "next_cursor": cursor}


@endpoint("/journal", "GET", READERS, out=s.JournalOut, query=s.JournalQuery, errors=(), tag="journal")
def journal() -> Any:
    """The whole journal, newest first (?issue= and ?event= narrow it)"""
    q = ctx("query")
    rows, cursor = keyset(journal_rows.events_query(q.issue, event=q.event), JournalEvent.id, q.cursor, q.limit)
    return {"events": [event_json(e) for e in rows], "next_cursor": cursor}
