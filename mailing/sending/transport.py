"""SMTP transport: persistent relay connections driven without blocking, replies kept verbatim.

`SmtpConnection` opens a connection (EHLO, STARTTLS, AUTH through smtplib) and
`SmtpSession` then drives it as a small state machine: `begin` writes one
transaction, `on_readable` consumes what the socket holds and returns the final
reply when the transaction is over. When the relay offers PIPELINING (RFC 2920)
MAIL, RCPT and DATA leave in one write, so a letter costs two round trips
instead of four. One thread can drive many sessions through a selector, which is
how the runner keeps its connections busy without a thread per connection.
Credentials are sent only over TLS: a relay that offers no STARTTLS to a client
with a password is refused (`RelayTlsRequired`) before AUTH is written.
"""

from __future__ import annotations

import re
import selectors
import smtplib
import socket
import ssl
import time
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from ..redact import redact

ENHANCED = re.compile(r"^([245]\.\d{1,3}\.\d{1,3})\s*")


@dataclass(frozen=True)
class Reply:
    code: int
    enhanced: str | None
    text: str

    @classmethod
    def parse(cls, code: int, raw: bytes | str) -> Reply:
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        text = " ".join(text.split())
        m = ENHANCED.match(text)
        return cls(code, m.group(1) if m else None, text[m.end():] if m else text)

    @property
    def kind(self) -> str:
        """'ok', 'temporary' (4xx) or 'permanent' (5xx)."""
        return "ok" if 200 <= self.code < 300 else "temporary" if self.code < 500 else "permanent"

    def __str__(self) -> str:
        return f"{self.code} {self.enhanced + ' ' if self.enhanced else ''}{self.text}"


def dot_stuff(message: bytes) -> bytes:
    """RFC 5321 transparency for a CRLF message: a line starting with '.' gets another."""
    if message.startswith(b"."):
        message = b"." + message
    message = message.replace(b"\r\n.", b"\r\n..")
    return message if message.endswith(b"\r\n") else message + b"\r\n"


class RelayUnavailable(Exception):
    """The relay cannot be reached or dropped the connection: the issue is interrupted."""


class NoSmtpUtf8(Exception):
    """The recipient's address needs SMTPUTF8 and the relay does not offer it."""


class RelayAuthFailed(RelayUnavailable):
    """The relay refused our credentials: retrying will not help."""


class RelayTlsRequired(RelayAuthFailed):
    """Credentials are configured but the connection is not encrypted (no STARTTLS offered,
    or TLS turned off): the password is not sent, and retrying will not help either."""


@dataclass(frozen=True)
class RelayConfig:
    host: str
    port: int
    user: str | None = None
    password: str | None = field(default=None, repr=False)  # a logged config never shows it
    security: str = "none"  # none | starttls | tls
    timeout: float = 30.0

    @classmethod
    def from_url(cls, url: str, timeout: float = 30.0) -> RelayConfig:
        """smtp://user:pass@host:587 (STARTTLS: used when offered, required with credentials),
        smtps://host:465 (implicit TLS)."""
        # Every message below quotes the URL redacted: it reaches the test-letter result and
        # the status reason, which every role reads (`from None`: the original
        # error, which may quote the password, is not chained into tracebacks).
        try:
            parts = urlsplit(url)
            parsed_port = parts.port
        except ValueError:  # its message may quote a piece of the password as the "port"
            raise ValueError("SMTP_URL is malformed (a port that is not a number, or characters a URL "
                             "cannot hold: percent-encode @ # / ? : in the password): "
                             f"{redact(url, url)}") from None
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ValueError("SMTP_URL must be smtp:// or smtps:// followed by user:password@host:port, "
                             f"not {redact(url, url)}")
        tls = parts.scheme == "smtps"
        port = parsed_port or (465 if tls else 25)
        security = "tls" if tls else ("starttls" if parts.username or port == 587 else "none")
        return cls(parts.hostname, port, unquote(parts.username) if parts.username else None,
                   unquote(parts.password) if parts.password else None, security, timeout)


class SmtpConnection:
    """Opens and closes one relay connection; `send` delivers one letter, blocking."""

    def __init__(self, cfg: RelayConfig):
        self.cfg = cfg
        self.smtp: smtplib.SMTP | None = None

    def open(self) -> None:
        cfg = self.cfg
        try:
            if cfg.security == "tls":
                smtp: smtplib.SMTP = smtplib.SMTP_SSL(cfg.host, cfg.port, timeout=cfg.timeout,
                                                      context=ssl.create_default_context())
            else:
                smtp = smtplib.SMTP(cfg.host, cfg.port, timeout=cfg.timeout)
            smtp.ehlo()
            encrypted = cfg.security == "tls"
            if cfg.security == "starttls" and smtp.has_extn("starttls"):
                smtp.starttls(context=ssl.create_default_context())
                smtp.ehlo()
                encrypted = True
            if cfg.user:
                if not encrypted:
                    # smtplib would send AUTH PLAIN/LOGIN in clear text: anyone on the path
                    # (or a relay impostor stripping STARTTLS) would read the password.
                    smtp.close()
                    raise RelayTlsRequired(
                        f"{cfg.host}:{cfg.port} "
                        + ("offers no STARTTLS" if cfg.security == "starttls" else "is set to use no TLS")
                        + ", so the password was not sent (credentials go only over STARTTLS "
                          "or implicit TLS, port 465)")
                smtp.login(cfg.user, cfg.password or "")
        except smtplib.SMTPAuthenticationError as exc:
            raise RelayAuthFailed(str(Reply.parse(exc.smtp_code, exc.smtp_error))) from exc
        except smtplib.SMTPResponseException as exc:  # e.g. a 421 greeting: shown as the relay said it
            raise RelayUnavailable(f"{cfg.host}:{cfg.port}: {Reply.parse(exc.smtp_code, exc.smtp_error)}") from exc
        except (OSError, smtplib.SMTPException) as exc:
            raise RelayUnavailable(f"{cfg.host}:{cfg.port}: {exc}") from exc
        self.smtp = smtp

    def close(self) -> None:
        smtp, self.smtp = self.smtp, None
        if smtp is None:
            return
        try:
            if smtp.sock is not None:
                smtp.sock.settimeout(min(self.cfg.timeout, 5.0))
            smtp.quit()
        except (OSError, smtplib.SMTPException):
            smtp.close()

    def send(self, sender: str, recipient: str, message: bytes, smtputf8: bool = False) -> Reply:
        """MAIL, RCPT, DATA for one recipient; a refusal at any step is that step's reply.
        An internationalised address to a relay without SMTPUTF8 raises NoSmtpUtf8."""
        if self.smtp is None:
            self.open()
        session = SmtpSession(self)
        if smtputf8 and not session.smtputf8:
            session.detach()
            raise NoSmtpUtf8("the relay does not accept internationalised addresses (no SMTPUTF8)")
        session.begin(sender, recipient, message, smtputf8=smtputf8)
        with selectors.DefaultSelector() as sel:
            sel.register(session.sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
            while True:
                sel.modify(session.sock, session.events())
                if not sel.select(max(session.deadline - time.monotonic(), 0)):
                    return session.timed_out()
                if session.out:
                    session.on_writable()
                reply = session.on_readable()
                if reply is not None:
                    session.detach()
                    return reply


_OK_ENVELOPE = (250, 251)


class SmtpSession:
    """One open connection as a non-blocking state machine for one transaction at a time.

    Stages: "envelope" (MAIL, RCPT, DATA pipelined; three replies), or "mail",
    "rcpt", "data" one by one; then "body" (the final reply), and "rset" after a
    refusal so the next transaction starts clean. Raises RelayUnavailable when
    the connection is lost; after a 421 or a timeout the session is `dead` and
    the caller opens a new one.
    """

    def __init__(self, conn: SmtpConnection):
        assert conn.smtp is not None and conn.smtp.sock is not None
        self.conn = conn
        self.sock: socket.socket = conn.smtp.sock
        self.sock.setblocking(False)
        self.pipelining = conn.smtp.has_extn("pipelining")
        # RFC 6531: a non-ASCII local part (and a letter naming it) only with SMTPUTF8.
        self.smtputf8 = conn.smtp.has_extn("smtputf8")
        self.eightbit = conn.smtp.has_extn("8bitmime")
        self.timeout = conn.cfg.timeout
        self.out = bytearray()
        self.inbuf = bytearray()
        self.stage = "idle"
        self.expect = 0
        self.replies: list[Reply] = []
        self.final: Reply | None = None
        self.payload = b""
        self.rcpt = b""
        self.deadline = float("inf")
        self.dead = False

    @property
    def busy(self) -> bool:
        return self.stage != "idle"

    def events(self) -> int:
        return selectors.EVENT_READ | (selectors.EVENT_WRITE if self.out else 0)

    def begin(self, sender: str, recipient: str, message: bytes, smtputf8: bool = False) -> None:
        """Start one transaction. `smtputf8` for an internationalised address: the caller
        checks `self.smtputf8` first, a relay without it would refuse the envelope."""
        assert not self.busy and not self.dead
        self.payload = dot_stuff(message) + b".\r\n"
        self.rcpt = f"RCPT TO:<{recipient}>\r\n".encode()
        params = (" SMTPUTF8" + (" BODY=8BITMIME" if self.eightbit else "")) if smtputf8 else ""
        mail = f"MAIL FROM:<{sender}>{params}\r\n".encode()
        self.replies, self.final = [], None
        if self.pipelining:
            self._send(mail + self.rcpt + b"DATA\r\n", "envelope", 3)
        else:
            self._send(mail, "mail", 1)

    def _send(self, data: bytes, stage: str, expect: int) -> None:
        self.stage, self.expect = stage, expect
        self.deadline = time.monotonic() + self.timeout
        self.out += data
        self.on_writable()

    def on_writable(self) -> None:
        while self.out:
            try:
                n = self.sock.send(self.out)
            except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                return
            except OSError as exc:
                self.dead = True
                raise RelayUnavailable(f"connection error: {exc}") from exc
            del self.out[:n]

    def on_readable(self) -> Reply | None:
        """Consume what arrived; the transaction's final reply once it is over."""
        while True:
            try:
                chunk = self.sock.recv(65536)
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                break
            except OSError as exc:
                self.dead = True
                raise RelayUnavailable(f"connection error: {exc}") from exc
            if not chunk:
                self.dead = True
                if self.busy:
                    raise RelayUnavailable("connection lost: the relay closed it")
                break
            self.inbuf += chunk
            if not (isinstance(self.sock, ssl.SSLSocket) and self.sock.pending()):
                break
        return self._advance()

    def _take_replies(self) -> None:
        while len(self.replies) < self.expect:
            end = 0
            lines: list[bytes] = []
            code = 0
            while True:
                nl = self.inbuf.find(b"\n", end)
                if nl < 0:
                    return  # an incomplete reply: wait for more
                line = bytes(self.inbuf[end:nl]).rstrip(b"\r")
                end = nl + 1
                try:
                    code = int(line[:3])
                except ValueError:
                    code = 500
                lines.append(line[4:])
                if line[3:4] != b"-":
                    break
            del self.inbuf[:end]
            self.replies.append(Reply.parse(code, b"\n".join(lines)))

    def _advance(self) -> Reply | None:
        while True:
            self._take_replies()
            if len(self.replies) < self.expect or self.stage == "idle":
                return None
            replies, self.replies = self.replies, []
            for reply in replies:
                if reply.code == 421:  # the relay is closing this connection
                    self.dead = True
                    return self._done(reply)
            stage = self.stage
            if stage == "envelope":
                mail, rcpt, data = replies
                refused = next((r for r in (mail, rcpt) if r.code not in _OK_ENVELOPE), None)
                if refused is None and data.code == 354:
                    self._send(self.payload, "body", 1)
                elif refused is not None and data.code == 354:
                    self.dead = True  # a relay that opens DATA for no recipient: drop the transaction
                    return self._done(refused)
                else:
                    self._refused(refused or data)
            elif stage == "mail" or stage == "rcpt":
                if replies[0].code not in _OK_ENVELOPE:
                    self._refused(replies[0])
                elif stage == "mail":
                    self._send(self.rcpt, "rcpt", 1)
                else:
                    self._send(b"DATA\r\n", "data", 1)
            elif stage == "data":
                if replies[0].code == 354:
                    self._send(self.payload, "body", 1)
                else:
                    self._refused(replies[0])
            elif stage == "body":
                return self._done(replies[0])
            elif stage == "rset":
                return self._done(self.final)

    def _refused(self, reply: Reply) -> None:
        self.final = reply
        self._send(b"RSET\r\n", "rset", 1)

    def _done(self, reply: Reply | None) -> Reply:
        assert reply is not None
        self.stage, self.expect, self.deadline = "idle", 0, float("inf")
        self.payload = b""
        return reply

    def timed_out(self) -> Reply:
        self.dead = True
        self.close()
        return self._done(Reply(451, "4.4.2", "timeout talking to the relay"))

    def detach(self) -> None:
        """Back to a blocking socket, for smtplib to use or close."""
        if not self.dead:
            self.sock.settimeout(self.timeout)
        else:
            self.close()

    def close(self) -> None:
        try:
            self.sock.setblocking(True)
        except OSError:
            pass
        if self.dead and self.conn.smtp is not None:
            self.conn.smtp.close()
            self.conn.smtp = None
        else:
            self.conn.close()
