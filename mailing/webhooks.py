"""Webhooks: admins register endpoints; Outbox POSTs them signed batches of events.

Writing (a transactional outbox): `emit` adds one `webhook_events` row per subscribed,
enabled endpoint in the caller's transaction, so an event exists exactly when the change
it tells of was committed. Whether anyone subscribes is read from a per-process cache
checked against a version number in Redis (one GET), so a send flush with no subscriber
costs no query. Recipient events are batched: one event per flush (or per report batch)
lists every recipient it moved.

Delivering: once the transaction commits, each endpoint that got events is "kicked": a
Redis flag lets one drain job (jobs/webhooks.py) be queued per endpoint however many
events arrive. The job takes a Redis lock, POSTs the endpoint's undelivered events in id
order, up to BATCH a request, and marks them delivered on a 2xx. A failure raises, and
RQ retries the job after WEBHOOK_RETRY_INTERVALS; when those are used up the job queues a
fresh one after the last interval. Failures in a row past `webhook_failure_limit` switch
the endpoint off, with a journal event.

Security: each request carries `Outbox-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256
of "<t>.<body>" under the endpoint's secret>`. Redirects are never followed; only http
and https URLs, and (unless WEBHOOK_ALLOW_PRIVATE) only public addresses, are accepted,
checked when the URL is saved and again before every POST.

This module imports nothing that imports it (states, the store and the bounce and
stop-list modules call in here), and writes its journal rows itself for that reason.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import socket
import time
import uuid
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import redis
import sqlalchemy as sa
import sqlalchemy.orm as so
from flask import current_app
from flask_babel import lazy_gettext as _l
from rq import Retry

from . import queueing, secretbox, settings
from .extensions import db
from .models import Issue, JournalEvent, WebhookAttempt, WebhookEndpoint, WebhookEvent, utcnow

log = logging.getLogger(__name__)

STATUS_CHANGED = "issue.status_changed"
# Recipient events, by the delivery state (or report) behind them.
RECIPIENT_EVENTS = {
    "sent": "recipient.sent",
    "bounced": "recipient.bounced",
    "failed": "recipient.failed",
    "complained": "recipient.complained",
    "unsubscribed": "recipient.unsubscribed",
    "stopped_manually": "recipient.stopped",
}
PING = "ping"  # the admin page's test: sent to that endpoint whatever it subscribes to
EVENT_LABELS = {
    STATUS_CHANGED: _l("Issue status changes (from, to, reason)"),
    "recipient.sent": _l("Recipients sent (the relay accepted the letter)"),
    "recipient.bounced": _l("Recipients bounced (refused at once or by a late report)"),
    "recipient.failed": _l("Recipients failed (given up after retries)"),
    "recipient.complained": _l("Recipients complained (marked as spam)"),
    "recipient.unsubscribed": _l("Recipients unsubscribed"),
    "recipient.stopped": _l("Recipients stopped manually (the issue was cancelled)"),
}
EVENT_TYPES = tuple(EVENT_LABELS)

BATCH = 100  # events per POST
RECIPIENTS_PER_EVENT = 1000  # a cancel of a million recipients is many events, not one huge one
SNIPPET = 500  # characters of a response kept in the attempts log
KEEP = timedelta(days=30)  # delivered events and attempts are kept this long

VERSION_KEY = "outbox:webhooks:version"
PENDING = "outbox_webhook_endpoints"  # session.info: endpoints that got events in this transaction


def queued_key(endpoint_id: int) -> str:
    """Set while a drain job of the endpoint is queued, running or waiting for its retry."""
    return f"outbox:webhooks:{endpoint_id}:queued"


def lock_key(endpoint_id: int) -> str:
    return f"outbox:webhooks:{endpoint_id}:lock"


class DeliveryFailed(Exception):
    """The endpoint did not answer 2xx; RQ retries the job (the message holds no secret)."""


# --- subscriptions (cached) ------------------------------------------------------------

# One cache per database (a process may serve more than one app, as the tests do).
_caches: dict[str, dict[str, Any]] = {}


def _subscriptions() -> dict[str, list[int]]:
    """Event type → ids of the enabled endpoints that subscribe to it. Reloaded when the
    version in Redis moved (every change of an endpoint moves it, after its commit); without
    Redis, at most every few seconds."""
    _cache = _caches.setdefault(current_app.config["SQLALCHEMY_DATABASE_URI"],
                                {"version": None, "read": 0.0, "subs": {}})
    try:
        version = queueing.redis_connection().get(VERSION_KEY)
    except redis.RedisError:
        version = None
    now = time.monotonic()
    if _cache["read"] and version == _cache["version"] and (version is not None or now - _cache["read"] < 5):
        return _cache["subs"]
    subs: dict[str, list[int]] = {}
    rows = db.session.execute(sa.select(WebhookEndpoint.id, WebhookEndpoint.events)
                              .where(WebhookEndpoint.enabled.is_(True)).order_by(WebhookEndpoint.id)).all()
    for endpoint_id, events in rows:
        for kind in events or []:
            subs.setdefault(kind, []).append(endpoint_id)
    _cache.update(version=version, read=now, subs=subs)
    return subs


def subscribers(event_type: str) -> list[int]:
    return _subscriptions().get(event_type, [])


def wanted(event_types: list[str] | tuple[str, ...]) -> bool:
    """Does any enabled endpoint subscribe to one of these? The hot paths ask this once per
    batch before building anything."""
    subs = _subscriptions()
    return any(subs.get(t) for t in event_types)


def subscriptions_changed() -> None:
    """Call after the commit that changed an endpoint: every process reloads its cache."""
    try:
        queueing.redis_connection().incr(VERSION_KEY)
    except redis.RedisError:
        pass  # the caches reload within seconds anyway
    _caches.pop(current_app.config["SQLALCHEMY_DATABASE_URI"], None)


# --- writing events (in the caller's transaction) --------------------------------------

def emit(event_type: str, data: dict[str, Any], endpoint_ids: list[int] | None = None) -> int:
    """Add the event for every enabled endpoint subscribing to it (or for `endpoint_ids`),
    in the caller's transaction; their drain jobs are queued once it commits."""
    ids = subscribers(event_type) if endpoint_ids is None else endpoint_ids
    if not ids:
        return 0
    now = utcnow()
    db.session.execute(sa.insert(WebhookEvent.__table__), [
        {"endpoint_id": i, "type": event_type, "payload": data, "created_at": now, "attempts": 0} for i in ids])
    db.session.info.setdefault(PENDING, set()).update(ids)
    return len(ids)


def status_changed(issue_id: int, action: str, old: str, new: str, reason: str | None, actor: str,
                   at: datetime) -> None:
    """Hook of mailing/states.transition: the issue moved from `old` to `new`."""
    ids = subscribers(STATUS_CHANGED)
    if not ids:
        return
    subject = db.session.scalar(sa.select(Issue.subject).where(Issue.id == issue_id))
    emit(STATUS_CHANGED, {"issue_id": issue_id, "subject": subject, "action": action, "from": old, "to": new,
                          "reason": reason, "actor": actor, "at": _iso(at)}, ids)


def recipients(state: str, rows: list[dict[str, Any]]) -> None:
    """Hook of the send flush, the bounce reports, unsubscribes and cancels: these
    recipients reached `state` (a key of RECIPIENT_EVENTS). One event per issue and
    RECIPIENTS_PER_EVENT recipients, each {delivery_id, issue_id, email, state, reply}."""
    event_type = RECIPIENT_EVENTS[state]
    ids = subscribers(event_type)
    if not ids or not rows:
        return
    by_issue: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        by_issue.setdefault(row["issue_id"], []).append(row)
    for issue_id, items in sorted(by_issue.items()):
        for start in range(0, len(items), RECIPIENTS_PER_EVENT):
            emit(event_type, {"issue_id": issue_id, "recipients": items[start:start + RECIPIENTS_PER_EVENT]}, ids)


def recipient(delivery_id: int, issue_id: int, email: str, state: str, reply: str | None = None) -> dict[str, Any]:
    return {"delivery_id": delivery_id, "issue_id": issue_id, "email": email, "state": state, "reply": reply}


def _iso(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@sa.event.listens_for(so.Session, "after_commit")
def _committed(session: so.Session) -> None:
    ids = session.info.pop(PENDING, None)
    if ids:
        for endpoint_id in sorted(ids):
            kick(endpoint_id)


@sa.event.listens_for(so.Session, "after_rollback")
def _rolled_back(session: so.Session) -> None:
    session.info.pop(PENDING, None)


# --- queueing the drain job --------------------------------------------------------------

def _intervals() -> list[int]:
    return [max(int(i), 1) for i in current_app.config.get("WEBHOOK_RETRY_INTERVALS") or [10]]


def _flag_ttl() -> int:
    """The queued flag outlives the longest wait for a retry, then some: a worker lost
    with the job must not silence the endpoint for ever."""
    return sum(_intervals()) + 600


def kick(endpoint_id: int, delay: float = 0) -> None:
    """Queue the endpoint's drain job unless one is queued already. Never raises: the
    events are committed, and the next kick (or the retry) delivers them."""
    try:
        r = queueing.redis_connection()
        if delay or r.set(queued_key(endpoint_id), "1", nx=True, ex=_flag_ttl()):
            _enqueue(endpoint_id, delay)
    except Exception:  # noqa: BLE001  (a commit that succeeded must not fail afterwards)
        log.warning("webhook endpoint %s: could not queue its delivery", endpoint_id, exc_info=True)


def _enqueue(endpoint_id: int, delay: float = 0) -> None:
    intervals = _intervals()
    q = queueing.queue()
    opts: dict[str, Any] = {"job_timeout": 600, "result_ttl": 600, "failure_ttl": 7 * 86400,
                            "retry": Retry(max=len(intervals), interval=intervals)}
    if delay > 0:
        q.enqueue_in(timedelta(seconds=delay), "jobs.webhooks.deliver", endpoint_id, **opts)
    else:
        q.enqueue("jobs.webhooks.deliver", endpoint_id, **opts)


# --- URLs --------------------------------------------------------------------------------

def url_problem(url: str, *, resolve: bool = True) -> str | None:
    """Why this URL cannot be an endpoint (in the reader's language), or None."""
    from flask_babel import gettext as _

    url = (url or "").strip()
    if not url:
        return _("Enter the endpoint's URL.")
    if len(url) > 2000:
        return _("The URL is too long (at most 2000 characters).")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return _("This is not a valid URL.")
    if parts.scheme not in ("http", "https"):
        return _("Only http:// and https:// URLs can receive webhooks.")
    if not parts.hostname:
        return _("The URL has no host name.")
    if parts.username or parts.password:
        return _("Put no user name or password in the URL: requests are signed with the secret instead.")
    if any(c.isspace() for c in url):
        return _("This is not a valid URL.")
    if not resolve:
        return None
    refused = address_refused(parts.hostname, port or (443 if parts.scheme == "https" else 80))
    if refused == "unresolved":
        return _("The host name does not resolve.")
    if refused:
        return _("The URL points to a private, loopback or reserved address; webhooks go only to public ones.")
    return None


def address_refused(host: str, port: int) -> str | None:
    """"unresolved", "private", or None when every address the host resolves to is public
    (or WEBHOOK_ALLOW_PRIVATE is on). Every address counts: one private among public
    ones is how a DNS name is pointed inside."""
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except (OSError, ValueError):  # UnicodeError (a label IDNA cannot write) is a ValueError
        return "unresolved"
    if current_app.config.get("WEBHOOK_ALLOW_PRIVATE"):
        return None
    for info in infos:
        ip = ipaddress.ip_address(info[4][0].split("%", 1)[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if not ip.is_global or ip.is_multicast:
            return "private"
    return None


def public_url(url: str) -> str:
    """What a journal row may say of an endpoint: its scheme and host. A path or query
    often holds a token of the receiving service (a chat hook's URL)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}"


# --- endpoints -------------------------------------------------------------------------------

def new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


def create_endpoint(url: str, events: list[str], actor: Any) -> tuple[WebhookEndpoint, str]:
    """A new endpoint and its secret in clear (shown once); the caller commits."""
    secret = new_secret()
    endpoint = WebhookEndpoint(url=url.strip(), events=[e for e in EVENT_TYPES if e in events],
                               secret_sealed=secretbox.seal(secret), created_by_id=getattr(actor, "id", None))
    db.session.add(endpoint)
    db.session.flush()
    _journal("webhook_created", actor, {"endpoint_id": endpoint.id, "url": public_url(endpoint.url),
                                        "events": endpoint.events})
    return endpoint, secret


def roll_secret(endpoint: WebhookEndpoint, actor: Any) -> str:
    secret = new_secret()
    endpoint.secret_sealed = secretbox.seal(secret)
    _journal("webhook_secret_rolled", actor, {"endpoint_id": endpoint.id, "url": public_url(endpoint.url)})
    return secret


def set_enabled(endpoint: WebhookEndpoint, enabled: bool, actor: Any) -> None:
    """Switching on again starts the failure count afresh and delivers what waits."""
    endpoint.enabled = enabled
    endpoint.disabled_at = None if enabled else utcnow()
    endpoint.disabled_reason = None if enabled else "switched off by an admin"
    if enabled:
        endpoint.consecutive_failures = 0
        db.session.info.setdefault(PENDING, set()).add(endpoint.id)
    _journal("webhook_enabled" if enabled else "webhook_disabled", actor,
             {"endpoint_id": endpoint.id, "url": public_url(endpoint.url)})


def delete_endpoint(endpoint: WebhookEndpoint, actor: Any) -> None:
    t = WebhookEvent.__table__
    db.session.execute(sa.delete(t).where(t.c.endpoint_id == endpoint.id))
    a = WebhookAttempt.__table__
    db.session.execute(sa.delete(a).where(a.c.endpoint_id == endpoint.id))
    _journal("webhook_deleted", actor, {"endpoint_id": endpoint.id, "url": public_url(endpoint.url)})
    db.session.delete(endpoint)


def ping(endpoint: WebhookEndpoint, actor: Any) -> None:
    emit(PING, {"endpoint_id": endpoint.id, "by": getattr(actor, "email", None) or "system",
                "at": _iso(utcnow())}, [endpoint.id])


def _journal(event: str, actor: Any, details: dict[str, Any], reason: str | None = None) -> None:
    """A journal row as mailing/states.record writes it (that module calls in here)."""
    db.session.add(JournalEvent(
        issue_id=None, actor_id=getattr(actor, "id", None),
        actor_label=getattr(actor, "email", None) or (actor if isinstance(actor, str) else "system"),
        event=event, reason=reason, details=details, created_at=utcnow()))


# --- delivering ---------------------------------------------------------------------------------

def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def body_of(events: list[WebhookEvent]) -> bytes:
    return json.dumps({"events": [{"id": e.id, "type": e.type, "created_at": _iso(e.created_at),
                                   "data": e.payload} for e in events]},
                      separators=(",", ":"), ensure_ascii=False).encode()


def _pending(endpoint_id: int, limit: int) -> list[WebhookEvent]:
    return list(db.session.scalars(
        sa.select(WebhookEvent).where(WebhookEvent.endpoint_id == endpoint_id, WebhookEvent.delivered_at.is_(None))
        .order_by(WebhookEvent.id).limit(limit).execution_options(populate_existing=True)))


def drain(endpoint_id: int, *, last_try: bool) -> None:
    """Deliver the endpoint's waiting events in order (the drain job). Safe to run twice:
    a Redis lock keeps a second run out, and an event is marked delivered only once."""
    r = queueing.redis_connection()
    token = uuid.uuid4().hex
    if not r.set(lock_key(endpoint_id), token, nx=True, ex=120):
        # Another run is draining; it looks again before it lets go, but an event committed
        # just as it let go would wait for ever: come back shortly.
        _enqueue(endpoint_id, delay=2)
        return
    try:
        while True:
            endpoint = db.session.get(WebhookEndpoint, endpoint_id, populate_existing=True)
            if endpoint is None or not endpoint.enabled:
                db.session.commit()
                r.delete(queued_key(endpoint_id))
                return
            events = _pending(endpoint_id, BATCH)
            if not events:
                # Let go of the flag, then look once more: an event committed while the
                # flag was still set queued no job of its own.
                r.delete(queued_key(endpoint_id))
                db.session.commit()
                if not _pending(endpoint_id, 1):
                    _prune(endpoint_id)
                    db.session.commit()
                    return
                r.set(queued_key(endpoint_id), "1", ex=_flag_ttl())
                continue
            if not _post(endpoint, events):
                if not endpoint.enabled:  # switched off by this failure
                    r.delete(queued_key(endpoint_id))
                    return
                r.set(queued_key(endpoint_id), "1", ex=_flag_ttl())
                if last_try:
                    # RQ's retries are used up: a fresh job goes on at the longest wait,
                    # until the endpoint answers or the failure limit switches it off.
                    _enqueue(endpoint_id, delay=_intervals()[-1])
                    return
                raise DeliveryFailed(f"webhook endpoint {endpoint_id} did not accept its events")
            r.expire(lock_key(endpoint_id), 120)
    finally:
        if (r.get(lock_key(endpoint_id)) or b"").decode() == token:
            r.delete(lock_key(endpoint_id))


def _post(endpoint: WebhookEndpoint, events: list[WebhookEvent]) -> bool:
    """One POST of `events`; logs the attempt and marks them delivered on a 2xx. Commits."""
    ids = [e.id for e in events]
    status: int | None = None
    snippet: str | None = None
    error: str | None = None
    started = time.monotonic()
    parts = urlsplit(endpoint.url)
    try:
        secret = secretbox.unseal(endpoint.secret_sealed)
        refused = address_refused(parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80))
        if parts.scheme not in ("http", "https"):
            error = "refused: only http and https URLs"
        elif refused == "unresolved":
            error = "the host name does not resolve"
        elif refused:
            error = "refused: the host resolves to a private or reserved address"
        else:
            body = body_of(events)
            headers = {
                "Content-Type": "application/json", "User-Agent": "Outbox-Webhooks/1",
                "Outbox-Signature": sign(secret, int(time.time()), body),
                "Outbox-Event-Ids": ",".join(map(str, ids)),
                # The same batch retried has the same key; receivers may deduplicate on it
                # or, more simply, on each event's id.
                "Idempotency-Key": f"obx-{endpoint.id}-" + hashlib.sha256(",".join(map(str, ids)).encode())
                .hexdigest()[:32],
            }
            timeout = float(current_app.config.get("WEBHOOK_TIMEOUT") or 10)
            # Imported here: only the drain job posts, and every process imports this module
            # (states.py calls in), so the web and send processes do not carry the client.
            import httpx

            with httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as client, \
                    client.stream("POST", endpoint.url, content=body, headers=headers) as resp:
                status = resp.status_code
                raw = b""
                for chunk in resp.iter_bytes():
                    raw += chunk
                    if len(raw) >= SNIPPET * 4:
                        break
                snippet = raw.decode("utf-8", "replace")[:SNIPPET]
    except ValueError as exc:  # a secret sealed under another SECRET_KEY
        error = str(exc)[:300]
    except Exception as exc:  # noqa: BLE001  (any failure of the request is the endpoint's, logged, retried)
        # httpx's messages name the URL and the error, never the request's headers.
        error = f"{type(exc).__name__}: {exc}"[:300]
    ok = status is not None and 200 <= status < 300
    now = utcnow()
    db.session.add(WebhookAttempt(endpoint_id=endpoint.id, event_ids=ids[:BATCH], event_count=len(ids),
                                  status_code=status, response=snippet, error=error,
                                  duration_ms=int((time.monotonic() - started) * 1000), at=now))
    t = WebhookEvent.__table__
    if ok:
        db.session.execute(sa.update(t).where(t.c.id.in_(ids), t.c.delivered_at.is_(None))
                           .values(delivered_at=now, attempts=t.c.attempts + 1))
        endpoint.consecutive_failures = 0
    else:
        db.session.execute(sa.update(t).where(t.c.id.in_(ids)).values(attempts=t.c.attempts + 1))
        endpoint.consecutive_failures += 1
        limit = int(settings.get("webhook_failure_limit"))
        if limit > 0 and endpoint.consecutive_failures >= limit:
            endpoint.enabled = False
            endpoint.disabled_at = now
            endpoint.disabled_reason = f"{endpoint.consecutive_failures} failed deliveries in a row"
            _journal("webhook_disabled", "system", {
                "endpoint_id": endpoint.id, "url": public_url(endpoint.url),
                "failures": endpoint.consecutive_failures, "last_status": status, "last_error": error},
                reason=endpoint.disabled_reason)
    db.session.commit()
    if not endpoint.enabled:
        subscriptions_changed()
    return ok


def _prune(endpoint_id: int) -> None:
    """Delivered events and attempts older than KEEP go (the log shows the recent ones)."""
    cutoff = utcnow() - KEEP
    t, a = WebhookEvent.__table__, WebhookAttempt.__table__
    db.session.execute(sa.delete(t).where(t.c.endpoint_id == endpoint_id, t.c.delivered_at < cutoff))
    db.session.execute(sa.delete(a).where(a.c.endpoint_id == endpoint_id, a.c.at < cutoff))
