"""A relay that is unreachable for a moment is waited for (with back-off) instead of
interrupting the issue; one that stays down beyond RELAY_RETRY_WINDOW interrupts it, and
the interrupt shows the error that caused it, not the last success."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from jobs.maintenance import tick
from mailing import lifecycle
from mailing.sending.transport import RelayConfig, RelayUnavailable, SmtpConnection

from .support import deliveries_of, issue_row, journal_of, wait_for, wait_status


def received(smtp) -> int:
    return sum(smtp.handler.counts().values())


class Greeting421:
    """A relay that greets every connection with 421 and hangs up (overloaded, restarting)."""

    def __init__(self, port: int):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(16)
        self.greeted = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.sendall(b"421 4.3.2 Service not available, try later\r\n")
            self.greeted += 1

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        except OSError:
            pass
        self.sock.close()
        self.thread.join(5)
        assert not self.thread.is_alive()


def test_a_blip_is_ridden_out_without_an_interrupt(ctx, client, login, make_issue, make_user, smtp, workers):
    issue_id = make_issue(120)
    smtp.handler.delay = 0.05  # about 1.5 s for the whole issue: the relay goes down mid-send
    user, _ = make_user("editor")
    login("support")
    workers.start(1, RELAY_RETRY_WINDOW="60")
    lifecycle.launch(issue_id, user)
    wait_for(lambda: received(smtp) >= 8, 30, what="sending to begin")
    smtp.stop()  # connections are refused from now on
    down_at = time.monotonic()
    reason = wait_for(lambda: issue_row(issue_id).status_reason, 10, what="the wait to show")
    assert reason.startswith("waiting for the relay: ") and "refused" in reason.lower(), reason
    assert issue_row(issue_id).status == "sending"
    assert b"waiting for the relay" in client.get(f"/issues/{issue_id}/row").data
    time.sleep(max(0.0, 2.0 - (time.monotonic() - down_at)))  # the blip lasts about 2 s
    smtp.start()
    wait_status(issue_id, "sent", 60)
    assert sorted(smtp.handler.counts().values()) == [1] * 120, "nobody twice, nobody skipped"
    assert {d.state for d in deliveries_of(issue_id)} == {"sent"}
    assert [e.event for e in journal_of(issue_id)] == ["launch", "start", "finish"], "no interrupt"
    row = issue_row(issue_id)
    assert row.status_reason is None and row.last_reply.startswith("250")


def test_a_relay_greeting_421_is_waited_out(ctx, make_issue, make_user, smtp, workers):
    smtp.stop()
    busy = Greeting421(smtp.port)
    issue_id = make_issue(10)
    user, _ = make_user("editor")
    workers.start(1, RELAY_RETRY_WINDOW="60")
    lifecycle.launch(issue_id, user)
    reason = wait_for(lambda: issue_row(issue_id).status_reason, 30, what="the wait to show")
    assert "421 4.3.2 Service not available" in reason, reason
    wait_for(lambda: busy.greeted >= 8, 10, what="reconnection attempts")
    busy.close()
    smtp.start()
    wait_status(issue_id, "sent", 60)
    assert sorted(smtp.handler.counts().values()) == [1] * 10
    assert [e.event for e in journal_of(issue_id)] == ["launch", "start", "finish"]


def test_a_relay_down_beyond_the_window_interrupts_with_the_error(ctx, client, login, make_issue,
                                                                   make_user, smtp, workers):
    issue_id = make_issue(120)
    smtp.handler.delay = 0.05  # about 1.5 s for the whole issue: the relay goes down mid-send
    user, _ = make_user("editor")
    login("support")
    workers.start(1, RELAY_RETRY_WINDOW="2")
    lifecycle.launch(issue_id, user)
    wait_for(lambda: received(smtp) >= 8, 30, what="sending to begin")
    wait_for(lambda: (issue_row(issue_id).last_reply or "").startswith("250"), 10, what="a success recorded")
    smtp.stop()
    down_at = time.monotonic()
    wait_status(issue_id, "interrupted", 30)
    waited = time.monotonic() - down_at
    assert 2.0 <= waited < 10, f"interrupted after {waited:.1f} s, the window is 2 s"
    row = issue_row(issue_id)
    assert row.status_reason.startswith("relay unreachable: ") and "refused" in row.status_reason.lower()
    assert not row.last_reply.startswith("250") and "refused" in row.last_reply.lower(), row.last_reply
    [event] = [e for e in journal_of(issue_id) if e.event == "interrupt"]
    assert event.details["last_reply"] == row.last_reply
    page = client.get(f"/issues/{issue_id}").data.decode()
    assert "Last server response:" in page and "Ok: queued" not in page.split("Last server response:")[1][:300]
    assert row.last_reply in page.split("Last server response:")[1][:600], "the error that interrupted it"
    assert {d.state for d in deliveries_of(issue_id)} <= {"sent", "pending"}, "nothing left half-sent"

    # The relay is back, but resuming stays a person's decision.
    smtp.start()
    tick()
    assert issue_row(issue_id).status == "interrupted"
    lifecycle.resume(issue_id, user)
    wait_status(issue_id, "sent", 60)
    assert sorted(smtp.handler.counts().values()) == [1] * 120


def test_a_421_greeting_is_reported_as_the_relay_said_it(smtp):
    smtp.stop()
    busy = Greeting421(smtp.port)
    try:
        with pytest.raises(RelayUnavailable, match=r"127\.0\.0\.1:\d+: 421 4\.3\.2 Service not available"):
            SmtpConnection(RelayConfig("127.0.0.1", smtp.port, timeout=5)).open()
    finally:
        busy.close()
