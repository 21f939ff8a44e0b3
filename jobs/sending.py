"""Jobs that move an issue: start it after the launch delay, send its recipients."""

from __future__ import annotations

from . import job_context, shutdown


def start_issue(issue_id: int) -> str:
    """Accepted → Sending (or Interrupted on a late start); a no-op in any other status."""
    with job_context():
        from mailing import lifecycle

        return "started" if lifecycle.start(issue_id) else "not started"


def send_issue(issue_id: int) -> str:
    """Send due recipients until none is left or the issue is halted, or until the worker
    shuts down (then letters in flight finish and the rest waits for the next runner)."""
    with job_context():
        from mailing.engine import Runner

        runner = Runner(issue_id)
        with shutdown.on_request(runner.shut_down):
            return runner.run()
