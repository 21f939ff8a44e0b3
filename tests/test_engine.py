"""The sending engine under crash, many workers and a relay rate cap (correctness; the
speed targets live in `flask bench`)."""

import email
import email.policy
import time
from collections import Counter

from mailing import lifecycle, settings
from mailing.extensions import db

from .support import deliveries_of, issue_row, wait_for, wait_status


def message_ids(smtp) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for rcpt, raw, _t in smtp.handler.letters:
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        out.setdefault(rcpt, []).append(msg["Message-ID"])
    return out


def test_worker_killed_mid_send_loses_nobody(ctx, make_issue, smtp, workers, make_user):
    issue_id = make_issue(600)
    smtp.handler.delay = 0.01
    user, _ = make_user("editor")
    [victim] = workers.start(1, SEND_JOBS="1")
    lifecycle.launch(issue_id, user)
    wait_for(lambda: sum(smtp.handler.counts().values()) >= 100, 60, what="sending to begin")
    in_flight = sum(d.state == "sending" for d in deliveries_of(issue_id))
    workers.kill(victim)
    killed_at = time.time()
    received_at_kill = sum(smtp.handler.counts().values())
    workers.start(1, SEND_JOBS="1")
    wait_for(lambda: sum(smtp.handler.counts().values()) > received_at_kill + 5, 60,
             what="sending again after the crash")
    recovery = time.time() - killed_at
    wait_status(issue_id, "sent", 120)
    counts = smtp.handler.counts()
    rows = deliveries_of(issue_id)
    assert len(counts) == 600 and {d.state for d in rows} == {"sent"}, "nobody is lost"
    duplicates = sum(n - 1 for n in counts.values())
    assert duplicates <= in_flight, (duplicates, in_flight)
    for rcpt, ids in message_ids(smtp).items():
        assert len(set(ids)) == 1, f"a repeat to {rcpt} carries the same Message-ID"
    assert recovery < 60
    assert issue_row(issue_id).sent_count == 600


def test_four_workers_on_one_issue_send_nobody_twice(ctx, make_issue, smtp, workers, make_user):
    issue_id = make_issue(2000)
    user, _ = make_user("editor")
    workers.start(4, SEND_JOBS="4")
    lifecycle.launch(issue_id, user)
    wait_status(issue_id, "sent", 180)
    counts = smtp.handler.counts()
    assert len(counts) == 2000 and set(counts.values()) == {1}
    owners = {d.lease_owner for d in deliveries_of(issue_id)}
    assert owners == {None}, "every lease released"
    issue = issue_row(issue_id)
    assert issue.sent_count == 2000 and issue.total == 2000


def test_relay_rate_cap_is_shared_and_changes_while_sending(ctx, make_issue, smtp, workers, make_user):
    settings.put("relay_rate_per_second", 25)
    db.session.commit()
    issue_id = make_issue(150)
    user, _ = make_user("editor")
    workers.start(2, SEND_JOBS="2")
    lifecycle.launch(issue_id, user)
    wait_for(lambda: sum(smtp.handler.counts().values()) >= 60, 60, what="capped sending")
    per_second = Counter(int(t) for _r, _raw, t in smtp.handler.letters)
    assert max(per_second.values()) <= 25 + 4, per_second  # + the messages already in flight
    settings.put("relay_rate_per_second", 0)
    db.session.commit()
    wait_status(issue_id, "sent", 60)
    assert len(smtp.handler.counts()) == 150


def test_a_claim_that_skips_the_expired_lease_probe_still_finds_a_dead_runners_rows(ctx, make_issue, make_user):
    """Runners look for expired leases only every lease/4 seconds; a claim that does not look
    takes what is pending, and when nothing else is due it looks all the same, so a dead
    runner's recipients are never left behind by a runner that thinks the issue is drained."""
    from datetime import datetime

    import sqlalchemy as sa

    from mailing.models import Delivery
    from mailing.store import deliveries

    issue_id = make_issue(5)
    lifecycle.launch(issue_id, make_user("editor")[0])
    dead = deliveries.claim(issue_id, "dead-runner", 2, 30)
    db.session.execute(sa.update(Delivery).where(Delivery.lease_owner == "dead-runner")
                       .values(lease_until=datetime(2000, 1, 1)))  # its lease ran out long ago
    db.session.commit()
    first = deliveries.claim(issue_id, "live-runner", 10, 30, reclaim=False)
    assert sorted(r.id for r in first) == sorted(set(r.id for r in deliveries_of(issue_id)) - {d.id for d in dead})
    assert not any(r.reclaimed for r in first), "the probe was skipped: only pending rows"
    db.session.commit()
    then = deliveries.claim(issue_id, "live-runner", 10, 30, reclaim=False)
    assert sorted(r.id for r in then) == sorted(d.id for d in dead) and all(r.reclaimed for r in then)
    db.session.commit()
