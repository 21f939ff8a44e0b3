"""Webhooks: a real HTTP receiver (http.server on a socket, in a thread) gets the events of
issues sent by real RQ workers to the in-process SMTP server, signed, in order, each
accepted once however often the receiver failed first; a failing endpoint is switched
off; the admin page is for admins only and shows a secret once."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import sqlalchemy as sa

from mailing import lifecycle, settings, webhooks
from mailing.extensions import db
from mailing.models import (
    JournalEvent,
    StopEntry,
    StopList,
    WebhookAttempt,
    WebhookEndpoint,
    WebhookEvent,
)

from .support import SECRET, csrf_from, deliveries_of, journal_of, wait_for, wait_status


@pytest.fixture(autouse=True)
def _webhook_env(monkeypatch):
    """Loopback receivers allowed, and retries a second apart (the app and its workers
    read these from the environment)."""
    monkeypatch.setenv("WEBHOOK_ALLOW_PRIVATE", "1")
    monkeypatch.setenv("WEBHOOK_RETRY_INTERVALS", "1")
    monkeypatch.setenv("WEBHOOK_TIMEOUT", "5")


def verify(secret: str, header: str, body: bytes, tolerance: int = 300) -> bool:
    """The README's check, as a receiver does it."""
    fields = dict(part.split("=", 1) for part in header.split(","))
    timestamp = int(fields["t"])
    if abs(time.time() - timestamp) > tolerance:
        return False
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, fields["v1"])


class Receiver:
    """An HTTP endpoint on 127.0.0.1 answering the scripted statuses first, then 200;
    it keeps every request and the events of those it accepted."""

    def __init__(self, fail_first: list[int] | None = None, always: int | None = None):
        self.lock = threading.Lock()
        self.script = list(fail_first or [])
        self.always = always
        self.requests: list[tuple[int, dict[str, str], bytes]] = []
        self.accepted: list[dict] = []
        self.secret: str | None = None
        self.bad_signatures = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.lock:
                    status = receiver.script.pop(0) if receiver.script else (receiver.always or 200)
                    receiver.requests.append((status, dict(self.headers), body))
                    if receiver.secret and not verify(receiver.secret, self.headers["Outbox-Signature"], body):
                        receiver.bad_signatures += 1
                        status = 400
                    if 200 <= status < 300:
                        receiver.accepted.extend(json.loads(body)["events"])
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"ok" if status == 200 else b"receiver says no " * 100)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def events(self, kind: str | None = None) -> list[dict]:
        with self.lock:
            return [e for e in self.accepted if kind is None or e["type"] == kind]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    made: list[Receiver] = []

    def make(**kw) -> Receiver:
        r = Receiver(**kw)
        made.append(r)
        return r

    yield make
    for r in made:
        r.stop()


def _endpoint(rx: Receiver, events: list[str]) -> int:
    endpoint, secret = webhooks.create_endpoint(rx.url, events, "test")
    db.session.commit()
    webhooks.subscriptions_changed()
    rx.secret = secret
    return endpoint.id


def _status_journal(issue_id: int) -> list[tuple[str, str]]:
    return [(e.from_status, e.to_status) for e in journal_of(issue_id) if e.to_status]


def test_every_status_change_of_a_paused_resumed_finished_issue_arrives_in_order_signed(
        ctx, make_issue, make_user, smtp, workers, receiver):
    rx = receiver()
    _endpoint(rx, [webhooks.STATUS_CHANGED])
    issue_id = make_issue(300)
    user, _ = make_user("editor")
    smtp.handler.delay = 0.01
    workers.start(1)
    lifecycle.launch(issue_id, user)
    wait_for(lambda: len(smtp.handler.letters) >= 30, 60, what="sending to begin")
    lifecycle.pause(issue_id, user)
    wait_for(lambda: any(e["data"]["to"] == "paused" for e in rx.events()), 30, what="the pause event")
    lifecycle.resume(issue_id, user)
    wait_status(issue_id, "sent", 120)
    expected = _status_journal(issue_id)
    assert ("sending", "paused") in expected and ("paused", "sending") in expected and expected[-1][1] == "sent"
    got = wait_for(lambda: (lambda ev: ev if len(ev) >= len(expected) else None)(rx.events()), 30,
                   what="every status change")
    assert [(e["data"]["from"], e["data"]["to"]) for e in got] == expected
    assert {e["type"] for e in got} == {webhooks.STATUS_CHANGED}
    assert all(e["data"]["issue_id"] == issue_id for e in got)
    assert [e["id"] for e in got] == sorted(e["id"] for e in got), "in order"
    assert len({e["id"] for e in got}) == len(got), "no duplicates"
    assert rx.bad_signatures == 0
    assert all(verify(rx.secret, h["Outbox-Signature"], body) for _s, h, body in rx.requests)
    pause = next(e for e in got if e["data"]["to"] == "paused")
    assert pause["data"]["action"] == "pause" and pause["data"]["actor"] == user.email


def test_a_receiver_failing_twice_then_accepting_gets_each_event_exactly_once(
        ctx, make_issue, make_user, smtp, workers, receiver):
    rx = receiver(fail_first=[500, 500])
    endpoint_id = _endpoint(rx, [webhooks.STATUS_CHANGED])
    workers.start(1)
    issue_id = make_issue(20)
    user, _ = make_user("editor")
    lifecycle.launch(issue_id, user)
    wait_status(issue_id, "sent", 60)
    expected = _status_journal(issue_id)
    wait_for(lambda: len(rx.events()) >= len(expected), 60, what="the events after two failures")
    time.sleep(2.5)  # a duplicate would come with the next retry
    got = rx.events()
    assert [(e["data"]["from"], e["data"]["to"]) for e in got] == expected
    assert len({e["id"] for e in got}) == len(got)
    assert [s for s, _h, _b in rx.requests][:3] == [500, 500, 200]
    db.session.commit()
    attempts = db.session.scalars(sa.select(WebhookAttempt).where(WebhookAttempt.endpoint_id == endpoint_id)
                                  .order_by(WebhookAttempt.id)).all()
    assert [a.status_code for a in attempts][:3] == [500, 500, 200]
    assert attempts[0].response.startswith("receiver says no") and len(attempts[0].response) <= webhooks.SNIPPET
    assert db.session.scalar(sa.select(sa.func.count()).select_from(WebhookEvent)
                             .where(WebhookEvent.delivered_at.is_(None))) == 0
    ep = db.session.get(WebhookEndpoint, endpoint_id, populate_existing=True)
    assert ep.enabled and ep.consecutive_failures == 0
    # The failed requests carried the first events again (the batch may have grown since).
    assert rx.requests[0][1]["Outbox-Event-Ids"] == ",".join(str(e["id"]) for e in got[:len(
        rx.requests[0][1]["Outbox-Event-Ids"].split(","))])


def test_recipient_events_come_batched_each_recipient_once(ctx, make_issue, make_user, smtp, workers, receiver):
    rx = receiver()
    _endpoint(rx, ["recipient.sent", "recipient.bounced"])
    emails = [f"batch{i:02d}@example.org" for i in range(50)]
    issue_id = make_issue(50, emails=emails)
    bounced, stopped = emails[3], emails[7]
    smtp.handler.scripted[bounced] = ["550 5.1.1 no such user"]
    # A stop-listed recipient is never sent to: no recipient event names them.
    blocked = db.session.scalar(sa.select(StopList).where(StopList.code == "blocked"))
    db.session.add(StopEntry(list_id=blocked.id, kind="email", value=stopped, source="ui"))
    db.session.commit()
    user, _ = make_user("editor")
    workers.start(1)
    lifecycle.launch(issue_id, user)
    wait_status(issue_id, "sent", 60)
    wait_for(lambda: sum(len(e["data"]["recipients"]) for e in rx.events()) >= 49, 30, what="recipient events")
    time.sleep(1)
    listed = [r for e in rx.events() for r in e["data"]["recipients"]]
    assert len(rx.requests) < 25, f"{len(rx.requests)} POSTs for 50 recipients: not batched"
    assert len(rx.events()) < 25
    by_email = {r["email"]: r for r in listed}
    assert len(listed) == len(by_email) == 49, "each recipient exactly once"
    assert stopped not in by_email
    assert by_email[bounced]["state"] == "bounced" and "5.1.1" in by_email[bounced]["reply"]
    assert {r["state"] for e in rx.events("recipient.sent") for r in e["data"]["recipients"]} == {"sent"}
    assert all(r["issue_id"] == issue_id and r["delivery_id"] for r in listed)


def test_an_endpoint_that_keeps_failing_is_switched_off_with_a_journal_event(
        ctx, make_issue, make_user, smtp, workers, receiver):
    settings.put("webhook_failure_limit", 3)
    db.session.commit()
    rx = receiver(always=503)
    endpoint_id = _endpoint(rx, [webhooks.STATUS_CHANGED])
    workers.start(1)
    issue_id = make_issue(5)
    user, _ = make_user("editor")
    lifecycle.launch(issue_id, user)
    wait_status(issue_id, "sent", 60)

    def switched_off():
        db.session.commit()
        ep = db.session.get(WebhookEndpoint, endpoint_id, populate_existing=True)
        return ep if not ep.enabled else None

    ep = wait_for(switched_off, 60, what="the endpoint switched off")
    assert ep.disabled_at is not None and ep.consecutive_failures == 3
    time.sleep(2.5)
    assert len(rx.requests) == 3, "nothing is sent to a switched-off endpoint"
    event = db.session.scalar(sa.select(JournalEvent).where(JournalEvent.event == "webhook_disabled"))
    assert event.details["endpoint_id"] == endpoint_id and event.details["failures"] == 3
    assert event.actor_label == "system" and "/hook" not in json.dumps(event.details), "the path may hold a token"
    # Switched off: no new events are written for it.
    before = db.session.scalar(sa.select(sa.func.count()).select_from(WebhookEvent))
    lifecycle.launch(make_issue(2), user)
    db.session.commit()
    assert db.session.scalar(sa.select(sa.func.count()).select_from(WebhookEvent)) == before


def test_no_subscriber_writes_no_event_and_no_query_per_letter(ctx, make_issue, make_user, smtp, workers, receiver):
    rx = receiver()
    _endpoint(rx, [webhooks.STATUS_CHANGED])
    assert not webhooks.wanted(["recipient.sent", "recipient.bounced", "recipient.failed"])
    issue_id = make_issue(30)
    user, _ = make_user("editor")
    workers.start(1)
    lifecycle.launch(issue_id, user)
    wait_status(issue_id, "sent", 60)
    db.session.commit()
    assert db.session.scalar(sa.select(sa.func.count()).select_from(WebhookEvent)
                             .where(WebhookEvent.type.like("recipient.%"))) == 0


def test_cancel_tells_the_stopped_recipients(ctx, make_issue, make_user, receiver):
    rx = receiver()
    endpoint_id = _endpoint(rx, ["recipient.stopped"])
    issue_id = make_issue(12)
    user, _ = make_user("editor")
    settings.put("launch_delay_seconds", 60)
    db.session.commit()
    lifecycle.launch(issue_id, user)
    lifecycle.cancel(issue_id, user)
    db.session.commit()
    rows = db.session.scalars(sa.select(WebhookEvent).where(WebhookEvent.endpoint_id == endpoint_id)).all()
    listed = [r for e in rows for r in e.payload["recipients"]]
    assert {e.type for e in rows} == {"recipient.stopped"}
    assert sorted(r["delivery_id"] for r in listed) == sorted(d.id for d in deliveries_of(issue_id))
    assert {r["state"] for r in listed} == {"stopped_manually"}


# --- the admin page -----------------------------------------------------------------------

def test_only_admins_reach_the_webhooks_page(app, client, make_user):
    for role in ("editor", "moderator", "support", "admin"):
        user, pw = make_user(role)
        c = app.test_client()
        page = c.get("/login")
        assert c.post("/login", data={"email": user.email, "password": pw,
                                      "csrf_token": csrf_from(page.data)}).status_code == 302
        token = csrf_from(c.get("/profile").data)
        expected = 200 if role == "admin" else 403
        assert c.get("/admin/webhooks").status_code == expected, role
        for path in ("/admin/webhooks", "/admin/webhooks/1/ping", "/admin/webhooks/1/delete", "/admin/webhooks/limit"):
            if role != "admin":
                assert c.post(path, data={"url": "https://example.com/", "csrf_token": token}).status_code == 403
        nav = c.get("/profile").data.decode()
        assert ('href="/admin/webhooks"' in nav) == (role == "admin")
    assert db.session.scalar(sa.select(sa.func.count()).select_from(WebhookEndpoint)) == 0


def test_posts_without_the_csrf_token_are_refused(client, login, receiver):
    rx = receiver()
    login("admin")
    r = client.post("/admin/webhooks", data={"url": rx.url, "events": [webhooks.STATUS_CHANGED]})
    assert r.status_code == 400
    assert db.session.scalar(sa.select(sa.func.count()).select_from(WebhookEndpoint)) == 0


def test_a_bad_url_is_shown_next_to_the_field_and_nothing_is_saved(client, login):
    login("admin")
    token = csrf_from(client.get("/admin/webhooks").data)
    for url, words in [("ftp://example.com/x", "http"), ("not a url", "http"), ("", "Enter"),
                       ("https://user:pw@example.com/", "password")]:
        r = client.post("/admin/webhooks", data={"url": url, "events": [webhooks.STATUS_CHANGED],
                                                 "csrf_token": token})
        assert r.status_code == 400, url
        page = r.data.decode()
        assert 'class="field has-error"' in page and words in page, url
    r = client.post("/admin/webhooks", data={"url": "https://example.com/h", "events": ["nonsense"],
                                             "csrf_token": token})
    assert r.status_code == 400 and "Choose at least one event" in r.data.decode()
    assert db.session.scalar(sa.select(sa.func.count()).select_from(WebhookEndpoint)) == 0


def test_a_private_address_is_refused_unless_allowed(client, login, monkeypatch, app):
    login("admin")
    token = csrf_from(client.get("/admin/webhooks").data)
    monkeypatch.setitem(app.config, "WEBHOOK_ALLOW_PRIVATE", False)
    for url in ("http://127.0.0.1:8080/hook", "http://10.1.2.3/hook", "http://[::1]/hook",
                "http://169.254.169.254/latest/meta-data", "http://localhost/hook"):
        r = client.post("/admin/webhooks", data={"url": url, "events": [webhooks.STATUS_CHANGED],
                                                 "csrf_token": token})
        assert r.status_code == 400 and "private, loopback or reserved" in r.data.decode(), url
    assert db.session.scalar(sa.select(sa.func.count()).select_from(WebhookEndpoint)) == 0
    assert webhooks.address_refused("127.0.0.1", 80) == "private"


def test_delivery_refuses_a_private_address_when_not_allowed(ctx, app, monkeypatch, receiver):
    rx = receiver()
    endpoint_id = _endpoint(rx, [webhooks.STATUS_CHANGED])
    ep = db.session.get(WebhookEndpoint, endpoint_id)
    webhooks.ping(ep, "test")
    db.session.commit()
    monkeypatch.setitem(app.config, "WEBHOOK_ALLOW_PRIVATE", False)
    with pytest.raises(webhooks.DeliveryFailed):
        webhooks.drain(endpoint_id, last_try=False)
    assert rx.requests == []
    attempt = db.session.scalar(sa.select(WebhookAttempt).where(WebhookAttempt.endpoint_id == endpoint_id))
    assert attempt.status_code is None and "private" in attempt.error


def test_the_secret_is_shown_once_and_never_again(client, login, receiver):
    rx = receiver()
    login("admin")
    token = csrf_from(client.get("/admin/webhooks").data)
    r = client.post("/admin/webhooks", data={"url": rx.url, "events": [webhooks.STATUS_CHANGED, "recipient.sent"],
                                             "csrf_token": token})
    assert r.status_code == 200
    page = r.data.decode()
    ep = db.session.scalar(sa.select(WebhookEndpoint))
    from mailing.secretbox import unseal

    secret = unseal(ep.secret_sealed)
    assert secret.startswith("whsec_") and secret in page
    assert secret not in ep.secret_sealed, "sealed at rest"
    assert ep.events == [webhooks.STATUS_CHANGED, "recipient.sent"]
    again = client.get("/admin/webhooks").data.decode()
    assert secret not in again and rx.url in again
    # Rolled: the new one is shown once, the old one nowhere.
    r = client.post(f"/admin/webhooks/{ep.id}/roll", data={"csrf_token": token})
    rolled = unseal(db.session.get(WebhookEndpoint, ep.id, populate_existing=True).secret_sealed)
    assert rolled != secret and rolled in r.data.decode() and secret not in r.data.decode()
    assert rolled not in client.get("/admin/webhooks").data.decode()
    journal = db.session.scalars(sa.select(JournalEvent).where(JournalEvent.event.like("webhook_%"))).all()
    assert all(secret not in json.dumps(e.details) and rolled not in json.dumps(e.details) for e in journal)
    shown = client.get("/journal").data.decode()
    assert "Webhook endpoint added" in shown and "Webhook secret rolled" in shown and secret not in shown
    assert "Добавлен адрес вебхука" in client.get("/journal", headers={"Accept-Language": "ru"}).data.decode() \
        or "Добавлен адрес вебхука" in _russian(client, "/journal")
    page_ru = _russian(client, "/admin/webhooks")
    assert "Вебхуки" in page_ru and "Попытки доставки" in page_ru and "Смены статуса выпуска" in page_ru


def _russian(client, path: str) -> str:
    """The page in Russian: the admin's own language setting decides once logged in."""
    from mailing.models import User

    for user in db.session.scalars(sa.select(User)):
        user.locale = "ru"
    db.session.commit()
    return client.get(path).data.decode()


def test_switch_off_on_ping_and_delete_from_the_page(client, login, receiver, workers):
    rx = receiver()
    login("admin")
    token = csrf_from(client.get("/admin/webhooks").data)
    client.post("/admin/webhooks", data={"url": rx.url, "events": [webhooks.STATUS_CHANGED], "csrf_token": token})
    ep = db.session.scalar(sa.select(WebhookEndpoint))
    rx.secret = None
    workers.start(1)
    assert client.post(f"/admin/webhooks/{ep.id}/ping", data={"csrf_token": token}).status_code == 302
    wait_for(lambda: rx.events("ping"), 30, what="the test event")
    page = wait_for(lambda: (lambda p: p if "200" in p.split("webhook-attempts")[1] else None)(
        client.get("/admin/webhooks").data.decode()), 10, what="the attempt in the log")
    assert "ok" in page
    assert client.post(f"/admin/webhooks/{ep.id}/disable", data={"csrf_token": token}).status_code == 302
    assert not db.session.get(WebhookEndpoint, ep.id, populate_existing=True).enabled
    assert client.post(f"/admin/webhooks/{ep.id}/enable", data={"csrf_token": token}).status_code == 302
    assert db.session.get(WebhookEndpoint, ep.id, populate_existing=True).enabled
    assert client.post(f"/admin/webhooks/{ep.id}/delete", data={"csrf_token": token}).status_code == 302
    db.session.commit()
    assert db.session.scalar(sa.select(sa.func.count()).select_from(WebhookEndpoint)) == 0
    assert db.session.scalar(sa.select(sa.func.count()).select_from(WebhookAttempt)) == 0
    assert client.post("/admin/webhooks/999/delete", data={"csrf_token": token}).status_code == 404


def test_a_flush_without_recipient_subscribers_runs_no_extra_statement(ctx, make_issue, make_user, receiver):
    """The send flush (store.record) costs the same statements with no recipient
    subscriber as before webhooks existed; with one, one read and one insert per flush."""
    from mailing.models import utcnow
    from mailing.store import deliveries as store

    settings.put("launch_delay_seconds", 3600)
    db.session.commit()
    user, _ = make_user("editor")
    rx = receiver()
    _endpoint(rx, [webhooks.STATUS_CHANGED])
    statements: list[str] = []

    def count(_conn, _cursor, statement, *_args):
        statements.append(statement)

    def flush(issue_id: int) -> list[str]:
        claimed = store.claim(issue_id, "owner-1", 50, 60)
        db.session.commit()
        statements.clear()
        sa.event.listen(db.engine, "before_cursor_execute", count)
        try:
            store.record(issue_id, "owner-1", [store.Result(c.id, "sent", at=utcnow()) for c in claimed])
        finally:
            sa.event.remove(db.engine, "before_cursor_execute", count)
        db.session.commit()
        return list(statements)

    first = make_issue(50)
    lifecycle.launch(first, user)
    quiet = flush(first)
    assert len(quiet) == 2, quiet  # the deliveries' executemany and the issue's counters
    _endpoint(receiver(), ["recipient.sent"])
    second = make_issue(50)
    lifecycle.launch(second, user)
    told = flush(second)
    assert len(told) == 4, told  # plus one read of the rows and one insert of the event
    rows = db.session.scalars(sa.select(WebhookEvent).where(WebhookEvent.type == "recipient.sent")).all()
    assert len(rows) == 1 and len(rows[0].payload["recipients"]) == 50


def test_late_bounces_complaints_and_unsubscribes_are_told(ctx, client, make_issue, make_user, smtp, workers,
                                                          receiver):
    from mailing.bounces import receive_one
    from mailing.devtools import dsn
    from mailing.unsubscribe import make_token

    rx = receiver()
    _endpoint(rx, ["recipient.bounced", "recipient.complained", "recipient.unsubscribed"])
    issue_id = make_issue(3, emails=["x@example.org", "y@example.org", "z@example.org"])
    workers.start(1, SEND_JOBS="1")
    lifecycle.launch(issue_id, make_user("editor")[0])
    wait_status(issue_id, "sent", 60)
    x, y, z = deliveries_of(issue_id)
    assert receive_one(dsn.dsn("postfix", rcpt=x.email, message_id=x.message_id, n=1), "api").outcome == "applied"
    assert receive_one(dsn.complaint(message_id=y.message_id, n=2), "api").outcome == "applied"
    assert client.post(f"/u/{make_token(SECRET.encode(), z.id)}/one-click").status_code == 200
    wait_for(lambda: len(rx.events()) >= 3, 30, what="three events")
    time.sleep(1)
    got = {e["type"]: e["data"]["recipients"] for e in rx.events()}
    assert got["recipient.bounced"][0]["email"] == x.email and "5." in got["recipient.bounced"][0]["reply"]
    assert got["recipient.complained"][0]["delivery_id"] == y.id
    assert got["recipient.unsubscribed"] == [{"delivery_id": z.id, "issue_id": issue_id, "email": z.email,
                                              "state": "unsubscribed", "reply": "one-click"}]
    assert len(rx.events()) == 3, "a complaint is told once, as a complaint"


def test_the_failure_limit_is_set_on_the_page_and_bad_values_change_nothing(client, login):
    login("admin")
    token = csrf_from(client.get("/admin/webhooks").data)
    for bad in ("", "0", "-3", "abc", "99999999999999999999"):
        r = client.post("/admin/webhooks/limit", data={"limit": bad, "csrf_token": token})
        assert r.status_code == 400 and 'class="field has-error"' in r.data.decode(), bad
    assert settings.get("webhook_failure_limit") == 20
    assert client.post("/admin/webhooks/limit", data={"limit": "5", "csrf_token": token}).status_code == 302
    db.session.commit()
    assert settings.get("webhook_failure_limit") == 5
    assert "Switch a webhook endpoint off after failed deliveries in a row: 5" in client.get("/journal").data.decode()


def test_admins_manage_endpoints_through_the_api_and_the_secret_is_given_once(
        ctx, api_client, receiver, make_issue, make_user, workers):
    rx = receiver()
    admin, editor = api_client("admin"), api_client("editor")
    body = {"url": rx.url, "events": ["issue.status_changed"]}
    assert editor.post("/webhooks", json=body).status_code == 403, "admins only, as the page"
    assert admin.post("/webhooks", json={**body, "url": "ftp://x"}).json["error"] == "url"
    assert admin.post("/webhooks", json={**body, "events": ["issue.deleted"]}).json["error"] == "events"
    assert admin.get("/webhooks").json["endpoints"] == [], "nothing was saved by the refusals"
    made = admin.post("/webhooks", json=body)
    assert made.status_code == 201 and made.json["secret"].startswith("whsec_")
    rx.secret = made.json["secret"]
    hook_id = made.json["id"]
    assert "secret" not in admin.get(f"/webhooks/{hook_id}").json
    assert all("secret" not in e for e in admin.get("/webhooks").json["endpoints"])

    workers.start(1)
    assert admin.post(f"/webhooks/{hook_id}/ping").status_code == 202
    wait_for(lambda: rx.events("ping"), 30, 0.1, "the ping")
    attempts = admin.get(f"/webhooks/{hook_id}/attempts").json["attempts"]
    assert attempts[0]["status_code"] == 200 and rx.bad_signatures == 0

    rolled = admin.post(f"/webhooks/{hook_id}/roll").json["secret"]
    assert rolled != rx.secret
    off = admin.patch(f"/webhooks/{hook_id}", json={"enabled": False})
    assert off.status_code == 200 and off.json["enabled"] is False
    assert admin.post(f"/webhooks/{hook_id}/ping").status_code == 409
    assert admin.delete(f"/webhooks/{hook_id}").status_code == 204
    assert admin.get(f"/webhooks/{hook_id}").status_code == 404
