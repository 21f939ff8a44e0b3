"""`flask stack` (what `make run` starts) supervises its processes: a worker that dies is
started again while the web server and the other workers keep serving, and Ctrl-C lets
the letters in flight finish before the workers stop, leaving nothing half-sent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import psutil
import pytest
import redis
from rq import Worker

from mailing import lifecycle
from mailing.devtools.launcher import alive, signal_tree, stop_tree

from .support import ROOT, deliveries_of, free_port, issue_row, journal_of, wait_for, wait_status


def _children(pid: int) -> list[psutil.Process]:
    """The processes `pid` started itself, still running."""
    try:
        return [c for c in psutil.Process(pid).children() if alive(c)]
    except psutil.NoSuchProcess:
        return []


def _is_worker(proc: psutil.Process) -> bool:
    try:
        return proc.cmdline()[-1:] == ["worker"]
    except psutil.NoSuchProcess:
        return False


class RunningStack:
    """`flask stack` as a subprocess, on the test's database, Redis and SMTP server."""

    def __init__(self, env: dict[str, str], tmp_path: Path, workers: int):
        self.port = free_port()
        self.workers = workers
        self.err_path = tmp_path / "stack.err"
        self.out = open(tmp_path / "stack.out", "wb")  # noqa: SIM115 (closed in stop)
        self.err = open(self.err_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "flask", "stack", "--port", str(self.port), "--workers", str(workers)],
            cwd=ROOT, env=dict(os.environ, **env, FLASK_APP="app.py", WEB_PROCESSES="1"),
            stdout=self.out, stderr=self.err, start_new_session=True)

    def web_answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/login", timeout=5) as r:
                return r.status == 200
        except OSError:
            return False

    def worker_pids(self) -> list[int]:
        return sorted(p.pid for p in _children(self.proc.pid) if _is_worker(p))

    def wait_ready(self) -> None:
        wait_for(lambda: self.proc.poll() is None and self.web_answers()
                 and len(self.worker_pids()) == self.workers, 60, 0.2, "the stack to serve")

    def log(self) -> str:
        return self.err_path.read_text(errors="replace")

    def interrupt(self, timeout: float = 45) -> int:
        """Ctrl-C, as a terminal sends it to the launcher; the exit code."""
        os.kill(self.proc.pid, signal.SIGINT)
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.interrupt()
            except subprocess.TimeoutExpired:
                signal_tree(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.out.close()
        self.err.close()


@pytest.fixture
def stack(env, tmp_path):
    started: list[RunningStack] = []

    def start(workers: int = 2) -> RunningStack:
        s = RunningStack(env, tmp_path, workers)
        started.append(s)
        s.wait_ready()
        return s

    yield start
    for s in started:
        s.stop()


def test_a_killed_worker_is_restarted_while_the_web_keeps_serving(env, stack):
    s = stack(2)
    victim, survivor = s.worker_pids()
    os.kill(victim, signal.SIGKILL)
    seen: list[bool] = []

    def replaced() -> bool:
        seen.append(s.web_answers())  # asked all along: the dashboard never goes away
        pids = s.worker_pids()
        return len(pids) == 2 and victim not in pids

    wait_for(replaced, 10, 0.2, "a new worker in place of the killed one")
    assert all(seen) and s.proc.poll() is None
    [new] = [p for p in s.worker_pids() if p != survivor]
    assert survivor in s.worker_pids(), "the other worker was left alone"
    log = s.log()
    assert "exited with -9 (SIGKILL); restarting in 1 s" in log, log
    assert f"restarted (pid {new})" in log, log
    assert "stopping everything" not in log
    # The new worker is a working RQ worker: it registers itself in Redis.
    conn = redis.Redis.from_url(env["REDIS_URL"])
    wait_for(lambda: new in {w.pid for w in Worker.all(connection=conn)}, 15, 0.2,
             "the restarted worker to register with RQ")


def test_ctrl_c_lets_letters_in_flight_finish_and_loses_nobody(ctx, env, stack, smtp, make_issue,
                                                                 make_user, workers):
    entered: list[str] = []
    relay = smtp.handler
    deliver = relay.handle_DATA

    async def handle_data(server, session, envelope):  # the relay takes a second per letter
        entered.extend(envelope.rcpt_tos)
        return await deliver(server, session, envelope)

    relay.handle_DATA = handle_data
    relay.delay = 1.0
    issue_id = make_issue(12)
    user, _ = make_user("editor")
    s = stack(1)
    lifecycle.launch(issue_id, user)
    wait_for(lambda: len(entered) >= 2, 30, what="letters in flight")
    in_flight = set(entered)
    assert s.interrupt() == 0
    rows = deliveries_of(issue_id)
    states = {d.email: d.state for d in rows}
    assert "sending" not in states.values(), "no recipient is left half-sent"
    assert all(states[r] == "sent" for r in in_flight), "the letters in flight were finished and recorded"
    assert {r for r, st in states.items() if st == "sent"} == set(relay.counts())
    assert set(states.values()) <= {"sent", "pending"}
    assert "pending" in states.values(), "the worker stopped instead of sending the whole issue"
    assert issue_row(issue_id).status == "sending", "a stop is not an interrupt"

    # The next start carries on: the maintenance loop finds the issue without a runner.
    relay.delay = 0
    workers.start(1)
    wait_status(issue_id, "sent", 60)
    assert sorted(relay.counts().values()) == [1] * 12, "nobody gets it twice, nobody is skipped"
    assert [e.event for e in journal_of(issue_id)] == ["launch", "start", "finish"]


def test_a_killed_maintenance_process_is_restarted_by_its_worker(env, tmp_path):
    log = tmp_path / "worker.err"
    with open(log, "wb") as err:
        worker = subprocess.Popen([sys.executable, "-m", "flask", "worker"], cwd=ROOT,
                                  env=dict(os.environ, **env, FLASK_APP="app.py"), stderr=err,
                                  start_new_session=True)
    conn = redis.Redis.from_url(env["REDIS_URL"])
    try:
        wait_for(lambda: worker.pid in {w.pid for w in Worker.all(connection=conn)}, 30, 0.1, "the worker")
        maintenance = min(p.pid for p in _children(worker.pid))  # forked first, before RQ's scheduler
        os.kill(maintenance, signal.SIGKILL)
        line = wait_for(lambda: next((x for x in log.read_text().splitlines()
                                      if x.startswith("outbox-maintenance restarted (pid ")), None),
                        15, 0.1, "the restart line")
        assert f"outbox-maintenance (pid {maintenance}) exited with -9 (SIGKILL)" in log.read_text()
        new = int(line.split("pid ")[1].rstrip(")"))
        assert new in {p.pid for p in _children(worker.pid)} and worker.poll() is None
        # It does its work: the maintenance lock is taken again.
        conn.delete("outbox:maintenance:lock")
        wait_for(lambda: conn.exists("outbox:maintenance:lock"), 15, 0.1, "a maintenance pass")
    finally:
        stop_tree(worker, 10)
