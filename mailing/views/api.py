"""JSON API under /api/v1/, authenticated by personal API tokens (Bearer), never by cookies,
so it needs no CSRF token. Errors are {"error": ..., "message": ...} with 400/401/403/404/409,
answered by mailing/errors.py (domain errors raised by the use cases included)."""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, datetime
from functools import wraps
from typing import Any

import sqlalchemy as sa
from flask import Blueprint, current_app, g, jsonify, request, url_for

from .. import (
    bounces,
    chains,
    lifecycle,
    materials,
    package,
    queueing,
    settings,
    stoplists,
    triggers,
)
from ..enums import Role
from ..errors import error
from ..extensions import csrf, db
from ..models import ApiToken, Issue, Material, StopList, utcnow
from ..states import IssueNotFound, available_actions
from ..store import deliveries
from ..store import issues as issue_rows
from .access import EDITORS, READERS
from .params import is_id, page_arg

bp = Blueprint("api", __name__, url_prefix="/api/v1")
csrf.exempt(bp)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


LAST_USED_EVERY = 60  # seconds between writes of a token's last_used_at


def _over_rate(token_id: int) -> int:
    """Seconds to wait when the token has used up this minute's `api_requests_per_minute`
    (a fixed window in Redis, shared by every web process), else 0."""
    limit = int(settings.get("api_requests_per_minute"))
    if limit <= 0:
        return 0
    now = time.time()
    key = f"outbox:api:{token_id}:{int(now // 60)}"
    pipe = queueing.redis_connection().pipeline(transaction=False)
    pipe.incr(key)
    pipe.expire(key, 120)
    used = pipe.execute()[0]
    return 0 if used <= limit else max(int(60 - now % 60) + 1, 1)


def api(*roles: str):
    """Authenticate the Bearer token and check the user's role."""

    def deco(view):
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            header = request.headers.get("Authorization", "")
            if not header.startswith("Bearer "):
                return error(401, "unauthorized", "Send an API token: Authorization: Bearer <token>.")
            token = db.session.scalar(sa.select(ApiToken).where(
                ApiToken.token_hash == token_hash(header[7:].strip()), ApiToken.revoked_at.is_(None)))
            if token is None:
                return error(401, "unauthorized", "The API token is unknown or revoked.")
            if token.expired:
                return error(401, "token_expired", "The API token has expired; create a new one on your profile page.")
            if token.user.disabled_at is not None:
                return error(401, "unauthorized", "The API token's user is disabled.")
            if token.read_only and request.method not in ("GET", "HEAD", "OPTIONS"):
                return error(403, "read_only", "This API token is read-only: it may only read (GET).")
            if token.user.role not in roles:
                return error(403, "forbidden", f"The role {token.user.role} may not do this.")
            user, last_used, token_id = token.user, token.last_used_at, token.id
            db.session.commit()  # end the read before writing (see create_app's SQLite setup)
            wait = _over_rate(token_id)
            if wait:
                resp = error(429, "rate_limited", f"Too many requests for this token; retry in {wait} s.")
                resp[0].headers["Retry-After"] = str(wait)
                return resp
            now = utcnow()
            if last_used is None or (now - last_used).total_seconds() >= LAST_USED_EVERY:
                # At most once a minute: a client polling the API must not make every GET
                # a write transaction (on SQLite each takes the database's write lock).
                db.session.execute(sa.update(ApiToken).where(ApiToken.id == token_id).values(last_used_at=now))
                db.session.commit()
            g.api_user = user
            return view(*args, **kwargs)

        wrapper.allowed_roles = roles  # type: ignore[attr-defined]
        return wrapper

    return deco


def issue_json(issue: Issue) -> dict[str, Any]:
    p = issue_rows.progress(issue)
    return {
        "id": issue.id, "subject": issue.subject, "status": issue.status,
        "kind": issue.kind, "status_reason": issue.status_reason, "interrupt_kind": issue.interrupt_kind,
        "sender_id": issue.sender_id, "list_id": issue.list_id,
        "send_at": issue.send_at.isoformat() + "Z" if issue.send_at else None,
        "started_at": issue.started_at.isoformat() + "Z" if issue.started_at else None,
        "finished_at": issue.finished_at.isoformat() + "Z" if issue.finished_at else None,
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
                   "released": issue.released,
                   "next_portion_at": p.next_portion_at.isoformat() + "Z" if p.next_portion_at else None},
        "actions": available_actions(issue.status),
        "last_reply": issue.last_reply,
        "chain": chain_json(issue),
        "resent_from_id": issue.resent_from_id, "resend_audience": issue.resend_audience,
    }


def chain_json(issue: Issue, total: int | None = None) -> dict[str, Any] | None:
    """The issue's place in its chain (mailing/chains.py), or None outside a chain."""
    place = chains.place(issue, total)
    if place is None:
        return None
    return {"step": place.step, "of": place.of, "audience": place.audience,
            "delay_seconds": place.delay_seconds, "at": place.at.isoformat() + "Z" if place.at else None,
            "due_at": place.due_at.isoformat() + "Z" if place.due_at else None,
            "previous_id": issue.chain_parent_id}


def _issue(issue_id: int) -> Issue:
    issue = db.session.get(Issue, issue_id, populate_existing=True)
    if issue is None:
        raise IssueNotFound(issue_id)
    return issue


@bp.get("/issues")
@api(*READERS)
def list_issues() -> Any:
    status = request.args.get("status", "")
    if status not in issue_rows.OUTGOING_FILTERS:
        return error(400, "status", f"Unknown status filter {status!r}.")
    page = page_arg()  # 400 {"error": "page"} unless 1..MAX_PAGE in ASCII digits
    rows, has_next = issue_rows.outgoing_page(status, page)
    return jsonify(issues=[issue_json(i) for i in rows], page=page, has_next=has_next)


@bp.get("/issues/<int:issue_id>")
@api(*READERS)
def get_issue(issue_id: int) -> Any:
    return jsonify(issue_json(_issue(issue_id)))


@bp.post("/issues/<int:issue_id>/launch")
@api(*EDITORS)
def launch(issue_id: int) -> Any:
    body = request.get_json(silent=True)
    if body is None:
        body = {}
    if not isinstance(body, dict):
        return error(400, "body", "The body must be a JSON object.")
    mode = body.get("mode", "now")
    if mode not in ("now", "at", "postpone"):
        return error(400, "mode", "mode is one of now, at, postpone.")
    at = None
    if mode == "at":
        try:
            at = datetime.fromisoformat(str(body.get("send_at", "")).replace("Z", "+00:00"))
        except ValueError:
            return error(400, "send_at", "send_at must be an ISO 8601 date and time (UTC).")
        if at.tzinfo is not None:
            at = at.astimezone(UTC).replace(tzinfo=None)
    _issue(issue_id)
    lifecycle.launch(issue_id, g.api_user, at=at, postpone=mode == "postpone")
    return jsonify(issue_json(_issue(issue_id))), 202


# --- triggered mailings (mailing/triggers.py) ------------------------------------

@bp.post("/triggers/<int:issue_id>/participants")
@api(*EDITORS)
def participant(issue_id: int) -> Any:
    """One participant of a live triggered mailing: {"email" | "contact_id", "name",
    "fields", "idempotency_key"} (or the Idempotency-Key header). 202 with the new
    delivery; 200 with the first one's when the key was seen before."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return error(400, "body", "The body must be a JSON object.")
    key = body.get("idempotency_key", request.headers.get("Idempotency-Key"))
    arrival = triggers.arrive(issue_id, email=body.get("email"), contact_id=body.get("contact_id"),
                              name=body.get("name"), fields=body.get("fields"), key=key)
    if arrival.live and not arrival.duplicate:
        triggers.wake(issue_id)
    return jsonify(participant_id=arrival.participant_id, delivery_id=arrival.delivery_id,
                   state=arrival.state, reason=arrival.reason, duplicate=arrival.duplicate), \
        200 if arrival.duplicate else 202


# --- materials, templates and assembling (mailing/materials.py) -------------------

def material_json(m: Material) -> dict[str, Any]:
    return {"id": m.id, "section_id": m.section_id, "title": m.title, "summary": m.summary,
            "body_html": m.body_html, "link": m.link, "image_url": m.image_url,
            "published_at": m.published_at.isoformat() + "Z" if m.published_at else None}


@bp.get("/materials")
@api(*READERS)
def list_materials() -> Any:
    """Newest first; ?q= searches titles and summaries, ?section= narrows to one section."""
    section = request.args.get("section")
    if section is not None and not is_id(section):
        return error(400, "section", "section is a section id.")
    items = materials.search((request.args.get("q") or "")[:200], int(section) if section else None)
    return jsonify(materials=[material_json(m) for m in items])


@bp.post("/materials")
@api(*EDITORS)
def create_material() -> Any:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return error(400, "body", "The body must be a JSON object.")
    return jsonify(material_json(materials.save_material(None, body, g.api_user))), 201


@bp.route("/materials/<int:material_id>", methods=["GET", "PATCH", "DELETE"])
@api(*READERS)
def one_material(material_id: int) -> Any:
    material = db.get_or_404(Material, material_id, description="No such material.")
    if request.method != "GET":
        if g.api_user.role not in EDITORS:
            return error(403, "forbidden", f"The role {g.api_user.role} may not do this.")
        if request.method == "DELETE":
            materials.delete_material(material)
            return "", 204
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            return error(400, "body", "The body must be a JSON object.")
        materials.save_material(material, body, g.api_user)
    return jsonify(material_json(material))


@bp.get("/sections")
@api(*READERS)
def list_sections() -> Any:
    return jsonify(sections=[{"id": s.id, "name": s.name} for s in materials.sections()])


@bp.get("/templates")
@api(*READERS)
def list_templates() -> Any:
    return jsonify(templates=[{"id": t.id, "name": t.name, "shipped": t.shipped, "html": t.html}
                              for t in materials.templates()])


@bp.post("/issues/<int:issue_id>/assemble")
@api(*EDITORS)
def assemble(issue_id: int) -> Any:
    """Build a Draft's letter from {"material_ids": [...], "template_id": n, "section_ids": [...]}."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return error(400, "body", "The body must be a JSON object.")
    _issue(issue_id)
    materials.assemble(issue_id, body.get("material_ids"), body.get("template_id"), g.api_user,
                       section_ids=body.get("section_ids"))
    issue = _issue(issue_id)
    return jsonify({**issue_json(issue), "body_html": issue.body_html})


# --- around the send: copy, resend, delete, chain steps (mailing/chains.py) ---------

def _body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise chains.ChainError("body", "The body must be a JSON object.")
    return body


@bp.post("/issues/<int:issue_id>/copy")
@api(*EDITORS)
def copy_issue(issue_id: int) -> Any:
    _issue(issue_id)
    return jsonify(issue_json(_issue(chains.copy(issue_id, g.api_user)))), 201


@bp.get("/issues/<int:issue_id>/resend")
@api(*READERS)
def resend_counts(issue_id: int) -> Any:
    """Whom each resend choice would reach now."""
    _issue(issue_id)
    return jsonify(chains.resend_counts(issue_id))


@bp.post("/issues/<int:issue_id>/resend")
@api(*EDITORS)
def resend(issue_id: int) -> Any:
    """A new issue linked to this one, launched now: {"audience": "all" | "not_reached"}."""
    audience = _body().get("audience")
    _issue(issue_id)
    new_id = chains.resend(issue_id, g.api_user, audience if isinstance(audience, str) else "")
    lifecycle.launch(new_id, g.api_user)
    return jsonify(issue_json(_issue(new_id))), 202


@bp.delete("/issues/<int:issue_id>")
@api(*EDITORS)
def delete_issue(issue_id: int) -> Any:
    """A draft and every later step of its chain."""
    _issue(issue_id)
    return jsonify(deleted=chains.delete(issue_id, g.api_user))


@bp.get("/issues/<int:issue_id>/steps")
@api(*READERS)
def list_steps(issue_id: int) -> Any:
    issue = _issue(issue_id)
    rows = chains.steps(issue) if issue.chain_root_id is not None else []
    return jsonify(steps=[{"id": s.id, "step": s.chain_step, "subject": s.subject, "status": s.status,
                           "chain": chain_json(s, len(rows))} for s in rows])


@bp.post("/issues/<int:issue_id>/steps")
@api(*EDITORS)
def add_step(issue_id: int) -> Any:
    """Append a step: {"audience": "all" | "sent" | "not_reached", "delay_seconds": N} or
    {"audience": ..., "at": "2030-01-01T09:00:00Z"}."""
    body = _body()
    audience, delay, at_text = body.get("audience", "all"), body.get("delay_seconds"), body.get("at")
    if not isinstance(audience, str):
        return error(400, "audience", "audience is one of all, sent, not_reached.")
    if delay is not None and (isinstance(delay, bool) or not isinstance(delay, int)):
        return error(400, "delay_seconds", "delay_seconds is a whole number of seconds.")
    at = None
    if at_text is not None:
        try:
            at = datetime.fromisoformat(str(at_text).replace("Z", "+00:00"))
        except ValueError:
            return error(400, "at", "at must be an ISO 8601 date and time (UTC).")
        if at.tzinfo is not None:
            at = at.astimezone(UTC).replace(tzinfo=None)
    _issue(issue_id)
    step_id = chains.add_step(issue_id, g.api_user, audience=audience, delay_seconds=delay, at=at)
    return jsonify(issue_json(_issue(step_id))), 201


ACTIONS = {"pause": lifecycle.pause, "resume": lifecycle.resume, "send-whole": lifecycle.send_whole,
           "cancel": lifecycle.cancel, "send-now": lifecycle.send_now}


@bp.post("/issues/<int:issue_id>/<action>")
@api(*EDITORS)
def act(issue_id: int, action: str) -> Any:
    if action not in ACTIONS:
        return error(404, "not_found", f"Unknown action {action!r}.")
    _issue(issue_id)
    if action == "resume":  # after a rate interrupt an admin gives a comment
        body = request.get_json(silent=True) if request.is_json else None
        comment = body.get("comment", "") if isinstance(body, dict) else ""
        lifecycle.resume(issue_id, g.api_user, comment=comment if isinstance(comment, str) else "")
    else:
        ACTIONS[action](issue_id, g.api_user)
    return jsonify(issue_json(_issue(issue_id)))


@bp.get("/openapi.json")
def openapi() -> Any:
    """The API described in OpenAPI 3 (public: it holds no data)."""
    err = {"$ref": "#/components/responses/Error"}
    issue_ref = {"description": "The issue", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Issue"}}}}
    id_param = {"name": "issue_id", "in": "path", "required": True, "schema": {"type": "integer"}}
    material_id = {"name": "material_id", "in": "path", "required": True, "schema": {"type": "integer"}}
    material_body = {"content": {"application/json": {"schema": {"type": "object", "properties": {
        "section_id": {"type": "integer"}, "title": {"type": "string"}, "summary": {"type": "string"},
        "body_html": {"type": "string"}, "link": {"type": "string"}, "image_url": {"type": "string"},
        "published_at": {"type": "string"}}}}}}

    def action(summary: str) -> dict[str, Any]:
        return {"post": {"summary": summary, "parameters": [id_param],
                         "responses": {"200": issue_ref, "401": err, "403": err, "404": err, "409": err}}}

    spec = {
        "openapi": "3.0.3",
        "info": {"title": "Outbox API", "version": "1"},
        "servers": [{"url": url_for("api.list_issues", _external=True).rsplit("/issues", 1)[0]}],
        "security": [{"bearer": []}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "A personal API token from your profile page. It may have an "
                                                          "expiry (then 401 token_expired) and may be read-only "
                                                          "(then 403 read_only on anything but GET)."}},
            "responses": {"Error": {"description": "An error", "content": {"application/json": {"schema": {
                "type": "object", "required": ["error", "message"],
                "properties": {"error": {"type": "string"}, "message": {"type": "string"}}}}}}},
            "schemas": {"Issue": {"type": "object", "properties": {
                "id": {"type": "integer"}, "subject": {"type": "string"},
                "status": {"type": "string", "enum": ["draft", "scheduled", "moderation", "accepted", "sending",
                                                      "paused", "stopping", "cancelled", "interrupted", "sent"]},
                "status_reason": {"type": "string", "nullable": True},
                "progress": {"type": "object", "properties": {k: {"type": "number", "nullable": True} for k in (
                    "total", "sent", "failed", "suppressed", "stopped", "remaining", "percent",
                    "rate_per_s", "eta_s")}},
                "actions": {"type": "array", "items": {"type": "string"}}}}},
        },
        "paths": {
            "/issues": {"get": {"summary": "List issues", "parameters": [
                {"name": "status", "in": "query", "schema": {"type": "string"}},
                {"name": "page", "in": "query", "schema": {"type": "integer", "minimum": 1}}],
                "responses": {"200": {"description": "A page of issues"}, "400": err, "401": err}}},
            "/issues/{issue_id}": {"get": {"summary": "One issue with its progress", "parameters": [id_param],
                                           "responses": {"200": issue_ref, "401": err, "404": err}},
                                   "delete": {"summary": "Delete a draft and its chain's later steps",
                                              "parameters": [id_param],
                                              "responses": {"200": {"description": '{"deleted": [ids]}'},
                                                            "401": err, "403": err, "404": err, "409": err}}},
            "/issues/{issue_id}/launch": {"post": {
                "summary": "Launch now, at a time, or postpone", "parameters": [id_param],
                "requestBody": {"content": {"application/json": {"schema": {"type": "object", "properties": {
                    "mode": {"type": "string", "enum": ["now", "at", "postpone"]},
                    "send_at": {"type": "string", "format": "date-time"}}}}}},
                "responses": {"202": issue_ref, "400": err, "401": err, "403": err, "404": err, "409": err}}},
            "/issues/{issue_id}/pause": action("Pause: no new message starts"),
            "/issues/{issue_id}/resume": {"post": {
                "summary": "Resume a paused or interrupted issue; after a rate interrupt only an admin, "
                           "with a comment", "parameters": [id_param],
                "requestBody": {"content": {"application/json": {"schema": {"type": "object", "properties": {
                    "comment": {"type": "string"}}}}}},
                "responses": {"200": issue_ref, "400": err, "401": err, "403": err, "404": err, "409": err}}},
            "/bounces": {"post": {
                "summary": "A late bounce (DSN) or a complaint (ARF) as message/rfc822 bytes: applied to the "
                           "delivery it names, or quarantined; also at /complaints",
                "requestBody": {"content": {"message/rfc822": {"schema": {"type": "string", "format": "binary"}}}},
                "responses": {"200": {"description": '{"outcome": "applied"|"quarantined"|"duplicate", "kind", '
                                                     '"reason", "delivery_id"}'},
                              "400": err, "401": err, "403": err}}},
            "/materials": {
                "get": {"summary": "Materials, newest first (?q= search, ?section= id)",
                        "responses": {"200": {"description": '{"materials": [...]}'}, "400": err, "401": err}},
                "post": {"summary": "Add a material (its body_html is sanitised)",
                         "requestBody": material_body,
                         "responses": {"201": {"description": "The material"}, "400": err, "401": err, "403": err}}},
            "/materials/{material_id}": {
                "get": {"summary": "One material", "parameters": [material_id],
                        "responses": {"200": {"description": "The material"}, "401": err, "404": err}},
                "patch": {"summary": "Change a material (only the fields given)", "parameters": [material_id],
                          "requestBody": material_body, "responses": {"200": {"description": "The material"},
                          "400": err, "401": err, "403": err, "404": err}},
                "delete": {"summary": "Delete a material", "parameters": [material_id],
                           "responses": {"204": {"description": "Deleted"}, "401": err, "403": err, "404": err}}},
            "/sections": {"get": {"summary": "The materials' sections",
                                  "responses": {"200": {"description": '{"sections": [...]}'}, "401": err}}},
            "/templates": {"get": {"summary": "Letter templates", "responses": {
                "200": {"description": '{"templates": [...]}'}, "401": err}}},
            "/issues/{issue_id}/assemble": {"post": {
                "summary": "Build a draft's letter from materials through a template", "parameters": [id_param],
                "requestBody": {"content": {"application/json": {"schema": {"type": "object", "properties": {
                    "material_ids": {"type": "array", "items": {"type": "integer"}},
                    "template_id": {"type": "integer"},
                    "section_ids": {"type": "array", "items": {"type": "integer"}}}}}}},
                "responses": {"200": issue_ref, "400": err, "401": err, "403": err, "404": err, "409": err}}},
            "/package": {"get": {"summary": "The letter package: unlimited, or its balance",
                                 "responses": {"200": {"description": '{"unlimited": bool, "balance": n}'},
                                               "401": err, "403": err}}},
            "/package/top-up": {"post": {
                "summary": "Add letters to the package (admins)",
                "requestBody": {"content": {"application/json": {"schema": {"type": "object", "required": ["amount"],
                                "properties": {"amount": {"type": "integer", "minimum": 1}}}}}},
                "responses": {"200": {"description": '{"unlimited": bool, "balance": n}'}, "400": err,
                              "401": err, "403": err}}},
            "/issues/{issue_id}/send-whole": action("Release the whole remaining run at once"),
            "/issues/{issue_id}/cancel": action("Cancel for good; the rest get stopped_manually"),
            "/issues/{issue_id}/send-now": action("Send a scheduled issue now"),
            "/issues/{issue_id}/copy": {"post": {
                "summary": "Copy into a new draft (letter, sender, list, spread)", "parameters": [id_param],
                "responses": {"201": issue_ref, "401": err, "403": err, "404": err}}},
            "/issues/{issue_id}/resend": {
                "get": {"summary": "How many each resend choice would reach now", "parameters": [id_param],
                        "responses": {"200": {"description": '{"all": n, "not_reached": n}'}, "401": err, "404": err}},
                "post": {"summary": "Send a sent or cancelled issue again as a new linked issue",
                         "parameters": [id_param],
                         "requestBody": {"content": {"application/json": {"schema": {"type": "object", "properties": {
                             "audience": {"type": "string", "enum": ["all", "not_reached"]}}}}}},
                         "responses": {"202": issue_ref, "400": err, "401": err, "403": err, "404": err, "409": err}}},
            "/issues/{issue_id}/steps": {
                "get": {"summary": "The steps of the issue's chain", "parameters": [id_param],
                        "responses": {"200": {"description": "The steps in order"}, "401": err, "404": err}},
                "post": {"summary": "Append a step to the issue's chain", "parameters": [id_param],
                         "requestBody": {"content": {"application/json": {"schema": {"type": "object", "properties": {
                             "audience": {"type": "string", "enum": ["all", "sent", "not_reached"]},
                             "delay_seconds": {"type": "integer", "minimum": 0},
                             "at": {"type": "string", "format": "date-time"}}}}}},
                         "responses": {"201": issue_ref, "400": err, "401": err, "403": err, "404": err, "409": err}}},
        },
    }
    return jsonify(spec)


# --- stop-lists ---------------------------------------------------------------

def _stoplist(list_id: int) -> StopList:
    return db.get_or_404(StopList, list_id, description="No such stop-list.")


@bp.get("/stoplists")
@api(*READERS)
def list_stoplists() -> Any:
    counts = stoplists.counts()
    return jsonify(stoplists=[{"id": s.id, "name": s.name, "code": s.code, "system": s.system,
                               "entries": counts.get(s.id, 0)}
                              for s in db.session.scalars(sa.select(StopList).order_by(StopList.id))])


@bp.get("/stoplists/<int:list_id>/entries")
@api(*READERS)
def list_entries(list_id: int) -> Any:
    page = page_arg()  # 400 {"error": "page"} unless 1..MAX_PAGE in ASCII digits
    q = request.args.get("q", "")[:254]  # as the page's search box: SQLite refuses huge LIKE patterns
    rows, has_next = stoplists.entries_page(_stoplist(list_id), q, page)
    return jsonify(entries=[{"id": e.id, "kind": e.kind, "value": e.value, "in_contact_base": bool(b),
                             "source": e.source, "created_at": e.created_at.isoformat() + "Z"}
                            for e, b in rows], page=page, has_next=has_next)


@bp.post("/stoplists/<int:list_id>/entries")
@api(*EDITORS)
def add_entries(list_id: int) -> Any:
    stop = _stoplist(list_id)
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or not isinstance(body.get("entries"), list) \
            or not all(isinstance(x, str) for x in body["entries"]):
        return error(400, "entries", 'Send {"entries": ["address or phone", ...]}.')
    # End the read before add_pasted checks the lines: on SQLite it holds the write lock.
    db.session.commit()
    report = stoplists.add_pasted(stop, "\n".join(x.replace("\n", " ") for x in body["entries"]),
                                  actor=g.api_user, source="api",
                                  region=current_app.config["DEFAULT_PHONE_REGION"])
    return jsonify(added=report.added, already=report.already,
                   rejected=[{"line": r.line, "text": r.text, "reason": r.reason} for r in report.rejected])


@bp.post("/stoplists/<int:list_id>/remove")
@api(*EDITORS)
def remove_entries(list_id: int) -> Any:
    stop = _stoplist(list_id)
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or not isinstance(body.get("ids"), list) \
            or not all(is_id(x) for x in body["ids"]):
        return error(400, "ids", 'Send {"ids": [entry id, ...]} (positive whole numbers).')
    return jsonify(removed=stoplists.remove_entries(stop, body["ids"], actor=g.api_user, source="api"))


@bp.post("/stoplists/<int:list_id>/clear")
@api(*EDITORS)
def clear_entries(list_id: int) -> Any:
    try:
        n = stoplists.clear(_stoplist(list_id), actor=g.api_user, source="api")
    except stoplists.SystemListError as exc:
        # Not "system_list": a team's own list cannot be cleared either.
        return error(409, "not_clearable", str(exc))
    return jsonify(removed=n)


@bp.post("/stoplists")
@api(*EDITORS)
def create_stoplist() -> Any:
    body = request.get_json(silent=True)
    name = body.get("name") if isinstance(body, dict) else None
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        return error(400, "name", 'Send {"name": "..."} (1 to 200 characters).')
    stop = StopList(name=name.strip())
    db.session.add(stop)
    db.session.commit()
    return jsonify(id=stop.id, name=stop.name, code=None, system=False, entries=0), 201


@bp.route("/stoplists/<int:list_id>", methods=["PATCH", "DELETE"])
@api(*EDITORS)
def change_stoplist(list_id: int) -> Any:
    """Rename (PATCH {"name": ...}) or delete a team's own list; system lists refuse both."""
    stop = _stoplist(list_id)
    if request.method == "DELETE":
        stoplists.delete(stop)
        return "", 204
    body = request.get_json(silent=True)
    name = body.get("name") if isinstance(body, dict) else None
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        return error(400, "name", 'Send {"name": "..."} (1 to 200 characters).')
    stoplists.rename(stop, name.strip())
    return jsonify(id=stop.id, name=stop.name)


@bp.get("/package")
@api(*EDITORS)
def package_state() -> Any:
    """The letter package: {"unlimited": bool, "balance": int | null}."""
    balance = package.balance()
    return jsonify(unlimited=balance is None, balance=balance)


@bp.post("/package/top-up")
@api(Role.ADMIN)
def package_top_up() -> Any:
    """Add letters ({"amount": n}); admins only, journalled."""
    body = request.get_json(silent=True)
    amount = body.get("amount") if isinstance(body, dict) else None
    if isinstance(amount, bool) or not isinstance(amount, int):
        return error(400, "amount", 'Send {"amount": n}, a whole number of letters.')
    return jsonify(unlimited=package.unlimited(), balance=package.top_up(amount, g.api_user))


@bp.post("/bounces")
@bp.post("/complaints")
@api(*EDITORS)
def report() -> Any:
    """A late bounce (DSN) or a complaint (ARF) posted as message/rfc822 bytes, applied to
    the delivery it names or quarantined (mailing/bounces.py). 400, keeping nothing, when
    it cannot be read as a report at all; 200 with the outcome otherwise."""
    raw = request.get_data()
    if not raw.strip():
        return error(400, "body", "Post the report's bytes (Content-Type: message/rfc822).")
    got = bounces.receive_one(raw, "api", keep_unreadable=False)
    if got.outcome == "refused":  # the caller holds the message: nothing is kept
        return error(400, "unreadable", f"Not a bounce or complaint report: {got.reason}.")
    return jsonify(outcome=got.outcome, kind=got.kind, reason=got.reason, delivery_id=got.delivery_id)
