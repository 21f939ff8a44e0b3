"""End to end with a real Redis, real RQ workers and a real SMTP server."""

import email
import email.policy

from mailing import lifecycle

from .support import csrf_from, deliveries_of, issue_row, journal_of, wait_status


def test_issue_of_1000_goes_out_once_each_personalised(ctx, client, login, make_issue, smtp, workers):
    issue_id = make_issue(1000)
    login("editor")
    workers.start(2)
    page = client.get(f"/issues/{issue_id}")
    r = client.post(f"/issues/{issue_id}/launch", data={"mode": "now", "csrf_token": csrf_from(page.data)})
    assert r.status_code == 302
    wait_status(issue_id, "sent", 120)

    counts = smtp.handler.counts()
    rows = deliveries_of(issue_id)
    assert len(rows) == 1000 and len(counts) == 1000
    assert set(counts.values()) == {1}, "somebody got the letter twice"
    by_email = {d.email: d for d in rows}
    for rcpt, raw, _t in smtp.handler.letters:
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        d = by_email[rcpt]
        assert f"Hello, {d.name} ({d.email})" in msg.get_body(("html",)).get_content()
        assert msg["Message-ID"] == d.message_id
        assert msg["List-Unsubscribe"].startswith("<http://127.0.0.1:5999/u/")
    assert {d.state for d in rows} == {"sent"}
    assert all(d.reply_code == 250 and d.reply_enhanced == "2.0.0" and d.reply_text for d in rows)
    issue = issue_row(issue_id)
    assert (issue.total, issue.sent_count, issue.failed_count) == (1000, 1000, 0)
    assert [e.event for e in journal_of(issue_id)] == ["launch", "start", "finish"]
    row = client.get(f"/issues/{issue_id}/row").data
    assert b'data-status="sent"' in row and b"hx-trigger" not in row, "a final row stops polling"


def test_relay_down_interrupts_with_the_error_shown(ctx, client, login, make_issue, smtp, workers):
    issue_id = make_issue(20)
    user = login("editor")
    smtp.stop()
    workers.start(1)
    lifecycle.launch(issue_id, user)
    wait_status(issue_id, "interrupted", 60)
    issue = issue_row(issue_id)
    assert "relay unreachable" in issue.status_reason
    assert "Connection refused" in issue.status_reason or "refused" in issue.status_reason.lower()
    page = client.get(f"/issues/{issue_id}")
    assert b"relay unreachable" in page.data
    assert {d.state for d in deliveries_of(issue_id)} == {"pending"}, "nothing is lost or marked sent"

    # The relay is back: resume continues, nobody twice, nobody skipped.
    smtp.start()
    lifecycle.resume(issue_id, user)
    wait_status(issue_id, "sent", 60)
    assert sorted(smtp.handler.counts().values()) == [1] * 20
