"""The maintenance loop: runs beside every worker (one at a time across all of them).

It is what makes the engine survive a crash without a human: recipients whose
runner died have expired leases, and an issue still Sending with no live runner
gets a new send job; a Stopping issue whose runner died is finished; an
Accepted issue whose start job was lost is started (or interrupted when late).
"""

from __future__ import annotations

import logging
import threading
import time

import sqlalchemy as sa

from . import job_context

log = logging.getLogger(__name__)
LOCK = "outbox:maintenance:lock"


def tick() -> dict[str, int]:
    """One pass; safe to run anywhere, any number of times."""
    with job_context():
        from mailing import lifecycle, queueing
        from mailing.extensions import db
        from mailing.models import Issue, utcnow
        from mailing.sending.runner import portion
        from mailing.states import IssueStatus as S
        from mailing.store import deliveries

        r = queueing.redis_connection()
        now = utcnow()
        done = {"respawned": 0, "stopped": 0, "started": 0}
        sending = db.session.execute(
            sa.select(Issue.id).where(Issue.status == S.SENDING)).scalars().all()
        for issue_id in sending:
            live = queueing.live_runners(issue_id)
            if live:
                continue
            due = deliveries.due_count(issue_id, now)
            issue = db.session.get(Issue, issue_id, populate_existing=True)
            if due and portion(issue).left == 0:
                due = 0  # a spread issue between portions: nothing to start yet
            db.session.commit()
            if due:
                queueing.enqueue("jobs.sending.send_issue", issue_id)
                # Count as live until the new runner beats, so we do not enqueue twice.
                r.zadd(queueing.runners_key(issue_id), {"maintenance": time.time() + 30})
                done["respawned"] += 1
            elif not deliveries.open_counts(issue_id):
                db.session.commit()
                lifecycle.finish(issue_id)
        for issue_id in db.session.execute(
                sa.select(Issue.id).where(Issue.status == S.STOPPING)).scalars().all():
            if lifecycle.finish_stopping(issue_id) == S.CANCELLED:
                done["stopped"] += 1
        for issue_id in db.session.execute(
                sa.select(Issue.id).where(Issue.status.in_([S.ACCEPTED, S.SCHEDULED]), Issue.send_at < now)).scalars().all():
            if lifecycle.start(issue_id):
                done["started"] += 1
        db.session.commit()
        from flask import current_app

        from mailing.bounces import scan_maildir

        # Late bounces and complaints dropped in Maildirs (one may serve both).
        for name in ("BOUNCES_MAILDIR", "COMPLAINTS_MAILDIR"):
            if current_app.config.get(name):
                done[name.split("_")[0].lower()] = scan_maildir(current_app.config[name])
        return done


def run_forever(parent_pid: int, interval: float = 2.0) -> None:
    """The maintenance process beside a worker: ends when its worker is gone."""
    import os
    import signal

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    def parent_alive() -> None:
        while not stop.is_set():
            if os.getppid() != parent_pid:
                stop.set()
            time.sleep(1)

    threading.Thread(target=parent_alive, daemon=True).start()
    loop(interval, stop)


def loop(interval: float = 2.0, stop: threading.Event | None = None) -> None:
    """Run tick() every `interval` seconds while holding a short Redis lock, so that
    one worker among many does the pass."""
    stop = stop or threading.Event()
    with job_context():
        from mailing import queueing

        r = queueing.redis_connection()
    while not stop.is_set():
        try:
            if r.set(LOCK, "1", nx=True, ex=max(int(interval * 2), 2)):
                tick()
        except Exception:  # keep the loop alive; the next pass tries again
            log.exception("maintenance pass failed")
        stop.wait(interval)
