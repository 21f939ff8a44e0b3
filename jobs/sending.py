"""Jobs that move an issue: start it after the launch delay, send its recipients."""

from __future__ import annotations

from mailing import lifecycle
from mailing.sending.runner import Runner

from . import job_context, shutdown


def start_issue(issue_id: int) -> str:
    """Accepted → Sending (or Interrupted on a late start); a no-op in any other status."""
    with job_context():
        return "started" if lifecycle.start(issue_id) else "not started"


def send_issue(issue_id: int) -> str:
    """Send due recipients until none is left or the issue is halted, or until the worker
    shuts down (then letters in flight finish and the rest waits for the next runner);
    then lifecycle decides what the run means for the issue."""
    with job_context():
        runner = Runner(issue_id)
        with shutdown.on_request(runner.shut_down):
            outcome = runner.run()
        return lifecycle.after_run(issue_id, outcome)
