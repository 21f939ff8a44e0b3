"""Triggered mailings: participants through the API become one letter each, within
seconds, through the same engine; the same idempotency key is one letter; Pause holds
arrivals, Resume sends them; after Stop they are recorded stopped at once."""

import email
import email.policy

import sqlalchemy as sa

from mailing import lifecycle
from mailing.extensions import db
from mailing.models import Contact, ContactList, Issue, list_members

from .support import csrf_from, deliveries_of, issue_row, journal_of, wait_for, wait_status


def _triggered(make_issue, body=None) -> int:
    issue_id = make_issue(0, body=body or '<p>Hello {{ name }}, order {{ order }}</p><a href="{{ unsubscribe_url }}">u</a>')
    issue = db.session.get(Issue, issue_id)
    issue.kind = "triggered"
    db.session.commit()
    return issue_id


def test_participants_are_sent_once_held_while_paused_and_stopped_after_stop(ctx, make_issue, smtp, workers,
                                                                            make_user, api_client):
    issue_id = _triggered(make_issue)
    user, _ = make_user("editor")
    api = api_client("editor")
    workers.start(4, SEND_JOBS="1")
    lifecycle.launch(issue_id, user)
    assert issue_row(issue_id).status == "sending"

    def arrive(i: int, key: str | None = None):
        r = api.post(f"/triggers/{issue_id}/participants",
                     json={"email": f"p{i:04d}@example.org", "name": f"Buyer {i}", "fields": {"order": f"#{i}"},
                           "idempotency_key": key or f"order-{i}"})
        assert r.status_code in (200, 202), r.json
        return r.json

    for i in range(500):
        first = arrive(i)
        assert first["duplicate"] is False and first["state"] == "pending"
        if i % 10 == 0:  # the caller retried: the same key is the same delivery
            again = arrive(i)
            assert again["duplicate"] is True and again["delivery_id"] == first["delivery_id"]
    wait_for(lambda: len(smtp.handler.counts()) >= 500 and issue_row(issue_id).sent_count == 500, 120,
             what="500 letters")
    counts = smtp.handler.counts()
    assert len(counts) == 500 and set(counts.values()) == {1}, "exactly one letter per participant"
    rcpt, raw, _t = next(letter for letter in smtp.handler.letters if letter[0] == "p0007@example.org")
    text = email.message_from_bytes(raw, policy=email.policy.default).get_body(("plain",)).get_content()
    assert "Hello Buyer 7, order #7" in text, "the participant's own fields personalise the letter"
    assert issue_row(issue_id).status == "sending", "a triggered mailing stays live"

    lifecycle.pause(issue_id, user)
    wait_status(issue_id, "paused")
    for i in range(500, 600):
        assert arrive(i)["state"] == "pending"
    assert len(smtp.handler.counts()) == 500, "nothing leaves while paused"
    lifecycle.resume(issue_id, user)
    wait_for(lambda: issue_row(issue_id).sent_count == 600, 60, what="the held participants to go")

    lifecycle.cancel(issue_id, user)
    wait_status(issue_id, ("cancelled",), 30)
    for i in range(600, 620):
        late = arrive(i)
        assert late["state"] == "stopped_manually" and late["reason"] == "stopped_manually"
    assert len(smtp.handler.counts()) == 600
    row = issue_row(issue_id)
    assert row.total == 620 and row.stopped_count == 20 and row.sent_count == 600
    assert sum(e.event == "participant_stopped" for e in journal_of(issue_id)) == 20


def test_bad_participants_and_wrong_mailings_change_nothing(ctx, make_issue, make_user, api_client):
    issue_id = _triggered(make_issue)
    plain = make_issue(1)
    api = api_client("editor")
    r = api.post(f"/triggers/{issue_id}/participants", json={"email": "a@example.org"})
    assert r.status_code == 409, "a draft takes no participants"
    lifecycle.launch(issue_id, make_user("editor")[0])
    for body, field in (({"email": "not an address"}, "email"), ({}, "email"), ({"contact_id": "x"}, "contact_id"),
                        ({"contact_id": 99999}, "contact_id"), ({"email": "a@example.org", "fields": [1]}, "fields"),
                        ({"email": "a@example.org", "fields": {"x": {"y": 1}}}, "fields"),
                        ({"email": "a@example.org", "idempotency_key": ""}, "idempotency_key")):
        r = api.post(f"/triggers/{issue_id}/participants", json=body)
        assert r.status_code == 400 and r.json["error"] == field, (body, r.json)
    assert api.post(f"/triggers/{issue_id}/participants", data="[", content_type="application/json").status_code == 400
    assert api.post(f"/triggers/{plain}/participants", json={"email": "a@example.org"}).status_code == 409
    assert api.post("/triggers/999999/participants", json={"email": "a@example.org"}).status_code == 404
    assert api_client("support").post(f"/triggers/{issue_id}/participants",
                                      json={"email": "a@example.org"}).status_code == 403
    assert deliveries_of(issue_id) == [] and issue_row(issue_id).total == 0


def test_joining_the_list_sends_the_welcome_letter_once(ctx, make_issue, smtp, workers, make_user, api_client):
    issue_id = _triggered(make_issue, body='<p>Welcome, {{ name }} from {{ city }}</p><a href="{{ unsubscribe_url }}">u</a>')
    issue = db.session.get(Issue, issue_id)
    issue.trigger_on_join = True
    list_id = issue.list_id
    db.session.commit()
    workers.start(1, SEND_JOBS="1")
    lifecycle.launch(issue_id, make_user("editor")[0])
    from mailing import contacts, triggers

    rows = [contacts.contact_row(f"new{i}@example.org", f"New {i}", attributes={"city": "Riga"}) for i in range(3)]
    contacts.upsert(rows, list_id)
    db.session.commit()
    wait_for(lambda: issue_row(issue_id).sent_count == 3, 60, what="three welcome letters")
    contacts.upsert(rows, list_id)  # already members: nobody joins again
    db.session.commit()
    assert issue_row(issue_id).total == 3
    db.session.execute(sa.delete(list_members).where(list_members.c.list_id == list_id))
    db.session.commit()
    contacts.upsert(rows[:1], list_id)  # left and joined again: welcomed once all the same
    db.session.commit()
    assert issue_row(issue_id).total == 3 and triggers.joined(list_id, []) == 0
    raw = next(raw for rcpt, raw, _t in smtp.handler.letters if rcpt == "new1@example.org")
    text = email.message_from_bytes(raw, policy=email.policy.default).get_body(("plain",)).get_content()
    assert "Welcome, New 1 from Riga" in text
    assert len(smtp.handler.counts()) == 3
    other = ContactList(name="elsewhere")
    db.session.add(other)
    db.session.commit()
    contacts.upsert([contacts.contact_row("else@example.org")], other.id)
    db.session.commit()
    assert issue_row(issue_id).total == 3, "joining another list is not joining this one"
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Contact).where(
        Contact.email == "else@example.org")) == 1


def test_the_pages_create_launch_and_show_a_triggered_mailing(ctx, client, login, make_issue):
    login("editor")
    issue_id = make_issue(0)
    issue = db.session.get(Issue, issue_id)
    page = client.get(f"/issues/{issue_id}/edit")
    form = {"csrf_token": csrf_from(page.text), "subject": "Your order", "sender_id": str(issue.sender_id),
            "list_id": str(issue.list_id), "body_html": "<p>Order {{ order }}</p>", "spread": "none",
            "kind": "triggered", "trigger_on_join": "y"}
    r = client.post(f"/issues/{issue_id}/edit", data=form)
    assert r.status_code == 302, r.text
    row = issue_row(issue_id)
    assert row.kind == "triggered" and row.trigger_on_join is True, "{{ order }} is the participant's own field"
    show = client.get(f"/issues/{issue_id}")
    assert "Go live" in show.text
    r = client.post(f"/issues/{issue_id}/launch", data={"mode": "now", "csrf_token": csrf_from(show.text)})
    assert r.status_code in (302, 303) and issue_row(issue_id).status == "sending"
    listing = client.get("/").text
    assert "Triggered mailing" in listing and "no letter yet" in listing
    r = client.post(f"/issues/{issue_id}/actions/send_whole", headers={"HX-Request": "true",
                                                                      "X-CSRFToken": csrf_from(listing)})
    assert r.status_code == 409 and issue_row(issue_id).status == "sending"
