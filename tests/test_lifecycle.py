"""The whole lifecycle against a real worker and SMTP server: pause, resume, send whole,
cancel, interrupt, launch delay, schedule, spread, races."""

import threading
import time
from datetime import timedelta

import pytest

from mailing import clock, lifecycle, settings
from mailing.extensions import db
from mailing.models import utcnow

from .support import deliveries_of, issue_row, journal_of, wait_for, wait_status


def sent_count(smtp) -> int:
    return sum(smtp.handler.counts().values())


def assert_everyone_once(smtp, issue_id):
    counts = smtp.handler.counts()
    rows = deliveries_of(issue_id)
    assert set(counts.values()) <= {1}, "nobody gets the letter twice"
    assert set(counts) == {d.email for d in rows if d.state == "sent"}
    return rows


def test_pause_stops_within_the_concurrency_and_resume_completes(ctx, api_client, make_issue, smtp, workers):
    issue_id = make_issue(400)
    smtp.handler.delay = 0.01
    api = api_client("editor")
    workers.start(1)
    assert api.post(f"/issues/{issue_id}/launch", json={"mode": "now"}).status_code == 202
    wait_for(lambda: sent_count(smtp) >= 60, 60, what="sending to begin")
    r = api.post(f"/issues/{issue_id}/pause")
    acked = time.time()
    assert r.status_code == 200 and r.json["status"] == "paused"
    time.sleep(1.5)
    after = [t for _r, _raw, t in smtp.handler.letters if t > acked]
    assert len(after) <= 4, f"{len(after)} letters left after the pause was acknowledged"
    frozen = sent_count(smtp)
    time.sleep(1.0)
    assert sent_count(smtp) == frozen, "nothing leaves while paused"
    wait_for(lambda: not any(d.state == "sending" for d in deliveries_of(issue_id)), 20,
             what="claims released")
    assert issue_row(issue_id).sent_count == frozen
    pause_event = [e for e in journal_of(issue_id) if e.event == "pause"][0]
    assert "done_at_click" in pause_event.details
    settled = wait_for(lambda: [e for e in journal_of(issue_id) if e.event == "pause_settled"], 20,
                       what="the journal to say what left after the click")
    assert settled[-1].details["left_after_click"] <= 4

    assert api.post(f"/issues/{issue_id}/resume").json["status"] == "sending"
    wait_status(issue_id, "sent", 90)
    rows = assert_everyone_once(smtp, issue_id)
    assert len(smtp.handler.counts()) == 400 and {d.state for d in rows} == {"sent"}


def test_cancel_marks_the_rest_stopped_manually(ctx, api_client, make_issue, smtp, workers):
    issue_id = make_issue(300)
    smtp.handler.delay = 0.01
    api = api_client("editor")
    workers.start(1)
    api.post(f"/issues/{issue_id}/launch", json={"mode": "now"})
    wait_for(lambda: sent_count(smtp) >= 40, 60, what="sending to begin")
    r = api.post(f"/issues/{issue_id}/cancel")
    acked = time.time()
    assert r.status_code == 200 and r.json["status"] in ("stopping", "cancelled")
    wait_status(issue_id, "cancelled", 30)
    assert len([t for _r, _raw, t in smtp.handler.letters if t > acked]) <= 4
    rows = assert_everyone_once(smtp, issue_id)
    states = {d.state for d in rows}
    assert states == {"sent", "stopped_manually"}
    issue = issue_row(issue_id)
    assert issue.sent_count + issue.stopped_count == 300
    assert issue.stopped_count == sum(d.state == "stopped_manually" for d in rows)
    assert all(d.reason == "stopped_manually" for d in rows if d.state == "stopped_manually")
    assert [e.event for e in journal_of(issue_id)][-2:] == ["cancel", "stopped"]
    r = api.post(f"/issues/{issue_id}/resume")
    assert r.status_code == 409 and r.json["message"] == "a cancelled issue cannot be resumed"


def test_relay_lost_mid_send_interrupts_and_resume_skips_nobody(ctx, api_client, make_issue, smtp, workers):
    issue_id = make_issue(300)
    smtp.handler.delay = 0.01
    api = api_client("editor")
    workers.start(1)
    api.post(f"/issues/{issue_id}/launch", json={"mode": "now"})
    wait_for(lambda: sent_count(smtp) >= 50, 60, what="sending to begin")
    smtp.stop()
    wait_status(issue_id, "interrupted", 60)
    issue = issue_row(issue_id)
    assert "relay unreachable" in issue.status_reason
    assert api.get(f"/issues/{issue_id}").json["status_reason"] == issue.status_reason
    smtp.start()
    assert api.post(f"/issues/{issue_id}/resume").status_code == 200
    wait_status(issue_id, "sent", 90)
    rows = assert_everyone_once(smtp, issue_id)
    assert len(smtp.handler.counts()) == 300 and {d.state for d in rows} == {"sent"}


def test_pause_inside_the_launch_delay_sends_nothing(ctx, api_client, make_issue, smtp, workers, client, login):
    settings.put("launch_delay_seconds", 3)
    db.session.commit()
    issue_id = make_issue(50)
    api = api_client("editor")
    workers.start(1)
    api.post(f"/issues/{issue_id}/launch", json={"mode": "now"})
    assert issue_row(issue_id).status == "accepted"
    login("support")
    assert b"starts in" in client.get(f"/issues/{issue_id}/row").data
    assert api.post(f"/issues/{issue_id}/pause").json["status"] == "paused"
    time.sleep(4.5)
    assert sent_count(smtp) == 0 and issue_row(issue_id).status == "paused"
    api.post(f"/issues/{issue_id}/resume")
    wait_status(issue_id, "sent", 60)
    assert len(smtp.handler.counts()) == 50


def test_scheduled_issue_starts_on_time_and_locks_editing(ctx, api_client, make_issue, smtp, workers, client, login):
    issue_id = make_issue(20)
    api = api_client("editor")
    workers.start(1)
    at = (utcnow() + timedelta(seconds=3)).isoformat() + "Z"
    r = api.post(f"/issues/{issue_id}/launch", json={"mode": "at", "send_at": at})
    assert r.status_code == 202 and r.json["status"] == "scheduled"
    login("editor")
    page = client.get(f"/issues/{issue_id}/edit")
    assert b"locked" in page.data, "inside the edit lock the editor says why"
    assert client.post(f"/issues/{issue_id}/edit", data={}).status_code in (400, 409)
    wait_status(issue_id, "sent", 60)
    assert len(smtp.handler.counts()) == 20
    assert [e.event for e in journal_of(issue_id)] == ["schedule", "send_now", "start", "finish"]


def test_postponed_issue_waits_for_send_now(ctx, api_client, make_issue, smtp, workers):
    issue_id = make_issue(5)
    api = api_client("editor")
    workers.start(1)
    assert api.post(f"/issues/{issue_id}/launch", json={"mode": "postpone"}).json["status"] == "scheduled"
    time.sleep(1)
    assert issue_row(issue_id).status == "scheduled" and sent_count(smtp) == 0
    api.post(f"/issues/{issue_id}/send-now")
    wait_status(issue_id, "sent", 60)


def test_late_start_is_interrupted_not_silent(ctx, make_issue, smtp, make_user):
    settings.put("late_start_grace_seconds", 5)
    db.session.commit()
    issue_id = make_issue(5)
    user, _ = make_user("editor")
    lifecycle.launch(issue_id, user, postpone=True)
    # The scheduler was down: the start comes a minute after send_at.
    import sqlalchemy as sa

    from mailing.models import Issue

    db.session.execute(sa.update(Issue).where(Issue.id == issue_id).values(send_at=utcnow() - timedelta(minutes=1)))
    db.session.commit()
    assert lifecycle.start(issue_id) is False
    row = issue_row(issue_id)
    assert (row.status, row.status_reason) == ("interrupted", "late start")
    assert row.total == 5, "the audience was formed, so Resume can send it"


def test_bad_launch_input_changes_nothing(ctx, api_client, make_issue):
    issue_id = make_issue(5)
    api = api_client("editor")
    r = api.post(f"/issues/{issue_id}/launch", json={"mode": "at", "send_at": "tomorrow"})
    assert r.status_code == 400 and r.json["error"] == "send_at"
    past = (utcnow() - timedelta(hours=1)).isoformat()
    r = api.post(f"/issues/{issue_id}/launch", json={"mode": "at", "send_at": past})
    assert r.status_code == 400 and "past" in r.json["message"]
    assert api.post(f"/issues/{issue_id}/launch", json={"mode": "soon"}).status_code == 400
    assert api.post("/issues/9999/launch", json={}).status_code == 404
    assert issue_row(issue_id).status == "draft" and journal_of(issue_id) == []


@pytest.mark.parametrize("n_threads", [20])
def test_racing_actions_keep_one_sequential_history(ctx, api_client, make_issue, smtp, workers, n_threads):
    issue_id = make_issue(300)
    smtp.handler.delay = 0.01
    api = api_client("editor")
    workers.start(1)
    api.post(f"/issues/{issue_id}/launch", json={"mode": "now"})
    wait_status(issue_id, "sending", 30)
    actions = ["pause", "cancel", "send-whole", "resume"]
    results: list[int] = []
    barrier = threading.Barrier(n_threads)
    app = ctx

    def hit(i):
        with app.app_context():
            barrier.wait()
            r = api.post(f"/issues/{issue_id}/{actions[i % 4]}")
            results.append(r.status_code)
            db.session.remove()

    threads = [threading.Thread(target=hit, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(results) <= {200, 409} and 200 in results
    final = wait_status(issue_id, {"paused", "cancelled", "sent"}, 90)
    wait_for(lambda: not any(d.state == "sending" for d in deliveries_of(issue_id)), 30,
             what="no delivery left sending")
    events = [e for e in journal_of(issue_id) if e.from_status is not None]
    for prev, nxt in zip(events, events[1:], strict=False):
        assert prev.to_status == nxt.from_status, "the journal is one sequential history"
    assert events[-1].to_status == issue_row(issue_id).status == final
    user_events = [e for e in events if e.event in ("pause", "cancel", "send_whole", "resume")]
    assert len(user_events) == results.count(200), "one journal event per transition that happened"
    assert_everyone_once(smtp, issue_id)


def test_spread_portions_follow_the_clock(ctx, api_client, make_issue, smtp, workers, monkeypatch, app):
    app.config["TEST_CLOCK"] = True
    issue_id = make_issue(50)
    from mailing.models import Issue

    issue = db.session.get(Issue, issue_id)
    issue.spread_size, issue.spread_interval = 10, 600
    db.session.commit()
    api = api_client("editor")
    workers.start(1, OUTBOX_TEST_CLOCK="1")
    api.post(f"/issues/{issue_id}/launch", json={"mode": "now"})
    wait_for(lambda: sent_count(smtp) == 10, 30, what="the first portion")
    time.sleep(3)
    assert sent_count(smtp) == 10, "the second portion waits for its time"
    assert api.get(f"/issues/{issue_id}").json["spread"]["next_portion_at"]
    clock.advance(600)
    wait_for(lambda: sent_count(smtp) == 20, 30, what="the second portion")
    # Paused across two portion times: on resume both leave at once.
    api.post(f"/issues/{issue_id}/pause")
    clock.advance(1200)
    time.sleep(3)
    assert sent_count(smtp) == 20
    api.post(f"/issues/{issue_id}/resume")
    wait_for(lambda: sent_count(smtp) == 40, 30, what="the accumulated portions")
    time.sleep(3)
    assert sent_count(smtp) == 40
    # Send whole releases the rest now, ignoring the spread.
    assert api.post(f"/issues/{issue_id}/send-whole").json["spread"]["released"] is True
    wait_status(issue_id, "sent", 30)
    assert len(smtp.handler.counts()) == 50
    assert_everyone_once(smtp, issue_id)
