"""Pacing per receiving domain, smooth rates and warm-up, against a real SMTP server,
real Redis and real workers."""

import time
from collections import deque
from datetime import date, timedelta

import redis
import sqlalchemy as sa

from mailing import clock, lifecycle, limits, settings
from mailing.extensions import db
from mailing.limits import Groups
from mailing.models import DomainGroup, Issue, JournalEvent
from mailing.sending.pacer import Pacer
from mailing.sending.policy import throttled
from mailing.sending.transport import Reply

from .support import issue_row, wait_for, wait_status
from .support.smtp import RecordingHandler


def test_domains_map_to_their_group_and_others_are_paced_alone(ctx):
    groups = Groups.load()
    assert groups.of("gmail.com").label == groups.of("googlemail.com").label == "Gmail"
    assert groups.of("hotmail.co.uk").label == groups.of("live.fr").label == "Outlook"
    assert groups.of("bk.ru").label == "Mail.ru"
    one, two = groups.of("example.org"), groups.of("example.net")
    assert one.key != two.key and one.label == "example.org", "a domain in no group is paced on its own"
    assert one.limit == 0


def test_throttling_replies_are_told_from_other_deferrals():
    assert throttled(Reply(421, "4.7.0", "Try again later"))
    assert throttled(Reply(450, "4.7.28", "unusual rate of unsolicited mail"))
    assert throttled(Reply(451, None, "Too many messages from your IP, slow down"))
    assert not throttled(Reply(452, "4.2.2", "Mailbox full"))
    assert not throttled(Reply(451, "4.3.0", "Temporary local problem"))
    assert not throttled(Reply(550, "5.7.1", "Rejected for reputation"))  # a bounce, not a deferral


def test_the_bucket_is_smooth_and_a_slowed_group_recovers(app, env):
    r = redis.Redis.from_url(env["REDIS_URL"])
    pacer = Pacer(r, "relay-a", quiet=0.6, step=0.2)
    # 200/s with a burst of 5: in any 100 ms at most 20 + 5 leave, however hard we ask.
    times = []
    started = time.monotonic()
    while time.monotonic() - started < 1.0:
        grant = pacer.take("g1", 200, 0, 5, 5)
        now = time.monotonic()
        times.extend([now] * grant.granted)
        if not grant.granted:
            assert 0 < grant.wait <= 0.1
            time.sleep(grant.wait)
    assert 180 <= len(times) <= 210, len(times)
    window: deque[float] = deque()
    for t in times:
        window.append(t)
        while window[0] < t - 0.1:
            window.popleft()
        assert len(window) <= 20 + 5
    # A deferral halves the rate once, however many letters come back deferred at once.
    lowered, rate = pacer.slow("g1", 200, 0)
    assert lowered and rate == 100
    assert pacer.slow("g1", 200, 0) == (False, 100)
    assert pacer.slowed("g1") == 100
    # Quiet for the quiet period: it climbs back by steps, then is at its limit again.
    events = []
    deadline = time.monotonic() + 5
    while pacer.slowed("g1") is not None and time.monotonic() < deadline:
        events.append(pacer.take("g1", 200, 0, 1, 1).event)
        time.sleep(0.05)
    assert pacer.slowed("g1") is None and "stepped up" in events and events[-1] == "recovered"
    # A group without a limit slows from what it was being sent and recovers to that.
    assert pacer.slow("d:example.org", 0, 40) == (True, 20)


class ThrottlingHandler(RecordingHandler):
    """Accepts at most `allowed` letters a second for one domain; past that it answers
    421 4.7.0 as a mailbox provider does to a sender arriving too fast."""

    def __init__(self, domain: str, allowed: int):
        super().__init__()
        self.domain, self.allowed = domain, allowed
        self.accepted: deque[float] = deque()
        self.deferred = 0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        if address.endswith("@" + self.domain):
            now = time.time()
            with self.lock:
                while self.accepted and self.accepted[0] < now - 1:
                    self.accepted.popleft()
                if len(self.accepted) >= self.allowed:
                    self.deferred += 1
                    return "421 4.7.0 Try again later: too many messages, slow down"
                self.accepted.append(now)
        return await super().handle_RCPT(server, session, envelope, address, rcpt_options)


def test_a_throttling_domain_slows_down_alone_and_everyone_gets_one_letter(
        ctx, make_issue, smtp, workers, make_user):
    handler = ThrottlingHandler("slow.test", allowed=15)
    smtp.handler = handler
    smtp.stop()
    smtp.start()
    settings.put("pacing_quiet_seconds", 30)
    db.session.commit()
    emails = [f"p{i}@slow.test" for i in range(80)] + [f"p{i}@fast{i % 4}.test" for i in range(320)]
    issue_id = make_issue(400, emails=emails)
    user, _ = make_user("editor")
    workers.start(2, SEND_JOBS="2")
    started = time.time()
    lifecycle.launch(issue_id, user)
    wait_status(issue_id, "sent", 120)
    counts = handler.counts()
    assert len(counts) == 400 and set(counts.values()) == {1}, "everyone exactly once"
    assert handler.deferred > 0
    fast = sorted(t for rcpt, _raw, t in handler.letters if "@fast" in rcpt)
    slow = sorted(t for rcpt, _raw, t in handler.letters if "@slow.test" in rcpt)
    assert slow[-1] - started > 3, "80 letters at 15/s take several seconds"
    assert fast[-1] < slow[-1] - 1, "the other domains were not held up by the slow one"
    # Held to the slow domain's 15 a second, the 320 other letters would take 21 s; the
    # bound is on their rate, not on wall time, so a busy machine does not fail it.
    assert 320 / (fast[-1] - fast[0]) > 2 * handler.allowed, "the other domains were not slowed"
    events = db.session.scalars(sa.select(JournalEvent).where(
        JournalEvent.issue_id == issue_id, JournalEvent.event == "pace_slowed")).all()
    assert events and events[0].details["group"] == "slow.test"
    assert events[0].details["reply"].startswith("421 4.7.0")
    assert issue_row(issue_id).failed_count == 0


def test_a_slowed_domain_shows_on_the_issue_while_it_waits(ctx, make_issue, smtp, workers, make_user):
    handler = ThrottlingHandler("slow.test", allowed=4)
    smtp.handler = handler
    smtp.stop()
    smtp.start()
    issue_id = make_issue(24, emails=[f"q{i}@slow.test" for i in range(24)])
    user, _ = make_user("editor")
    workers.start(1, SEND_JOBS="1")
    lifecycle.launch(issue_id, user)
    wait_for(lambda: (issue_row(issue_id).status_reason or "").startswith("paced: slow.test"), 30,
             what="the row saying what the issue waits for")
    assert "after deferrals" in issue_row(issue_id).status_reason
    wait_status(issue_id, "sent", 120)
    assert len(handler.counts()) == 24
    assert issue_row(issue_id).status_reason is None


def test_a_group_limit_is_a_smooth_rate_at_the_smtp_server(ctx, make_issue, smtp, workers, make_user):
    db.session.add(DomainGroup(name="Paced", domains="paced.test", rate_per_second=80, position=0))
    db.session.commit()
    issue_id = make_issue(240, emails=[f"s{i}@paced.test" for i in range(240)])
    user, _ = make_user("editor")
    workers.start(2, SEND_JOBS="2")
    lifecycle.launch(issue_id, user)
    wait_status(issue_id, "sent", 60)
    times = sorted(t for _r, _raw, t in smtp.handler.letters)
    assert len(times) == 240
    in_flight = 2 * 4  # two runners with four connections each
    window: deque[float] = deque()
    worst = 0
    for t in times:
        window.append(t)
        while window[0] < t - 0.1:
            window.popleft()
        worst = max(worst, len(window))
    assert worst <= 80 / 10 + in_flight, worst
    assert (times[-1] - times[0]) >= 240 / 80 * 0.8, "the limit held"


def test_warm_up_stops_at_the_days_cap_and_continues_the_next_day(ctx, app, make_issue, smtp, workers,
                                                                  make_user):
    app.config["TEST_CLOCK"] = True
    issue_id = make_issue(50)
    sender_id = db.session.get(Issue, issue_id).sender_id
    limits.set_warmup(sender_id, 20, 1.5, clock.now().date(), "admin")
    db.session.commit()
    user, _ = make_user("editor")
    workers.start(1, OUTBOX_TEST_CLOCK="1")
    lifecycle.launch(issue_id, user)
    wait_for(lambda: len(smtp.handler.counts()) == 20, 30, what="the first day's cap")
    wait_for(lambda: (issue_row(issue_id).status_reason or "").startswith("warm-up:"), 10,
             what="the row saying the day's cap is reached")
    time.sleep(2)
    assert len(smtp.handler.counts()) == 20 and issue_row(issue_id).status == "sending"
    clock.advance(86400)
    wait_status(issue_id, "sent", 60)
    counts = smtp.handler.counts()
    assert len(counts) == 50 and set(counts.values()) == {1}, "day 2's cap (30) takes the rest, once each"
    assert limits.daily_cap(limits.warmup_of(sender_id), date.today()) == 20


def test_admins_change_groups_and_warm_up_on_the_pacing_page(ctx, client, login, make_issue):
    from .support import csrf_from

    issue_id = make_issue(1)
    sender_id = db.session.get(Issue, issue_id).sender_id
    login("editor")
    assert client.get("/admin/pacing").status_code == 403
    login("admin")
    page = client.get("/admin/pacing")
    assert page.status_code == 200 and b"Gmail" in page.data and b"googlemail.com" in page.data
    token = csrf_from(page.data)
    gmail_id = db.session.scalar(sa.select(DomainGroup.id).where(DomainGroup.name == "Gmail"))
    assert client.post("/admin/pacing/groups", data={"group_id": gmail_id, "name": "Gmail",
                                                     "domains": "gmail.com"}).status_code == 400, "CSRF"
    bad = client.post("/admin/pacing/groups", data={"csrf_token": token, "group_id": gmail_id, "name": "Gmail",
                                                    "domains": "gmail.com\nbk.ru", "rate": "10"})
    assert bad.status_code == 400 and "bk.ru is already in Mail.ru" in bad.data.decode()
    bad = client.post("/admin/pacing/groups", data={"csrf_token": token, "group_id": gmail_id, "name": "Gmail",
                                                    "domains": "gmail.com", "rate": "-1"})
    assert bad.status_code == 400
    db.session.expire_all()
    assert db.session.get(DomainGroup, gmail_id).rate_per_second == 50, "a refused change changes nothing"
    ok = client.post("/admin/pacing/groups", data={"csrf_token": token, "group_id": gmail_id, "name": "Gmail",
                                                   "domains": "gmail.com\ngooglemail.com\ngmail.test", "rate": "12.5"})
    assert ok.status_code == 302
    db.session.expire_all()
    assert Groups.load().of("gmail.test").limit == 12.5
    added = client.post("/admin/pacing/groups", data={"csrf_token": token, "name": "Proton",
                                                      "domains": "proton.me\npm.me", "rate": "5"})
    assert added.status_code == 302 and Groups.load().of("pm.me").label == "Proton"
    catch_all = db.session.scalar(sa.select(DomainGroup.id).where(DomainGroup.catch_all))
    assert client.post(f"/admin/pacing/groups/{catch_all}/delete", data={"csrf_token": token}).status_code == 302
    assert db.session.get(DomainGroup, catch_all) is not None, "the catch-all stays"
    bad = client.post(f"/admin/pacing/warmup/{sender_id}", data={"csrf_token": token, "start": "0", "factor": "1.5"})
    assert bad.status_code == 400 and limits.warmup_of(sender_id) is None
    three_days_ago = clock.now().date() - timedelta(days=3)
    ok = client.post(f"/admin/pacing/warmup/{sender_id}", data={
        "csrf_token": token, "start": "500", "factor": "1.5", "started_on": three_days_ago.isoformat()})
    assert ok.status_code == 302
    db.session.expire_all()
    warmup = limits.warmup_of(sender_id)
    assert warmup.start == 500 and limits.daily_cap(warmup, clock.now().date()) == 1687  # 500 × 1.5³
    page = client.get("/admin/pacing").data.decode()
    assert "1687" in page
    events = {e.event for e in db.session.scalars(sa.select(JournalEvent))}
    assert {"pacing_changed", "warmup_changed"} <= events
