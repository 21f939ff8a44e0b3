"""Webhook endpoints through the API (mailing/webhooks.py), for admins only, as the page is.
The signing secret is in the answer that made or rolled it, and never again."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from flask import g

from ... import webhooks
from ...enums import Role
from ...extensions import db
from ...fielderror import FieldError
from ...models import WebhookAttempt, WebhookEndpoint
from . import schemas as s
from .base import ctx, endpoint, iso, keyset

TAG = "webhooks"
ADMINS = (Role.ADMIN,)


def endpoint_json(e: WebhookEndpoint) -> dict[str, Any]:
    return {"id": e.id, "url": e.url, "events": list(e.events or []), "enabled": e.enabled,
            "consecutive_failures": e.consecutive_failures, "disabled_at": iso(e.disabled_at),
            "disabled_reason": e.disabled_reason, "created_at": iso(e.created_at)}


def _endpoint(endpoint_id: int) -> WebhookEndpoint:
    return db.get_or_404(WebhookEndpoint, endpoint_id, description="No such webhook endpoint.")


def _check_url(url: str) -> str:
    problem = webhooks.url_problem(url)
    if problem:
        raise FieldError("url", problem)
    return url.strip()


@endpoint("/webhooks", "GET", ADMINS, out=s.EndpointsOut, errors=(), tag=TAG)
def list_endpoints() -> Any:
    """Webhook endpoints"""
    rows = db.session.scalars(sa.select(WebhookEndpoint).order_by(WebhookEndpoint.id))
    return {"endpoints": [endpoint_json(e) for e in rows]}


@endpoint("/webhooks", "POST", ADMINS, ok=201, out=s.EndpointMadeOut, json=s.EndpointIn, errors=(), tag=TAG)
def create_endpoint() -> Any:
    """Register an endpoint; the answer holds its signing secret, shown this once"""
    body = ctx("json")
    made, secret = webhooks.create_endpoint(_check_url(body.url), list(body.events), g.api_user)
    db.session.commit()
    webhooks.subscriptions_changed()
    return {**endpoint_json(made), "secret": secret}, 201


@endpoint("/webhooks/<int:endpoint_id>", "GET", ADMINS, out=s.EndpointOut, tag=TAG)
def get_endpoint(endpoint_id: int) -> Any:
    """One endpoint"""
    return endpoint_json(_endpoint(endpoint_id))


@endpoint("/webhooks/<int:endpoint_id>", "PATCH", ADMINS, out=s.EndpointOut, json=s.EndpointPatch, tag=TAG)
def update_endpoint(endpoint_id: int) -> Any:
    """Change an endpoint's URL or events, or switch it on or off"""
    hook, body = _endpoint(endpoint_id), ctx("json")
    url = _check_url(body.url) if body.url is not None else None
    if url is not None:
        hook.url = url
    if body.events is not None:
        hook.events = [e for e in webhooks.EVENT_TYPES if e in body.events]
    if body.enabled is not None and body.enabled != hook.enabled:
        webhooks.set_enabled(hook, body.enabled, g.api_user)
    db.session.commit()
    webhooks.subscriptions_changed()
    return endpoint_json(hook)


@endpoint("/webhooks/<int:endpoint_id>", "DELETE", ADMINS, ok=204, tag=TAG)
def delete_endpoint(endpoint_id: int) -> Any:
    """Delete an endpoint with its waiting events and its log"""
    webhooks.delete_endpoint(_endpoint(endpoint_id), g.api_user)
    db.session.commit()
    webhooks.subscriptions_changed()
    return "", 204


@endpoint("/webhooks/<int:endpoint_id>/roll", "POST", ADMINS, out=s.EndpointMadeOut, tag=TAG)
def roll_secret(endpoint_id: int) -> Any:
    """A new signing secret (the old one stops signing at once), shown this once"""
    hook = _endpoint(endpoint_id)
    secret = webhooks.roll_secret(hook, g.api_user)
    db.session.commit()
    return {**endpoint_json(hook), "secret": secret}


@endpoint("/webhooks/<int:endpoint_id>/ping", "POST", ADMINS, ok=202, out=s.EndpointOut, errors=(404, 409),
          tag=TAG)
def ping_endpoint(endpoint_id: int) -> Any:
    """Queue a test event to the endpoint"""
    hook = _endpoint(endpoint_id)
    if not hook.enabled:
        return {"error": "disabled", "message": "Switch the endpoint on first: a switched-off endpoint is sent "
                                                "nothing."}, 409
    webhooks.ping(hook, g.api_user)
    db.session.commit()
    return endpoint_json(hook), 202


@endpoint("/webhooks/<int:endpoint_id>/attempts", "GET", ADMINS, out=s.AttemptsOut, query=s.Page, tag=TAG)
def list_attempts(endpoint_id: int) -> Any:
    """The endpoint's delivery attempts, newest first, with the start of each answer"""
    q = ctx("query")
    _endpoint(endpoint_id)
    rows, cursor = keyset(sa.select(WebhookAttempt).where(WebhookAttempt.endpoint_id == endpoint_id),
                          WebhookAttempt.id, q.cursor, q.limit)
    return {"attempts": [{"id": a.id, "at": iso(a.at), "event_count": a.event_count, "status_code": a.status_code,
                          "response": a.response, "error": a.error, "duration_ms": a.duration_ms} for a in rows],
            "next_cursor": cursor}
