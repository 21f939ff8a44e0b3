"""SMTP transport: one persistent connection per sending thread, replies kept verbatim."""

from __future__ import annotations

import re
import smtplib
import ssl
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

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


class RelayAuthFailed(RelayUnavailable):
    """The relay refused our credentials: retrying will not help."""


@dataclass(frozen=True)
class RelayConfig:
    host: str
    port: int
    user: str | None = None
    password: str | None = None
    security: str = "none"  # none | starttls | tls
    timeout: float = 30.0

    @classmethod
    def from_url(cls, url: str, timeout: float = 30.0) -> RelayConfig:
        """smtp://user:pass@host:587 (STARTTLS when offered with credentials), smtps://host:465."""
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ValueError(f"SMTP_URL must look like smtp://user:pass@host:port, not {url!r}")
        tls = parts.scheme == "smtps"
        port = parts.port or (465 if tls else 25)
        security = "tls" if tls else ("starttls" if parts.username or port == 587 else "none")
        return cls(parts.hostname, port, unquote(parts.username) if parts.username else None,
                   unquote(parts.password) if parts.password else None, security, timeout)


class SmtpConnection:
    """A reusable connection; `send` returns the relay's final reply for one recipient."""

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
            if cfg.security == "starttls" and smtp.has_extn("starttls"):
                smtp.starttls(context=ssl.create_default_context())
                smtp.ehlo()
            if cfg.user:
                smtp.login(cfg.user, cfg.password or "")
        except smtplib.SMTPAuthenticationError as exc:
            raise RelayAuthFailed(str(Reply.parse(exc.smtp_code, exc.smtp_error))) from exc
        except (OSError, smtplib.SMTPException) as exc:
            raise RelayUnavailable(f"{cfg.host}:{cfg.port}: {exc}") from exc
        self.smtp = smtp

    def close(self) -> None:
        if self.smtp is not None:
            try:
                self.smtp.quit()
            except (OSError, smtplib.SMTPException):
                self.smtp.close()
            self.smtp = None

    def send(self, sender: str, recipient: str, message: bytes) -> Reply:
        """MAIL, RCPT, DATA; a refusal at any step is that step's reply.

        Addresses were validated and cleaned when stored, and the message is built
        with CRLF line ends, so the commands are written directly: smtplib's address
        parsing and line-end regex cost more CPU than the rest of a send.
        """
        if self.smtp is None:
            self.open()
        smtp = self.smtp
        assert smtp is not None
        try:
            code, resp = smtp.docmd(f"MAIL FROM:<{sender}>")
            if code != 250:
                smtp.rset()
                return Reply.parse(code, resp)
            code, resp = smtp.docmd(f"RCPT TO:<{recipient}>")
            if code not in (250, 251):
                smtp.rset()
                return Reply.parse(code, resp)
            code, resp = smtp.docmd("DATA")
            if code != 354:
                smtp.rset()
                return Reply.parse(code, resp)
            smtp.send(dot_stuff(message) + b"\r\n.\r\n")
            code, resp = smtp.getreply()
            if code == 421:  # the relay is closing this connection; the next send reopens
                smtp.close()
                self.smtp = None
            return Reply.parse(code, resp)
        except smtplib.SMTPServerDisconnected as exc:
            self.smtp = None
            raise RelayUnavailable(f"connection lost: {exc}") from exc
        except TimeoutError as exc:
            self.smtp.close()
            self.smtp = None
            return Reply(451, "4.4.2", f"timeout talking to the relay: {exc}")
        except smtplib.SMTPResponseException as exc:
            return Reply.parse(exc.smtp_code, exc.smtp_error)
        except OSError as exc:
            self.smtp = None
            raise RelayUnavailable(f"connection error: {exc}") from exc
