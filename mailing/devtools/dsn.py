"""Reports as real servers send them, for the tests and `flask bench bounces`: RFC 3464
delivery reports in Postfix's, Gmail's and Exim's shapes, a non-standard plain-text bounce
(older Exim and qmail), an RFC 5965 complaint, and garbage."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime

SHAPES = ("postfix", "gmail", "exim", "qmail")


def _date() -> str:
    return format_datetime(datetime.now(UTC))


def _original(message_id: str, rcpt: str) -> str:
    return (f"From: Outbox News <news@outbox.example>\r\nTo: {rcpt}\r\nSubject: Monthly news\r\n"
            f"Message-ID: {message_id}\r\nDate: {_date()}\r\n")


def dsn(shape: str, *, rcpt: str, message_id: str, to: str = "news@outbox.example", hard: bool = True,
        n: int = 0) -> bytes:
    """One bounce of `shape` for the letter `message_id` to `rcpt`, sent back to `to` (the
    envelope sender: a VERP address or the sender's own). `n` makes each one unique."""
    status, code = ("5.1.1", "550") if hard else ("4.2.2", "452")
    text = "User unknown" if hard else "Mailbox full"
    if shape == "qmail":  # plain text, no report part: only a detector can read it
        body = (f"Hi. This is the qmail-send program at mx{n}.example.org.\r\n"
                "I'm afraid I wasn't able to deliver your message to the following addresses.\r\n"
                "This is a permanent error; I've given up. Sorry it didn't work out.\r\n\r\n"
                f"<{rcpt}>:\r\nRemote host said: {code} {status} {text}\r\n\r\n"
                "--- Below this line is a copy of the message.\r\n\r\n" + _original(message_id, rcpt) + "\r\nhello\r\n")
        if not hard:
            body = body.replace("This is a permanent error; I've given up. Sorry it didn't work out.",
                                "This is a temporary error; I will keep trying.")
        return (f"From: MAILER-DAEMON@mx{n}.example.org\r\nTo: {to}\r\nSubject: failure notice\r\n"
                f"Date: {_date()}\r\nMessage-ID: <qmail.{n}@mx.example.org>\r\n\r\n{body}").encode()
    mta, human, reporting = {
        "postfix": ("Postfix", "This is the mail system at host mx.example.org.\r\n\r\nI'm sorry to have to "
                    "inform you that your message could not be delivered.", "dns; mx.example.org"),
        "gmail": ("Gmail", "** Address not found **\r\n\r\nYour message wasn't delivered to "
                  f"{rcpt} because the address couldn't be found.", "dns; googlemail.com"),
        "exim": ("Exim", "This message was created automatically by mail delivery software.\r\n\r\n"
                 "A message that you sent could not be delivered to one or more of its recipients.",
                 "dns; mail.example.net"),
    }[shape]
    boundary = f"=_{shape}_{n}"
    action = "failed" if hard else "delayed"
    headers_part = ("Content-Type: text/rfc822-headers\r\n\r\n" + _original(message_id, rcpt)) if shape == "gmail" \
        else ("Content-Type: message/rfc822\r\n\r\n" + _original(message_id, rcpt) + "\r\nhello\r\n")
    return (
        f"From: Mail Delivery System <MAILER-DAEMON@{shape}.example>\r\nTo: {to}\r\n"
        f"Subject: Undelivered Mail Returned to Sender\r\nDate: {_date()}\r\n"
        f"Message-ID: <{shape}.{n}@example>\r\nMIME-Version: 1.0\r\n"
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"\r\n\r\n'
        f"--{boundary}\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n{human}\r\n\r\n"
        f"--{boundary}\r\nContent-Type: message/delivery-status\r\n\r\n"
        f"Reporting-MTA: {reporting}\r\nX-{mta}-Queue-ID: Q{n}\r\nArrival-Date: {_date()}\r\n\r\n"
        f"Final-Recipient: rfc822; {rcpt}\r\nOriginal-Recipient: rfc822;{rcpt}\r\nAction: {action}\r\n"
        f"Status: {status}\r\nRemote-MTA: dns; mx.example.org\r\n"
        f"Diagnostic-Code: smtp; {code} {status} <{rcpt}>: Recipient address rejected: {text}\r\n\r\n"
        f"--{boundary}\r\n{headers_part}\r\n--{boundary}--\r\n").encode()


def complaint(*, message_id: str, rcpt: str = "", n: int = 0) -> bytes:
    """An ARF report (RFC 5965) about the letter `message_id`."""
    rcpt_line = f"Original-Rcpt-To: {rcpt}\r\n" if rcpt else ""
    return (
        "From: feedback@isp.example\r\nTo: abuse@outbox.example\r\nSubject: FW: spam report\r\n"
        f"Date: {_date()}\r\nMessage-ID: <arf.{n}@isp.example>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=feedback-report; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nThis is an email abuse report.\r\n"
        "--b\r\nContent-Type: message/feedback-report\r\n\r\n"
        f"Feedback-Type: abuse\r\nUser-Agent: isp/1.0\r\nVersion: 1\r\n{rcpt_line}\r\n"
        "--b\r\nContent-Type: message/rfc822\r\n\r\n" + _original(message_id, rcpt or "someone@example.org")
        + "\r\nhello\r\n--b--\r\n").encode()


def garbage(n: int = 0) -> bytes:
    return f"Subject: hello {n}\r\n\r\nJust a letter, not a report.\r\n".encode()
