"""The SMTP session state machine against real servers over sockets: aiosmtpd with and
without PIPELINING, and postfix's smtp-sink (a C server that pipelines)."""

import selectors
import shutil
import subprocess
import time

import pytest

from mailing.sending.transport import (
    RelayConfig,
    RelayUnavailable,
    Reply,
    SmtpConnection,
    SmtpSession,
    dot_stuff,
)

from .support import free_port

LETTER = b"From: a@outbox.test\r\nSubject: hi\r\n\r\nline one\r\n.starts with a dot\r\n..two dots\r\n"


def drive(sessions, timeout=10.0):
    """Run sessions until each finished one transaction; their final replies in order."""
    replies = {}
    with selectors.DefaultSelector() as sel:
        for s in sessions:
            sel.register(s.sock, s.events(), s)
        deadline = time.monotonic() + timeout
        while len(replies) < len(sessions):
            assert time.monotonic() < deadline, "the relay did not answer"
            for key, mask in sel.select(0.5):
                s = key.data
                if mask & selectors.EVENT_WRITE:
                    s.on_writable()
                reply = s.on_readable() if mask & selectors.EVENT_READ else None
                if reply is not None:
                    replies[id(s)] = reply
                    sel.unregister(s.sock)
                else:
                    sel.modify(s.sock, s.events(), s)
    return [replies[id(s)] for s in sessions]


def send_rounds(port, connections, rounds):
    """`rounds` letters on each of `connections` sessions driven together; the sessions."""
    sessions = [open_session(port)[1] for _ in range(connections)]
    for round_ in range(rounds):
        for i, s in enumerate(sessions):
            s.begin("news@outbox.test", f"r{round_}-{i}@example.org", LETTER)
        assert all(r.code == 250 for r in drive(sessions))
    for s in sessions:
        s.close()
    return sessions


def open_session(port, timeout=5.0):
    conn = SmtpConnection(RelayConfig("127.0.0.1", port, timeout=timeout))
    conn.open()
    return conn, SmtpSession(conn)


@pytest.mark.parametrize("pipelining", [True, False])
def test_refusal_then_the_next_letter_on_the_same_connection(smtp, pipelining):
    smtp.handler.pipelining = pipelining
    smtp.handler.scripted["gone@example.org"] = ["550 5.1.1 No such user"]
    smtp.handler.scripted["busy@example.org"] = ["451 4.3.0 Try later"]
    conn, session = open_session(smtp.port)
    assert session.pipelining is pipelining
    out = []
    for rcpt in ["a@example.org", "gone@example.org", "busy@example.org", "b@example.org"]:
        session.begin("news@outbox.test", rcpt, LETTER)
        out.append(drive([session])[0])
        assert not session.busy and not session.dead
    assert [(r.code, r.enhanced) for r in out] == [(250, "2.0.0"), (550, "5.1.1"), (451, "4.3.0"), (250, "2.0.0")]
    assert out[1].text == "No such user"
    session.close()
    got = {rcpt: body for rcpt, body, _ in smtp.handler.letters}
    assert set(got) == {"a@example.org", "b@example.org"}, "RSET after a refusal keeps the next letter clean"
    assert got["a@example.org"].replace(b"\r\n", b"\n") == LETTER.replace(b"\r\n", b"\n"), "dots survive"


def test_many_sessions_in_one_thread_each_letter_once(smtp):
    send_rounds(smtp.port, 4, 5)
    assert sorted(smtp.handler.counts().values()) == [1] * 20


def test_a_large_letter_is_written_in_pieces_and_arrives_whole(smtp):
    big = b"Subject: big\r\n\r\n" + b"".join(b"%07d " % i + b"x" * 90 + b"\r\n" for i in range(60_000))
    conn = SmtpConnection(RelayConfig("127.0.0.1", smtp.port, timeout=10))
    reply = conn.send("news@outbox.test", "big@example.org", big)
    conn.close()
    assert reply.code == 250
    (rcpt, body, _), = smtp.handler.letters
    assert len(big) > 5_000_000 and body.replace(b"\r\n", b"\n") == big.replace(b"\r\n", b"\n")


def test_421_closes_the_connection_and_a_new_one_works(smtp):
    smtp.handler.scripted["closing@example.org"] = ["421 4.3.2 Shutting down"]
    conn, session = open_session(smtp.port)
    session.begin("news@outbox.test", "closing@example.org", LETTER)
    reply = drive([session])[0]
    assert reply.code == 421 and session.dead
    session.close()
    assert conn.smtp is None
    assert conn.send("news@outbox.test", "next@example.org", LETTER).code == 250


def test_a_silent_relay_times_out_as_a_temporary_failure(smtp):
    smtp.handler.delay = 3.0
    conn = SmtpConnection(RelayConfig("127.0.0.1", smtp.port, timeout=0.5))
    started = time.monotonic()
    reply = conn.send("news@outbox.test", "slow@example.org", LETTER)
    assert reply.code == 451 and reply.kind == "temporary" and "timeout" in reply.text
    assert time.monotonic() - started < 2.5
    assert conn.smtp is None, "the connection is dropped, not reused mid-transaction"


def test_a_lost_connection_raises_relay_unavailable(smtp):
    conn, session = open_session(smtp.port)
    smtp.stop()
    with pytest.raises(RelayUnavailable):
        session.begin("news@outbox.test", "a@example.org", LETTER)
        drive([session], timeout=5)
    assert session.dead


def test_multi_line_replies_are_read_whole(smtp):
    conn, session = open_session(smtp.port)
    session.inbuf += b"250-first line\r\n250-second\r\n250 2.0.0 last\r\n354 go"
    session.expect = 1
    session._take_replies()
    assert session.replies == [Reply(250, None, "first line second 2.0.0 last")]
    assert bytes(session.inbuf) == b"354 go", "an incomplete reply waits for the rest"
    session.close()


def test_dot_stuffing():
    assert dot_stuff(b".a\r\nb\r\n.c") == b"..a\r\nb\r\n..c\r\n"


@pytest.fixture
def smtp_sink():
    binary = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
    if not shutil.which(binary):
        pytest.fail("smtp-sink is missing: `make install` installs Debian's postfix package for it")
    port = free_port()
    user = ["-u", "nobody"]
    proc = subprocess.Popen([binary, "-c", *user, f"127.0.0.1:{port}", "64"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 5
    while True:
        try:
            SmtpConnection(RelayConfig("127.0.0.1", port)).open()
            break
        except RelayUnavailable:
            assert time.monotonic() < deadline, "smtp-sink did not start"
            time.sleep(0.05)
    yield port, proc
    proc.terminate()
    proc.wait(5)


def test_pipelined_sessions_against_smtp_sink(smtp_sink):
    port, proc = smtp_sink
    sessions = send_rounds(port, 3, 30)
    assert all(s.pipelining for s in sessions), "smtp-sink offers PIPELINING"
    proc.terminate()
    out = proc.stdout.read()
    assert b"mesg=90" in out, "smtp-sink counted every letter"
