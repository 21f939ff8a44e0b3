"""The issue page's tabs, the Outgoing filters, the job journal, with a real send behind them."""

import re

import sqlalchemy as sa

from mailing import lifecycle
from mailing.extensions import db
from mailing.models import Issue

from .support import deliveries_of, issue_row, wait_status


def test_retry_bounce_and_the_server_response_tab(ctx, client, login, make_issue, smtp, workers, make_user):
    emails = [f"ok{i}@example.org" for i in range(8)] + ["gone@example.org", "busy@example.org"]
    issue_id = make_issue(10, emails=emails)
    smtp.handler.scripted["gone@example.org"] = ["550 5.1.1 No such user here"]
    smtp.handler.scripted["busy@example.org"] = ["451 4.3.0 Mailbox busy, try later"]
    user, _ = make_user("editor")
    workers.start(1)
    lifecycle.launch(issue_id, user)
    wait_status(issue_id, "sent", 60)
    rows = {d.email: d for d in deliveries_of(issue_id)}
    assert rows["gone@example.org"].state == "bounced"
    assert (rows["gone@example.org"].reply_code, rows["gone@example.org"].reply_enhanced) == (550, "5.1.1")
    busy = rows["busy@example.org"]
    assert busy.state == "sent" and busy.attempts == 2, "a 4xx is retried, then delivered"
    issue = issue_row(issue_id)
    assert (issue.sent_count, issue.bounced_count, issue.failed_count) == (9, 1, 0)
    assert issue.sent_count + issue.bounced_count == issue.total, "the counts add up to the audience"
    assert smtp.handler.counts()["busy@example.org"] == 1

    login("support")
    page = client.get(f"/issues/{issue_id}?tab=responses").data.decode()
    assert "550" in page and "5.1.1" in page and "No such user here" in page and "250" in page
    group = client.get(f"/issues/{issue_id}?tab=responses&code=550&enhanced=5.1.1").data.decode()
    assert "gone@example.org" in group and "ok1@example.org" not in group
    found = client.get(f"/issues/{issue_id}?tab=responses&q=BUSY@").data.decode()
    assert "busy@example.org" in found and "gone@example.org" not in found
    report = client.get(f"/issues/{issue_id}?tab=report").data.decode()
    assert "bounced" in report and "<svg" in report and "Sent per minute" in report
    assert re.search(r'<text x="\d+" y="146" font-size="10">\d\d:\d\d</text>', report), "time labels"
    assert '<time datetime="' in report.split("Sent per minute", 1)[1], "the span in the reader's zone"


def test_permanent_failure_after_the_retry_limit(ctx, make_issue, smtp, workers, make_user):
    issue_id = make_issue(2, emails=["a@example.org", "full@example.org"])
    smtp.handler.scripted["full@example.org"] = ["452 4.2.2 Mailbox full"] * 10
    user, _ = make_user("editor")
    workers.start(1, MAX_ATTEMPTS="3", RETRY_BASE_SECONDS="0.2")
    lifecycle.launch(issue_id, user)
    wait_status(issue_id, "sent", 60)
    rows = {d.email: d for d in deliveries_of(issue_id)}
    assert rows["full@example.org"].state == "failed" and rows["full@example.org"].attempts == 3
    assert issue_row(issue_id).failed_count == 1


def test_outgoing_filters_and_tabs(ctx, client, login, make_issue):
    draft = make_issue(1, subject="Draft one")
    sent = make_issue(1, subject="Finished one")
    db.session.execute(sa.update(Issue).where(Issue.id == sent).values(status="sent"))
    db.session.commit()
    login("support")
    live = client.get("/").data.decode()
    assert "Draft one" in live and "Finished one" not in live
    tab = client.get("/?status=sent").data.decode()
    assert "Finished one" in tab and "Draft one" not in tab
    assert client.get("/?status=bogus").status_code == 404
    assert draft


def test_job_journal_filters_and_pages(ctx, client, login, make_issue, make_user):
    from mailing import states

    a, b = make_issue(1), make_issue(1)
    editor, _ = make_user("editor")
    for _i in range(60):
        states.record(a, "edited", actor=editor)
    states.record(b, "test_letter", actor="someone@else")
    db.session.commit()
    login("support")
    first = client.get("/journal").data.decode()
    assert "Older" in first and "someone@else" in first
    only_b = client.get(f"/journal?issue={b}").data.decode()
    assert "test_letter" in only_b and "edited" not in only_b.split("<tbody>")[1]
    by_actor = client.get("/journal?actor=someone").data.decode()
    assert by_actor.split("<tbody>")[1].count("<tr>") == 1
    assert "edited" in client.get("/journal?event=edited&page=2").data.decode()
