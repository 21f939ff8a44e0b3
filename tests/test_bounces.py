"""Late bounces and complaints: VERP return paths, three intakes (SMTP listener, Maildir,
API), every report matched to its delivery and applied once or quarantined with a reason,
Undeliverable, and complaints trusted only when they are ours."""

import smtplib
from collections import Counter

import sqlalchemy as sa

from mailing import lifecycle, settings, verp
from mailing.bounces import receive_one, scan_maildir
from mailing.bounces_smtp import controller
from mailing.devtools import dsn
from mailing.extensions import db
from mailing.models import BounceReport, Issue, StopEntry, StopList

from .support import SECRET, csrf_from, deliveries_of, issue_row, wait_status
from .support.base import free_port

BOUNCE_DOMAIN = "bounce.outbox.example"


def _entries(code: str) -> set[str]:
    db.session.commit()
    rows = db.session.scalars(sa.select(StopEntry.value).join(StopList).where(StopList.code == code)).all()
    db.session.commit()
    return set(rows)


def _reports() -> list:
    db.session.commit()
    rows = db.session.execute(sa.select(BounceReport.__table__).order_by(BounceReport.id)).all()
    db.session.commit()
    return rows


def _send(app, make_issue, workers, make_user, n: int) -> int:
    app.config["BOUNCE_DOMAIN"] = BOUNCE_DOMAIN
    issue_id = make_issue(n)
    workers.start(1, SEND_JOBS="1", BOUNCE_DOMAIN=BOUNCE_DOMAIN)
    lifecycle.launch(issue_id, make_user("editor")[0])
    wait_status(issue_id, "sent", 90)
    return issue_id


def test_two_hundred_reports_of_four_shapes_through_the_listener_and_the_maildir(
        ctx, make_issue, smtp, workers, make_user, tmp_path):
    issue_id = _send(ctx, make_issue, workers, make_user, 100)
    rows = deliveries_of(issue_id)
    for d in rows:  # each letter went out with its own return path
        assert smtp.handler.mail_from[d.email] == verp.address(SECRET.encode(), d.id, BOUNCE_DOMAIN)
        assert verp.find(SECRET.encode(), smtp.handler.mail_from[d.email]) == d.id
    assert verp.find(SECRET.encode(), f"bounces+d{rows[0].id}-0000000000@{BOUNCE_DOMAIN}") is None, "forged"

    listener_port = free_port()
    listener = controller(ctx, "127.0.0.1", listener_port)
    listener.start()
    maildir = tmp_path / "bounces"
    for sub in ("new", "cur", "tmp"):
        (maildir / sub).mkdir(parents=True)
    by_smtp: list[tuple[str, bytes]] = []
    expected: dict[int, set[str]] = {}
    try:
        for i, d in enumerate(rows):
            shape = dsn.SHAPES[i % 4]
            hard = i % 5 != 0  # a fifth only soft
            to = smtp.handler.mail_from[d.email]
            # Over SMTP to its VERP address, and into the Maildir quoting only the Message-ID.
            by_smtp.append((to, dsn.dsn(shape, rcpt=d.email, message_id=d.message_id, to=to, hard=hard, n=i)))
            other = dsn.SHAPES[(i + 1) % 4]
            (maildir / "new" / f"{i}.report").write_bytes(
                dsn.dsn(other, rcpt=d.email, message_id=d.message_id, to="news@outbox.example", hard=hard, n=1000 + i))
            expected[d.id] = {"hard" if hard else "soft"}
        (maildir / "new" / "garbage-1").write_bytes(dsn.garbage(1))
        (maildir / "new" / "forged").write_bytes(dsn.dsn("postfix", rcpt="x@example.org", n=9,
                                                         message_id=f"<outbox.{issue_id}.1.0000000000000000@x>"))
        with smtplib.SMTP("127.0.0.1", listener_port) as s:
            for to, raw in by_smtp:
                s.sendmail("", [to], raw)
            refused = None
            try:
                s.sendmail("", ["postmaster@elsewhere.example"], dsn.garbage(2))
            except smtplib.SMTPRecipientsRefused as exc:
                refused = exc
            assert refused is not None, "only the bounce domain's addresses are taken"
        assert scan_maildir(str(maildir)) == 102
        assert scan_maildir(str(maildir)) == 0, "each file once"
        # Replays change nothing.
        with smtplib.SMTP("127.0.0.1", listener_port) as s:
            for to, raw in by_smtp[:20]:
                s.sendmail("", [to], raw)
    finally:
        listener.stop()

    reports = _reports()
    applied = [r for r in reports if r.outcome == "applied"]
    assert len(applied) == 200 and Counter(r.source for r in applied) == {"smtp": 100, "maildir": 100}
    per_delivery = Counter(r.delivery_id for r in applied)
    assert set(per_delivery.values()) == {2} and set(per_delivery) == set(expected)
    assert {r.kind for r in applied if r.delivery_id == rows[1].id} == {"hard"}
    assert all(r.status and r.diagnostic for r in applied)
    quarantined = {r.reason for r in reports if r.outcome == "quarantined"}
    assert len([r for r in reports if r.outcome == "quarantined"]) == 2
    assert any("names no delivery" in q for q in quarantined) and any("not readable" in q or "neither" in q
                                                                        for q in quarantined)
    hard_ids = {r.delivery_id for r in applied if r.kind == "hard"}
    states = {d.id: d.state for d in deliveries_of(issue_id)}
    assert {i for i, s in states.items() if s == "bounced"} == hard_ids
    first = {d.id: d.reply_code for d in deliveries_of(issue_id)}
    assert set(first.values()) == {250}, "the relay's first reply stays"
    row = issue_row(issue_id)
    assert row.bounced_count == len(hard_ids) == 80 and row.sent_count == 20, "counters moved once each"
    hard_keys = {d.email_key for d in rows if d.id in hard_ids}
    assert _entries("undeliverable") == hard_keys


def test_soft_bounces_from_three_issues_make_an_address_undeliverable(ctx, make_issue, smtp, workers, make_user):
    settings.put("soft_bounce_limit", 3)
    db.session.commit()
    address = "full@example.org"
    first = db.session.get(Issue, make_issue(1, emails=[address]))
    issues = [first.id]
    for n in range(3):  # later issues of the same sender to the same list
        later = Issue(subject=f"News {n}", sender_id=first.sender_id, list_id=first.list_id, body_html=first.body_html)
        db.session.add(later)
        db.session.commit()
        issues.append(later.id)
    workers.start(1, SEND_JOBS="1")
    user, _ = make_user("editor")
    for issue_id in issues[:3]:
        lifecycle.launch(issue_id, user)
        wait_status(issue_id, "sent", 60)
    for n, issue_id in enumerate(issues[:3]):
        d = deliveries_of(issue_id)[0]
        receive_one(dsn.dsn("postfix", rcpt=address, message_id=d.message_id, hard=False, n=n), "api")
        assert (address in _entries("undeliverable")) == (n == 2), n
    assert issue_row(issues[0]).sent_count == 1, "a soft bounce does not undo a delivery"
    lifecycle.launch(issues[3], user)
    wait_status(issues[3], "sent", 60)
    last = deliveries_of(issues[3])[0]
    assert last.state == "suppressed" and last.reason == "Undeliverable"


def test_complaints_are_ours_or_quarantined_and_bad_ones_never_block(ctx, api_client, make_issue, smtp, workers,
                                                                     make_user, tmp_path, client, login):
    issue_id = make_issue(2, emails=["a@example.org", "b@example.org"])
    workers.start(1, SEND_JOBS="1")
    lifecycle.launch(issue_id, make_user("editor")[0])
    wait_status(issue_id, "sent", 60)
    a, b = deliveries_of(issue_id)
    api = api_client("editor")
    r = api.post("/bounces", data=dsn.complaint(message_id="<someone-elses@isp.example>", rcpt="b@example.org"),
                 content_type="message/rfc822")
    assert r.status_code == 200 and r.json["outcome"] == "quarantined" and "names no delivery" in r.json["reason"]
    assert _entries("unsubscribed") == set(), "a report naming an address unsubscribes nobody"
    r = api.post("/bounces", data=b"\x00\xff garbage", content_type="message/rfc822")
    assert r.status_code == 400 and r.json["error"] == "unreadable"
    assert api.post("/bounces", data=b"", content_type="message/rfc822").status_code == 400
    assert api_client("support").post("/bounces", data=dsn.garbage(), content_type="message/rfc822").status_code == 403
    box = tmp_path / "fbl"
    for sub in ("new", "cur", "tmp"):
        (box / sub).mkdir(parents=True)
    (box / "new" / "1-bad").write_bytes(b"Content-Type: multipart/report; report-type=feedback-report\r\n\r\n--")
    (box / "new" / "2-good").write_bytes(dsn.complaint(message_id=a.message_id, n=1))
    assert scan_maildir(str(box)) == 2
    assert _entries("unsubscribed") == {"a@example.org"}, "the good report after a bad one is applied"
    assert sorted(p.name.split(":")[0] for p in (box / "cur").iterdir()) == ["1-bad", "2-good"]
    big = dsn.dsn("postfix", rcpt=b.email, message_id=b.message_id, n=5) + b"x" * 2_000_000
    got = receive_one(big, "api")
    assert got.outcome == "quarantined" and got.reason.startswith("too big")
    assert deliveries_of(issue_id)[1].state == "sent"

    login("admin")
    page = client.get("/admin/bounces")
    assert page.status_code == 200 and "names no delivery" in page.text and "too big" in page.text
    assert "&lt;someone-elses@isp.example&gt;" in page.text, "the raw report is shown escaped"
    quarantined = [r for r in _reports() if r.outcome == "quarantined"]
    assert len(quarantined) == 3, "the unknown complaint, the broken one, the big one (the API refused the garbage)"
    r = client.post(f"/admin/bounces/{quarantined[0].id}/delete", data={"csrf_token": csrf_from(page.data)})
    assert r.status_code == 303 and len([r for r in _reports() if r.outcome == "quarantined"]) == 2
    assert client.post(f"/admin/bounces/{quarantined[0].id}/delete",
                       data={"csrf_token": csrf_from(page.data)}).status_code == 404
    login("editor")
    assert client.get("/admin/bounces").status_code == 403
    show = client.get(f"/issues/{issue_id}?tab=responses")
    assert "Late reports" in show.text


def test_the_quick_reading_agrees_with_the_full_parse():
    """RFC 3464 reports and complaints are read without a MIME tree; the full parse (any
    encoding, and flufl.bounce's detectors) reads the same fields from the same bytes."""
    import base64

    from mailing.bounces import Unparseable, _full, _quick, parse

    mid = "<outbox.5.17.0123456789abcdef@outbox.example>"
    for shape in ("postfix", "gmail", "exim"):
        for hard in (True, False):
            raw = dsn.dsn(shape, rcpt="a@example.org", message_id=mid, hard=hard, n=1)
            assert _quick(raw) == _full(raw) == parse(raw)
            assert parse(raw).kind == ("hard" if hard else "soft") and parse(raw).message_id == mid
    assert _quick(dsn.complaint(message_id=mid)) == _full(dsn.complaint(message_id=mid))
    assert _quick(dsn.dsn("qmail", rcpt="a@example.org", message_id=mid)) is None, "plain text: the detectors"
    # A delivery-status part in base64 is not read quickly, and the full parse still reads it.
    raw = dsn.dsn("postfix", rcpt="a@example.org", message_id=mid, n=2).decode()
    head, _, rest = raw.partition("Content-Type: message/delivery-status\r\n\r\n")
    block, sep, tail = rest.partition("\r\n--=_postfix_2")
    encoded = base64.encodebytes(block.encode()).decode().replace("\n", "\r\n")
    b64 = (head + "Content-Type: message/delivery-status\r\nContent-Transfer-Encoding: base64\r\n\r\n"
           + encoded + sep + tail).encode()
    assert _quick(b64) is None and parse(b64).status == "5.1.1" and parse(b64).kind == "hard"
    try:
        parse(dsn.garbage())
        raise AssertionError("garbage read as a report")
    except Unparseable:
        pass
