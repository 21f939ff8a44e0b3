"""The pre-send check, the moderation queue, roles on every route, and the recipient lookup."""

import re

import pytest
import sqlalchemy as sa

from mailing import lifecycle, settings, stoplists
from mailing.extensions import db
from mailing.models import Issue, StopList
from mailing.states import IllegalTransition

from .support import csrf_from, issue_row, journal_of, wait_status


def launch(issue_id, user):
    return lifecycle.launch(issue_id, user)


def previous_issue(make_issue, sender_id, total, sent, bounced=0):
    """History for a sender: a finished issue of `total` recipients."""
    from datetime import timedelta

    from mailing.models import utcnow

    iid = make_issue(1)
    db.session.execute(sa.update(Issue).where(Issue.id == iid).values(
        sender_id=sender_id, status="sent", total=total, sent_count=sent, bounced_count=bounced,
        launched_at=utcnow() - timedelta(days=1)))
    db.session.commit()


def test_a_clean_issue_is_accepted(ctx, make_issue, make_user):
    user, _ = make_user("editor")
    issue_id = make_issue(5)
    assert launch(issue_id, user) == "accepted"


@pytest.mark.parametrize("rule", ["audience_growth", "audience_size", "fresh_audience", "no_unsubscribe",
                                  "spam_words", "blocked_domains", "bounce_rate", "complaint_rate"])
def test_each_rule_holds_the_issue_with_its_reason(ctx, make_issue, make_user, rule):
    user, _ = make_user("editor")
    body = '<p>Hi {{ name }}</p><a href="{{ unsubscribe_url }}">u</a>'
    issue_id = make_issue(30, body=body)
    sender_id = db.session.get(Issue, issue_id).sender_id
    if rule == "audience_growth":
        previous_issue(make_issue, sender_id, total=5, sent=5)
    elif rule == "audience_size":
        settings.put("moderation_max_audience", 10)
    elif rule == "fresh_audience":
        previous_issue(make_issue, sender_id, total=100, sent=100)
    elif rule == "no_unsubscribe":
        db.session.get(Issue, issue_id).body_html = "<p>Hi {{ name }}</p>"
    elif rule == "spam_words":
        db.session.get(Issue, issue_id).subject = "You are a Lottery Winner"
    elif rule == "blocked_domains":
        settings.put("blocked_domains", ["bad.example"])
        db.session.get(Issue, issue_id).body_html = body + '<a href="https://www.bad.example/x">x</a>'
    elif rule == "complaint_rate":
        previous_issue(make_issue, sender_id, total=100, sent=100)
        settings.put("moderation_growth_factor", 100)
        settings.put("moderation_fresh_share", 1.0)
        from mailing.models import Delivery, StopEvent

        old = db.session.scalar(sa.select(Issue.id).where(Issue.sender_id == sender_id, Issue.id != issue_id))
        for i in range(3):
            db.session.add(Delivery(issue_id=old, email=f"angry{i}@example.org", state="sent"))
            db.session.add(StopEvent(list_id=1, action="add", value=f"angry{i}@example.org", source="complaint"))
    elif rule == "bounce_rate":
        previous_issue(make_issue, sender_id, total=100, sent=60, bounced=40)
        settings.put("moderation_growth_factor", 100)
        settings.put("moderation_fresh_share", 1.0)
    db.session.commit()
    assert launch(issue_id, user) == "moderation"
    row = issue_row(issue_id)
    hold = [e for e in journal_of(issue_id) if e.event == "hold"][0]
    rules = [f["rule"] for f in hold.details["failed_rules"]]
    assert rule in rules
    assert row.status_reason and row.total == 30


def test_approve_reject_and_no_self_approval(ctx, client, make_issue, make_user, login):
    editor, _ = make_user("editor")
    issue_id = make_issue(5, body="<p>no link {{ name }}</p>")
    launch(issue_id, editor)
    moderator = login("moderator")
    page = client.get("/moderation").data.decode()
    assert "no_unsubscribe" in page and editor.email in page and "Preview" not in page or "iframe" in page
    token = csrf_from(page)
    r = client.post(f"/moderation/{issue_id}/reject", data={"comment": "", "csrf_token": token})
    assert r.status_code == 400 and issue_row(issue_id).status == "moderation"
    r = client.post(f"/moderation/{issue_id}/reject", data={"comment": "Add an unsubscribe link", "csrf_token": token})
    assert r.status_code == 302
    row = issue_row(issue_id)
    assert (row.status, row.status_reason, row.total) == ("draft", "Add an unsubscribe link", 0)
    editor_view = client.get(f"/issues/{issue_id}").data.decode()
    assert "Add an unsubscribe link" in editor_view
    # Launched again by the moderator themself: they cannot approve it; another one can.
    launch(issue_id, moderator)
    with pytest.raises(IllegalTransition):
        lifecycle.approve(issue_id, moderator)
    r = client.post(f"/moderation/{issue_id}/approve", data={"csrf_token": token})
    assert r.status_code == 409 and issue_row(issue_id).status == "moderation"
    other, _ = make_user("moderator")
    lifecycle.approve(issue_id, other)
    assert issue_row(issue_id).status == "accepted"
    events = [(e.event, e.actor_label) for e in journal_of(issue_id) if e.event in ("hold", "approve", "reject")]
    assert events == [("hold", editor.email), ("reject", moderator.email), ("hold", moderator.email),
                      ("approve", other.email)]


def test_editors_and_support_cannot_moderate(ctx, client, make_issue, make_user, login):
    editor, _ = make_user("editor")
    issue_id = make_issue(2, body="<p>{{ name }}</p>")
    launch(issue_id, editor)
    login("editor")
    token = csrf_from(client.get("/moderation").data)
    assert client.post(f"/moderation/{issue_id}/approve", data={"csrf_token": token}).status_code == 403
    assert "1 issue waits for moderation." in client.get("/").data.decode(), "plural forms, not issue(s)"


# Every route × role: allowed → 200/302 (or a 4xx about the input), refused → 403.
def _rules(app):
    skip = {"static", "auth.login", "unsubscribe.page", "unsubscribe.one_click", "auth.logout"}
    return [r for r in app.url_map.iter_rules() if r.endpoint not in skip and not r.rule.startswith("/api/")]


def test_route_role_table(app, ctx, client, make_user, make_issue):
    make_issue(1)
    from flask import current_app

    table = {}
    for role in ("admin", "editor", "moderator", "support"):
        user, pw = make_user(role)
        c = current_app.test_client()
        page = c.get("/login")
        c.post("/login", data={"email": user.email, "password": pw, "csrf_token": csrf_from(page.data)})
        token = csrf_from(c.get("/").data)
        for rule in _rules(app):
            url = re.sub(r"<(?:int:)?(\w+)>", lambda m: "1" if "int:" in m.group(0) else "pause", rule.rule)
            method = "GET" if "GET" in rule.methods else "POST"
            r = c.open(url, method=method, headers={"X-CSRFToken": token}, data={"csrf_token": token})
            table[(rule.endpoint, role)] = r.status_code
            db.session.remove()
    for (endpoint, role), status in table.items():
        view = app.view_functions[endpoint]
        allowed = getattr(view, "allowed_roles", None)
        if allowed is None:
            assert status != 403, (endpoint, role)
        elif role in allowed:
            assert status != 403, (endpoint, role, status)
        else:
            assert status == 403, (endpoint, role, status)
    assert table[("moderation.admin_settings", "editor")] == 403
    assert table[("outgoing.index", "support")] == 200


def test_recipient_lookup_explains_every_state(ctx, client, login, make_issue, make_user, smtp, workers):
    editor, _ = make_user("editor")
    first = make_issue(2, emails=["who@example.org", "other@example.org"])
    list_id = db.session.get(Issue, first).list_id
    sender_id = db.session.get(Issue, first).sender_id

    def again(subject):
        iid = make_issue(0, subject=subject)
        issue = db.session.get(Issue, iid)
        issue.list_id, issue.sender_id = list_id, sender_id
        db.session.commit()
        return iid

    workers.start(1, RETRY_BASE_SECONDS="600")
    launch(first, editor)
    wait_status(first, "sent", 60)
    smtp.handler.scripted["who@example.org"] = ["550 5.1.1 No such user"]
    bounced = again("Bounced one")
    launch(bounced, editor)
    wait_status(bounced, "sent", 60)
    smtp.handler.scripted["who@example.org"] = ["451 4.2.0 Try later"]
    deferred = again("Deferred one")
    launch(deferred, editor)
    from .support import deliveries_of, wait_for

    wait_for(lambda: {d.email: d.state for d in deliveries_of(deferred)}.get("who@example.org") == "deferred",
             60, what="a deferral")
    settings.put("launch_delay_seconds", 30)
    db.session.commit()
    cancelled = again("Cancelled one")
    launch(cancelled, editor)
    lifecycle.cancel(cancelled, editor)
    blocked = db.session.scalar(sa.select(StopList).where(StopList.code == "blocked"))
    stoplists.add_pasted(blocked, "who@example.org", actor=editor, source="ui", region="RU")
    settings.put("launch_delay_seconds", 0)
    db.session.commit()
    suppressed = again("Suppressed one")
    launch(suppressed, editor)
    login("support")
    page = client.get("/lookup?q=who@EXAMPLE.org").data.decode()
    rows = dict(re.findall(r"#(\d+) [^<]*</a></td>\s*<td class=\"state\">[^<]*</td><td>.*?</td><td class=\"why\">([^<]*)</td>",
                           page, re.S))
    assert "delivered to the relay" in rows[str(first)]
    assert "bounced" in rows[str(bounced)] and "550 5.1.1 No such user" in page
    assert "deferred by the relay, retrying at" in rows[str(deferred)]
    assert "stopped manually" in rows[str(cancelled)]
    assert "suppressed by the stop-list “Blocked manually”" in rows[str(suppressed)]
    assert "Blocked manually: who@example.org" in page and "other@example.org" not in page


def test_admin_settings_validate_and_apply(ctx, client, login):
    login("admin")
    page = client.get("/admin/settings")
    assert page.status_code == 200 and b"viagra" in page.data
    form = {"csrf_token": csrf_from(page.data), "launch_delay_seconds": "-5", "edit_lock_minutes": "5",
            "late_start_grace_seconds": "300", "default_portion_size": "0", "default_portion_minutes": "0",
            "relay_rate_per_second": "0", "moderation_growth_factor": "3", "moderation_max_audience": "0",
            "moderation_fresh_share": "0.5", "moderation_bounce_rate": "0.05",
            "moderation_complaint_rate": "0.003", "rate_window": "1000", "interrupt_bounce_rate": "0.05",
            "interrupt_complaint_rate": "0.001", "api_requests_per_minute": "1200", "soft_bounce_limit": "3", "spam_words": "viagra", "blocked_domains": ""}
    bad = client.post("/admin/settings", data=form)
    assert bad.status_code == 400 and settings.get("launch_delay_seconds") == 0
    form.update(launch_delay_seconds="7", default_portion_size="500", default_portion_minutes="10",
                blocked_domains="bad.example\nworse.example")
    assert client.post("/admin/settings", data=form).status_code == 302
    assert settings.get("launch_delay_seconds") == 7
    assert settings.get("blocked_domains") == ["bad.example", "worse.example"]
    new = client.get("/issues/new").data.decode()
    assert re.search(r'<input checked id="spread-\d" name="spread" type="radio" value="portions">', new)
    assert 'value="500"' in new
