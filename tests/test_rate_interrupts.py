"""Interrupts on rates (seed 004): too many bounces or complaints over an issue's last N
processed recipients interrupt it; only an admin resumes it, with a comment."""

import sqlalchemy as sa

from mailing import lifecycle, queueing, rates, settings
from mailing.extensions import db
from mailing.models import Contact, Issue, list_members

from .support import csrf_from, issue_row, journal_of, wait_for, wait_status


def _addresses(issue_id: int) -> list[str]:
    issue = db.session.get(Issue, issue_id)
    rows = db.session.scalars(sa.select(Contact.email).join(list_members, list_members.c.contact_id == Contact.id)
                              .where(list_members.c.list_id == issue.list_id).order_by(Contact.id)).all()
    db.session.commit()
    return list(rows)


def test_the_window_counts_late_reports_and_waits_for_enough_recipients(ctx):
    r = queueing.redis_connection()
    limits = rates.Limits(window=100, bounce_rate=0.05, complaint_rate=0.001)
    assert limits.least == 25
    assert rates.push(r, 1, limits, 10, bounced=5) is None, "too few recipients to judge"
    assert rates.push(r, 1, limits, 90, bounced=0) is None  # 5 of 100
    breach = rates.push(r, 1, limits, 0, bounced=1)  # a late bounce takes no place in the window
    assert breach is not None and breach.kind == "bounce" and breach.processed == 100 and breach.count == 6
    assert "6.0%" in breach.reason() and "5.0%" in breach.reason()
    rates.forget(r, 1)
    for _ in range(30):  # the window slides: old bounces leave it
        assert rates.push(r, 2, limits, 10, bounced=0) is None
    assert rates.push(r, 2, limits, 0, complained=1).kind == "complaint"


def test_hard_bounces_interrupt_within_the_window_and_only_an_admin_resumes(
        ctx, client, login, make_issue, smtp, workers, api_client):
    issue_id = make_issue(3000)
    for address in _addresses(issue_id)[::10]:  # 10 % of the list does not exist
        smtp.handler.scripted[address] = ["550 5.1.1 Recipient address rejected: User unknown"]
    editor = login("editor")
    workers.start(2, SEND_JOBS="2")
    lifecycle.launch(issue_id, editor)
    settings.put("interrupt_bounce_rate", 0.5)  # frozen at launch: a later change does not count
    db.session.commit()
    wait_status(issue_id, "interrupted", 120)
    row = issue_row(issue_id)
    assert row.interrupt_kind == "rates" and row.status_reason.startswith("bounce rate")
    assert row.settings["interrupt_bounce_rate"] == 0.05 and row.settings["rate_window"] == 1000
    processed = row.sent_count + row.bounced_count
    assert 250 <= processed <= 1000 + 200, processed  # within the window (+ letters in flight)
    event = [e for e in journal_of(issue_id) if e.event == "interrupt"][-1]
    assert event.details["kind"] == "bounce" and event.details["rate"] > 0.05

    report = client.get(f"/issues/{issue_id}?tab=report").text
    assert "Top receiving domains" in report and "<td>example.org</td>" in report
    assert "5.1.1" in report and "User unknown" in report, "the refusals' reason is on the Report tab"
    page = client.get("/")
    assert "Only an admin can resume it" in page.text
    r = client.post(f"/issues/{issue_id}/actions/resume", headers={"HX-Request": "true", "HX-Prompt": "go",
                                                                    "X-CSRFToken": csrf_from(page.data)})
    assert r.status_code == 403 and "Only an admin" in r.text
    assert api_client("editor").post(f"/issues/{issue_id}/resume", json={"comment": "go"}).status_code == 403
    admin_api = api_client("admin")
    r = admin_api.post(f"/issues/{issue_id}/resume", json={})
    assert r.status_code == 400 and r.json["error"] == "comment"
    assert issue_row(issue_id).status == "interrupted"

    smtp.handler.scripted.clear()  # the list was cleaned: the rest can go
    login("admin")
    page = client.get("/")
    r = client.post(f"/issues/{issue_id}/actions/resume",
                    headers={"HX-Request": "true", "HX-Prompt": "Checked with the list owner",
                             "X-CSRFToken": csrf_from(page.data)})
    assert r.status_code == 200
    wait_status(issue_id, "sent", 120)
    resumed = [e for e in journal_of(issue_id) if e.event == "resume"][-1]
    assert resumed.reason == "Checked with the list owner"
    assert issue_row(issue_id).interrupt_kind is None


def test_a_late_complaint_interrupts_an_issue_still_sending(ctx, make_issue, smtp, workers, make_user):
    settings.put("rate_window", 100)
    db.session.commit()
    issue_id = make_issue(2000)
    smtp.handler.delay = 0.02
    user, _ = make_user("editor")
    workers.start(1, SEND_JOBS="1")
    lifecycle.launch(issue_id, user)
    r = queueing.redis_connection()

    def in_window() -> int:  # what the runners have pushed so far (after their commits)
        return sum(int(e.split()[0]) for e in r.lrange(rates.key(issue_id), 0, -1))

    wait_for(lambda: in_window() >= 40, 60, what="sending")
    assert lifecycle.late_report(issue_id, complained=1) is True
    row = issue_row(issue_id)
    assert row.status == "interrupted" and row.interrupt_kind == "rates"
    assert row.status_reason.startswith("complaint rate")
    assert lifecycle.late_report(issue_id, complained=1) is False, "only a sending issue counts"
