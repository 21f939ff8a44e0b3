"""Unsubscribe link and RFC 8058 one-click, per-sender unsubscribes, ARF complaints."""

import email
import email.policy
import re

import sqlalchemy as sa

from mailing import lifecycle, settings
from mailing.bounces import scan_maildir
from mailing.extensions import db
from mailing.models import StopEntry, StopList

from .support import deliveries_of, wait_status


def entries(code):
    return db.session.execute(sa.select(StopEntry.value, StopEntry.sender_id).join(StopList)
                              .where(StopList.code == code)).all()


def sent_issue(make_issue, workers, make_user, smtp, n=3, **kw):
    issue_id = make_issue(n, **kw)
    user, _ = make_user("editor")
    workers.start(1)
    lifecycle.launch(issue_id, user)
    wait_status(issue_id, "sent", 60)
    return issue_id


def link_of(smtp, rcpt):
    for r, raw, _t in smtp.handler.letters:
        if r == rcpt:
            msg = email.message_from_bytes(raw, policy=email.policy.default)
            url = msg["List-Unsubscribe"].strip("<>")
            return url.split("http://127.0.0.1:5999", 1)[1]
    raise AssertionError(rcpt)


def test_link_asks_then_unsubscribes_idempotently(ctx, client, make_issue, workers, make_user, smtp):
    issue_id = sent_issue(make_issue, workers, make_user, smtp, emails=["a@example.org", "b@example.org",
                                                                       "c@example.org"])
    path = link_of(smtp, "a@example.org")
    page = client.get(path)
    assert page.status_code == 200 and b"a@example.org" in page.data and b"confirm" in page.data
    assert entries("unsubscribed") == [], "the link's page asks first"
    assert client.post(path, data={}).status_code == 400
    done = client.post(path, data={"confirm": "yes"})
    assert done.status_code == 200 and b"no more letters" in done.data
    assert client.post(path, data={"confirm": "yes"}).status_code == 200
    assert entries("unsubscribed") == [("a@example.org", None)]
    # The next issue to the same people leaves a@ out.
    issue2 = make_issue(0)
    from mailing.models import Issue

    db.session.get(Issue, issue2).list_id = db.session.get(Issue, issue_id).list_id
    db.session.commit()
    user, _ = make_user("editor")
    lifecycle.launch(issue2, user)
    row = {d.email: d for d in deliveries_of(issue2)}["a@example.org"]
    assert (row.state, row.reason) == ("suppressed", "Unsubscribed from all")


def test_one_click_post_and_forged_tokens(ctx, client, make_issue, workers, make_user, smtp):
    sent_issue(make_issue, workers, make_user, smtp, emails=["a@example.org", "b@example.org", "c@example.org"])
    path = link_of(smtp, "b@example.org")
    r = client.post(path, data={"List-Unsubscribe": "One-Click"})
    assert r.status_code == 200 and entries("unsubscribed") == [("b@example.org", None)]
    assert client.post(path, data={"List-Unsubscribe": "One-Click"}).status_code == 200
    forged = re.sub(r"\.(\w)", lambda m: "." + ("0" if m.group(1) != "0" else "1"), path, count=1)
    other = re.sub(r"/u/(\d+)\.", lambda m: f"/u/{int(m.group(1)) + 1}.", path)
    for bad in (forged, other, "/u/garbage", "/u/12"):
        resp = client.get(bad)
        assert resp.status_code == 400 and b"not valid" in resp.data
        assert client.post(bad, data={"List-Unsubscribe": "One-Click"}).status_code == 400
    assert len(entries("unsubscribed")) == 1


def test_per_sender_unsubscribe_stops_only_that_sender(ctx, client, make_issue, workers, make_user, smtp):
    settings.put("per_sender_unsubscribe", True)
    db.session.commit()
    issue_id = sent_issue(make_issue, workers, make_user, smtp, emails=["a@example.org", "b@example.org",
                                                                       "c@example.org"])
    client.post(link_of(smtp, "c@example.org"), data={"List-Unsubscribe": "One-Click"})
    from mailing.models import Issue

    first = db.session.get(Issue, issue_id)
    assert entries("sender_unsubscribed") == [("c@example.org", first.sender_id)]
    assert entries("unsubscribed") == []
    user, _ = make_user("editor")
    same_sender = make_issue(0)
    other_sender = make_issue(0)
    for iid in (same_sender, other_sender):
        db.session.get(Issue, iid).list_id = first.list_id
    db.session.get(Issue, same_sender).sender_id = first.sender_id
    db.session.commit()
    lifecycle.launch(same_sender, user)
    lifecycle.launch(other_sender, user)
    assert {d.email: d.state for d in deliveries_of(same_sender)}["c@example.org"] == "suppressed"
    assert {d.email: d.state for d in deliveries_of(other_sender)}["c@example.org"] == "pending"


ARF = """From: feedback@isp.example
To: abuse@outbox.test
Subject: FW: spam report
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="b"

--b
Content-Type: text/plain

This is an email abuse report.
--b
Content-Type: message/feedback-report

Feedback-Type: abuse
User-Agent: isp/1.0
Version: 1
{rcpt_line}
--b
Content-Type: message/rfc822

From: news@outbox.test
To: someone@example.org
Message-ID: {message_id}
Subject: news

hello
--b--
"""


def test_arf_complaint_by_endpoint_and_maildir(ctx, api_client, make_issue, workers, make_user, smtp, tmp_path):
    """A complaint is applied only when it quotes a Message-ID we sent; one naming some
    address is quarantined and unsubscribes nobody."""
    issue_id = sent_issue(make_issue, workers, make_user, smtp, emails=["a@example.org", "b@example.org",
                                                                       "c@example.org"])
    mid = {d.email: d.message_id for d in deliveries_of(issue_id)}["a@example.org"]
    api = api_client("editor")
    r = api.post("/complaints", data=ARF.format(rcpt_line="", message_id=mid).replace("\n", "\r\n"),
                 content_type="message/rfc822")
    assert r.status_code == 200 and r.json["outcome"] == "applied" and r.json["kind"] == "complaint"
    r = api.post("/complaints", data="not a report", content_type="message/rfc822")
    assert r.status_code == 400 and r.json["error"] == "unreadable"
    import mailbox

    box = mailbox.Maildir(str(tmp_path / "fbl"), create=True)
    box.add(ARF.format(rcpt_line="Original-Rcpt-To: b@Example.ORG", message_id="<unknown@x>").encode())
    assert scan_maildir(str(tmp_path / "fbl")) == 1
    assert sorted(v for v, _s in entries("unsubscribed")) == ["a@example.org"], "b was named, not matched"
    assert [box.get_message(k).get_subdir() for k in box.keys()] == ["cur"], "taken in once, never again"
    assert scan_maildir(str(tmp_path / "fbl")) == 0
