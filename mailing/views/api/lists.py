"""Stop-lists, the letter package, late reports and triggered participants through the API."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from flask import current_app, g, request

from ... import bounces, package, stoplists, triggers
from ...enums import Role
from ...extensions import db
from ...models import StopEntry, StopList
from ..access import EDITORS, READERS
from . import schemas as s
from .base import ctx, endpoint, iso, keyset

TAG = "stop-lists"


def _stoplist(list_id: int) -> StopList:
    return db.get_or_404(StopList, list_id, description="No such stop-list.")


@endpoint("/stoplists", "GET", READERS, out=s.StopListsOut, errors=(), tag=TAG)
def list_stoplists() -> Any:
    """Stop-lists, with how many entries each holds"""
    counts = stoplists.counts()
    return {"stoplists": [{"id": x.id, "name": x.name, "code": x.code, "system": x.system,
                           "entries": counts.get(x.id, 0)}
                          for x in db.session.scalars(sa.select(StopList).order_by(StopList.id))]}


@endpoint("/stoplists", "POST", EDITORS, ok=201, out=s.StopListOut, json=s.StopListIn, errors=(), tag=TAG)
def create_stoplist() -> Any:
    """Create a team's own stop-list"""
    stop = StopList(name=ctx("json").name.strip() or "?")
    db.session.add(stop)
    db.session.commit()
    return {"id": stop.id, "name": stop.name, "code": None, "system": False, "entries": 0}, 201


@endpoint("/stoplists/<int:list_id>", "PATCH", EDITORS, out=s.StopListOut, json=s.StopListIn,
          errors=(404, 409), tag=TAG)
def rename_stoplist(list_id: int) -> Any:
    """Rename a team's own list (system lists refuse)"""
    stop = _stoplist(list_id)
    stoplists.rename(stop, ctx("json").name.strip() or stop.name)
    return {"id": stop.id, "name": stop.name, "code": stop.code, "system": stop.system,
            "entries": stoplists.counts().get(stop.id, 0)}


@endpoint("/stoplists/<int:list_id>", "DELETE", EDITORS, ok=204, errors=(404, 409), tag=TAG)
def delete_stoplist(list_id: int) -> Any:
    """Delete a team's own list (system lists refuse)"""
    stoplists.delete(_stoplist(list_id))
    return "", 204


@endpoint("/stoplists/<int:list_id>/entries", "GET", READERS, out=s.StopEntriesOut, query=s.StopEntriesQuery,
          tag=TAG)
def list_entries(list_id: int) -> Any:
    """A stop-list's entries, newest first (?q= finds an address or phone)"""
    q = ctx("query")
    rows, cursor = keyset(stoplists.entries_query(_stoplist(list_id), q.q), StopEntry.id, q.cursor,
                          q.limit, scalars=False)
    return {"entries": [{"id": e.id, "kind": e.kind, "value": e.value, "in_contact_base": bool(b),
                         "source": e.source, "created_at": iso(e.created_at)} for e, b in rows],
            "next_cursor": cursor}


@endpoint("/stoplists/<int:list_id>/entries", "POST", EDITORS, out=s.StopAddedOut, json=s.StopEntriesIn,
          errors=(404, 409, 413), tag=TAG)
def add_entries(list_id: int) -> Any:
    """Add addresses or phones; bad lines are reported and the good ones kept"""
    stop = _stoplist(list_id)
    entries = ctx("json").entries
    # End the read before add_pasted checks the lines: on SQLite it holds the write lock.
    db.session.commit()
    report = stoplists.add_pasted(stop, "\n".join(x.replace("\n", " ") for x in entries),
                                  actor=g.api_user, source="api", region=current_app.config["DEFAULT_PHONE_REGION"])
    return {"added": report.added, "already": report.already,
            "rejected": [{"line": r.line, "text": r.text, "reason": r.reason} for r in report.rejected]}


@endpoint("/stoplists/<int:list_id>/remove", "POST", EDITORS, out=s.RemovedOut, json=s.IdsIn,
          errors=(404, 409), tag=TAG)
def remove_entries(list_id: int) -> Any:
    """Remove entries by id (within the monthly removal quota)"""
    stop = _stoplist(list_id)
    return {"removed": stoplists.remove_entries(stop, ctx("json").ids, actor=g.api_user, source="api")}


@endpoint("/stoplists/<int:list_id>/clear", "POST", EDITORS, out=s.RemovedOut, errors=(404, 409), tag=TAG)
def clear_entries(list_id: int) -> Any:
    """Remove every entry of a list that may be cleared"""
    try:
        n = stoplists.clear(_stoplist(list_id), actor=g.api_user, source="api")
    except stoplists.SystemListError as exc:
        # Not "system_list": a team's own list cannot be cleared either.
        return {"error": "not_clearable", "message": str(exc)}, 409
    return {"removed": n}


# --- the letter package -------------------------------------------------------------

@endpoint("/package", "GET", EDITORS, out=s.PackageOut, errors=(), tag="package")
def package_state() -> Any:
    """The letter package: unlimited, or its balance"""
    balance = package.balance()
    return {"unlimited": balance is None, "balance": balance}


@endpoint("/package/top-up", "POST", (Role.ADMIN,), out=s.PackageOut, json=s.TopUpIn, errors=(), tag="package")
def package_top_up() -> Any:
    """Add letters to the package (admins; journalled)"""
    balance = package.top_up(ctx("json").amount, g.api_user)
    return {"unlimited": package.unlimited(), "balance": balance}


# --- what comes back, and who arrives ----------------------------------------------

def _report() -> Any:
    raw = request.get_data()
    if not raw.strip():
        return {"error": "body", "message": "Post the report's bytes (Content-Type: message/rfc822)."}, 400
    got = bounces.receive_one(raw, "api", keep_unreadable=False)
    if got.outcome == "refused":  # the caller holds the message: nothing is kept
        return {"error": "unreadable", "message": f"Not a bounce or complaint report: {got.reason}."}, 400
    return {"outcome": got.outcome, "kind": got.kind, "reason": got.reason, "delivery_id": got.delivery_id}


@endpoint("/bounces", "POST", EDITORS, out=s.ReportOut, errors=(413,), tag="reports")
def bounce_report() -> Any:
    """A late bounce (DSN) as message/rfc822 bytes

    Applied to the delivery it names, or quarantined. 400, keeping nothing, when it
    cannot be read as a report at all."""
    return _report()


@endpoint("/complaints", "POST", EDITORS, out=s.ReportOut, errors=(413,), tag="reports")
def complaint_report() -> Any:
    """A complaint (ARF) as message/rfc822 bytes; read as /bounces reads a bounce"""
    return _report()


@endpoint("/triggers/<int:issue_id>/participants", "POST", EDITORS, ok=202, out=s.ParticipantOut,
          json=s.ParticipantIn, errors=(404, 409), more={200: s.ParticipantOut}, tag="triggers")
def participant(issue_id: int) -> Any:
    """One participant of a live triggered mailing

    202 with the new delivery; 200 with the first one's when the idempotency key (in the
    body or the Idempotency-Key header) was seen before."""
    body = ctx("json")
    key = body.idempotency_key if body.idempotency_key is not None else request.headers.get("Idempotency-Key")
    arrival = triggers.arrive(issue_id, email=body.email, contact_id=body.contact_id, name=body.name,
                              fields=body.fields, key=key)
    if arrival.live and not arrival.duplicate:
        triggers.wake(issue_id)
    return {"participant_id": arrival.participant_id, "delivery_id": arrival.delivery_id,
            "state": arrival.state, "reason": arrival.reason, "duplicate": arrival.duplicate}, \
        200 if arrival.duplicate else 202
