"""Copy makes a Draft of an issue's settings and nothing else; resend makes a new issue
linked to a Sent or Cancelled one, to the whole list again or to those it did not reach,
never to bounced or stop-listed recipients. Through the use cases, the pages, the API and
a real browser."""

import pytest
import sqlalchemy as sa

from mailing import chains, lifecycle, settings, stoplists
from mailing.extensions import db
from mailing.models import Issue

from .support import csrf_from, deliveries_of, issue_row, journal_of, wait_for, wait_status
from .support.browser import log_in, screenshot

SETTINGS = ("subject", "body_html", "body_text", "preheader", "from_name", "reply_to", "custom_headers",
            "sender_id", "list_id", "spread_size", "spread_interval", "spread_hours")


def states_of(issue_id: int) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for d in deliveries_of(issue_id):
        out.setdefault(d.state, set()).add(d.email)
    return out


def _dress(issue_id: int) -> None:
    # Test set-up only: an issue with every setting a copy carries.
    db.session.execute(sa.update(Issue).where(Issue.id == issue_id).values(
        body_text="Plain {{ name }}", preheader="Pre", from_name="News desk", reply_to="desk@example.org",
        custom_headers="X-Campaign: spring", spread_size=5, spread_interval=600))
    db.session.commit()


def test_copy_takes_the_settings_and_nothing_else(ctx, make_issue, smtp, workers, make_user, api_client):
    original = make_issue(5, subject="Spring news")
    _dress(original)
    user, _ = make_user("editor")
    workers.start(1)
    lifecycle.launch(original, user)  # five recipients: one portion
    wait_status(original, "sent", 60)

    api = api_client("editor")
    r = api.post(f"/issues/{original}/copy")
    assert r.status_code == 201
    body = r.get_json()
    new, old = issue_row(body["id"]), issue_row(original)
    assert {f: getattr(new, f) for f in SETTINGS} == {f: getattr(old, f) for f in SETTINGS}
    assert new.status == "draft" and body["status"] == "draft"
    assert (new.total, new.sent_count, new.bounced_count, new.failed_count, new.suppressed_count,
            new.stopped_count) == (0, 0, 0, 0, 0, 0)
    assert (new.launched_at, new.started_at, new.finished_at, new.last_reply, new.status_reason,
            new.resent_from_id, new.chain_root_id) == (None,) * 7
    assert new.settings == {} and deliveries_of(new.id) == []
    assert [e.event for e in journal_of(new.id)] == ["created"], "the journal is not copied"
    assert journal_of(new.id)[0].details == {"copied_from": original}
    assert journal_of(original)[-1].event == "copy"
    # Copying changes nothing of the original.
    assert issue_row(original).status == "sent" and issue_row(original).sent_count == 5

    support = api_client("support")
    assert support.post(f"/issues/{original}/copy").status_code == 403
    assert api.post("/issues/999999/copy").status_code == 404


def test_resend_to_not_reached_is_exactly_the_cancelled_and_failed(ctx, make_issue, smtp, workers, make_user,
                                                                  api_client):
    original = make_issue(20, subject="Flash sale")
    emails = sorted(d for d in _list_emails(original))
    user, _ = make_user("editor")
    # Spread: ten now, the rest in an hour, which the cancel stops before their turn.
    db.session.execute(sa.update(Issue).where(Issue.id == original).values(spread_size=10, spread_interval=3600))
    stoplists.add_entry("blocked", emails[0], source="test")  # suppressed at launch
    settings.put("launch_delay_seconds", 3)  # time to script the first portion's replies
    db.session.commit()
    workers.start(1, MAX_ATTEMPTS="1")
    lifecycle.launch(original, user)
    first = [d.email for d in deliveries_of(original) if d.state == "pending"][:10]  # claimed by id
    bounced, failed = first[0], first[1]
    smtp.handler.scripted.update({bounced: ["550 5.1.1 No such mailbox"],
                                  failed: ["451 4.3.0 Temporary local problem"]})
    wait_for(lambda: (r := issue_row(original)).sent_count + r.bounced_count + r.failed_count >= 10, 60,
             what="the first portion")
    lifecycle.cancel(original, user)
    wait_status(original, "cancelled", 30)
    before = states_of(original)
    assert before["bounced"] == {bounced} and before["failed"] == {failed}
    assert before["suppressed"] == {emails[0]} and len(before["stopped_manually"]) == 9
    stopped_now = sorted(before["stopped_manually"])[0]
    stoplists.add_entry("blocked", stopped_now, source="test")  # stop-listed after the send
    db.session.commit()
    expected = (before["failed"] | before["stopped_manually"]) - {stopped_now}

    api = api_client("editor")
    counts = api.get(f"/issues/{original}/resend").get_json()
    assert counts == {"not_reached": len(expected), "all": 20 - 1 - 2}  # less the bounced and stop-listed
    assert api.post(f"/issues/{original}/resend", json={"audience": "everyone"}).status_code == 400
    assert api_client("support").post(f"/issues/{original}/resend", json={"audience": "all"}).status_code == 403
    received = set(smtp.handler.counts())
    r = api.post(f"/issues/{original}/resend", json={"audience": "not_reached"})
    assert r.status_code == 202, r.get_json()
    again = r.get_json()["id"]
    assert r.get_json()["resent_from_id"] == original and r.get_json()["resend_audience"] == "not_reached"
    # None of them ever got a letter from us: the pre-send check holds it, as any launch.
    assert wait_status(again, "moderation", 10) and "never got a letter" in issue_row(again).status_reason
    moderator, _ = make_user("moderator")
    lifecycle.approve(again, moderator)
    wait_status(again, "sent", 60)
    assert states_of(again) == {"sent": expected, "suppressed": {stopped_now}}, \
        "the failed and the stopped, never the bounced; the one stop-listed since is suppressed"
    newly = {e for e, _raw, _t in smtp.handler.letters} - received
    assert newly == expected - received and stopped_now not in newly and bounced not in newly
    assert issue_row(again).sent_count == len(expected)
    assert [e.event for e in journal_of(original)][-1] == "resend"
    # A draft or a live issue is not resent.
    draft = make_issue(2)
    r = api.post(f"/issues/{draft}/resend", json={"audience": "all"})
    assert r.status_code == 409 and "draft" in r.get_json()["message"]


def _list_emails(issue_id: int) -> list[str]:
    from mailing.models import Contact, list_members

    issue = db.session.get(Issue, issue_id)
    return list(db.session.scalars(sa.select(Contact.email).join(
        list_members, list_members.c.contact_id == Contact.id).where(list_members.c.list_id == issue.list_id)))


def test_pages_copy_resend_delete_and_roles(ctx, client, login, make_issue, make_user):
    original = make_issue(4, subject="Page news")
    editor = login("editor")
    step = chains.add_step(original, editor, audience="sent")
    page = client.get("/")
    token = csrf_from(page.data)
    html = page.get_data(as_text=True)
    assert "Step 2 of a chain" in html and "due right after step 1" in html
    r = client.post(f"/issues/{original}/copy", headers={"X-CSRFToken": token, "HX-Request": "true"})
    assert r.status_code == 204 and r.headers["HX-Redirect"].endswith("/edit")
    # The delete confirmation names the later steps; the resend dialog refuses a draft.
    r = client.get(f"/issues/{original}/delete")
    assert r.status_code == 200 and f'id="doomed-{step}"' in r.get_data(as_text=True)
    assert client.get(f"/issues/{original}/resend").status_code == 409
    r = client.post(f"/issues/{step}/steps", data={"csrf_token": token, "audience": "nobody", "when": "delay"})
    assert r.status_code == 400
    r = client.post(f"/issues/{original}/delete", data={"csrf_token": token})
    assert r.status_code == 302
    db.session.expire_all()
    assert db.session.get(Issue, original) is None and db.session.get(Issue, step) is None
    r = client.get("/journal")
    assert "Page news (deleted)" in r.get_data(as_text=True)

    other = make_issue(2)
    client.get("/logout")
    login("support")
    token = csrf_from(client.get("/").data)
    assert client.post(f"/issues/{other}/copy", headers={"X-CSRFToken": token}).status_code == 403
    assert client.get(f"/issues/{other}/delete").status_code == 403
    assert client.post(f"/issues/{other}/delete", data={"csrf_token": token}).status_code == 403
    assert "action-copy" not in client.get("/").get_data(as_text=True)


@pytest.mark.browser
def test_browser_copy_from_the_dropdown(ctx, make_user, make_issue, browser, web):
    original = make_issue(3, subject="Copy me")
    user, pw = make_user("editor")
    page = browser.new_page()
    log_in(page, web, user.email, pw)
    row = page.locator(f"#issue-{original}")
    row.locator(".menu-button").click()
    row.locator("button.action-copy").click()
    page.wait_for_url(f"{web}/issues/*/edit")
    assert page.input_value("input[name=subject]") == "Copy me"
    screenshot(page, "copy-editor")
    copy_id = int(page.url.rsplit("/", 2)[-2])
    assert copy_id != original and issue_row(copy_id).status == "draft"


@pytest.mark.browser
def test_browser_resend_dialog_shows_both_counts(ctx, make_user, make_issue, smtp, workers, browser, web):
    original = make_issue(6, subject="Resend me")
    emails = sorted(_list_emails(original))
    smtp.handler.scripted[emails[0]] = ["451 4.3.0 Temporary local problem"]
    smtp.handler.scripted[emails[1]] = ["550 5.1.1 No such mailbox"]
    user, pw = make_user("editor")
    workers.start(1, MAX_ATTEMPTS="1")
    lifecycle.launch(original, user)
    wait_status(original, "sent", 60)
    page = browser.new_page()
    log_in(page, web, user.email, pw)
    page.goto(f"{web}/?status=sent")
    row = page.locator(f"#issue-{original}")
    row.locator(".menu-button").click()
    row.locator("a.action-resend").click()
    page.wait_for_url(f"{web}/issues/{original}/resend")
    assert page.locator(".audience-all .count").get_attribute("data-count") == "5"  # less the bounced
    assert page.locator(".audience-not_reached .count").get_attribute("data-count") == "1"
    screenshot(page, "resend-dialog")
    page.check("input[value=not_reached]")
    page.click("#resend")
    page.wait_for_url(web + "/")
    again = db.session.scalar(sa.select(Issue.id).where(Issue.resent_from_id == original))
    db.session.commit()
    if wait_status(again, ("moderation", "sent"), 30) == "moderation":  # a fresh audience is held
        lifecycle.approve(again, make_user("moderator")[0])
    wait_status(again, "sent", 60)
    assert states_of(again) == {"sent": {emails[0]}}
