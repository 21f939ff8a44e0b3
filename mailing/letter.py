"""The letter: rendered once per issue, personalised per recipient by cheap substitution.

Building a full EmailMessage per recipient costs about a millisecond; here the
headers and the MIME skeleton are built once, and the text and HTML bodies are
split at their placeholders and quoted-printable encoded once, piece by piece.
Each recipient then costs the encoding of its own short values and a join: every
piece is separated by a soft line break ("=" at the end of a line, which
decoders remove), so each starts a fresh line and no line exceeds 76 characters.
"""

from __future__ import annotations

import binascii
import hashlib
import html
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.header import Header
from email.utils import format_datetime, formataddr

from .unsubscribe import sign

PLACEHOLDER = re.compile(r"\{\{\s*(name|email|unsubscribe_url)\s*\}\}")
_CRLF = re.compile(r"[\r\n\x00]+")


class LetterError(ValueError):
    pass


def clean_header_value(value: str) -> str:
    """Header text with CR, LF and NUL folded to spaces: no header injection."""
    return _CRLF.sub(" ", value or "").strip()


def encode_header(value: str) -> str:
    value = clean_header_value(value)
    if value.isascii():
        return value
    return Header(value, "utf-8").encode(maxlinelen=76)


def html_to_text(body: str) -> str:
    """A plain-text alternative: tags dropped, links kept, entities decoded."""
    text = re.sub(r"(?is)<(script|style).*?</\1>", "", body)
    text = re.sub(r'(?is)<a\s[^>]*href="([^"]+)"[^>]*>(.*?)</a>', r"\2 (\1)", text)
    text = re.sub(r"(?i)<br\s*/?>|</p>|</div>|</h\d>|</li>", "\n", text)
    text = re.sub(r"<[^>]+>", "", text)
    text = html.unescape(text)
    return re.sub(r"\n{3,}", "\n\n", re.sub(r"[ \t]+", " ", text)).strip() + "\n"


def _qp(text: str) -> bytes:
    """Quoted-printable (C code): mostly-ASCII letters stay near their size, where
    base64 would add a third; CRLF line ends as SMTP wants them."""
    out = binascii.b2a_qp(text.encode("utf-8").replace(b"\r\n", b"\n"), istext=True)
    return out.replace(b"\n", b"\r\n")


_SOFT_BREAK = b"=\r\n"


def _encode_parts(parts: list[str]) -> list[bytes | str]:
    """PLACEHOLDER.split alternates text and placeholder names: the text is encoded
    now, the names stay to be filled per recipient."""
    return [part if i % 2 else _qp(part) for i, part in enumerate(parts)]


def _fill_encoded(parts: list[bytes | str], values: dict[str, str]) -> bytes:
    out = [p if isinstance(p, bytes) else _qp(values[p]) for p in parts]
    return _SOFT_BREAK.join(out) + b"\r\n"


def message_id(secret: bytes, issue_id: int, contact_key: int | str, domain: str) -> str:
    """Deterministic per (issue, recipient): a repeat after a crash carries the same id."""
    tag = sign(secret, f"{issue_id}.{contact_key}".encode())[:16]
    return f"<outbox.{issue_id}.{contact_key}.{tag}@{domain}>"


@dataclass
class Recipient:
    delivery_id: int
    contact_key: int | str  # contact id, or the address for one-off test letters
    email: str
    name: str
    unsubscribe_url: str


class Letter:
    """One issue's letter, ready to be personalised."""

    def __init__(self, *, issue_id: int, subject: str, body_html: str, from_name: str,
                 from_email: str, secret: bytes, boundary_seed: str = "",
                 list_unsubscribe_post: str | None = None):
        if not subject.strip():
            raise LetterError("the subject is empty")
        self.issue_id = issue_id
        self.from_email = from_email
        self.domain = from_email.rsplit("@", 1)[-1]
        self.secret = secret
        self.html_source = PLACEHOLDER.split(body_html)
        self.html_parts = _encode_parts(self.html_source)
        self.text_parts = _encode_parts(PLACEHOLDER.split(html_to_text(body_html)))
        self._date: tuple[int, str] = (0, "")
        self.boundary = "=_outbox_" + hashlib.sha1(f"{issue_id}{boundary_seed}".encode()).hexdigest()[:24]
        sender = formataddr((clean_header_value(from_name), from_email), charset="utf-8")
        self.head = (
            f"From: {sender}\r\n"
            f"Subject: {encode_header(subject)}\r\n"
            "MIME-Version: 1.0\r\n"
        ).encode("ascii")
        self.list_unsubscribe_post = list_unsubscribe_post
        self.tail_head = (
            f'Content-Type: multipart/alternative; boundary="{self.boundary}"\r\n\r\n'
        ).encode()

    def sample_html(self, name: str, email: str, unsubscribe_url: str) -> str:
        """The HTML part as one recipient would see it (for previews)."""
        values = {"name": html.escape(name), "email": html.escape(email),
                  "unsubscribe_url": html.escape(unsubscribe_url)}
        return "".join(values[p] if i % 2 else p for i, p in enumerate(self.html_source))

    def _now(self) -> str:
        """The Date header, formatted once a second."""
        second = int(time.time())
        if self._date[0] != second:
            self._date = (second, format_datetime(datetime.fromtimestamp(second, UTC)))
        return self._date[1]

    def message_id(self, contact_key: int | str) -> str:
        return message_id(self.secret, self.issue_id, contact_key, self.domain)

    def build(self, r: Recipient, *, date: datetime | None = None) -> tuple[str, bytes]:
        """(Message-ID, RFC 5322 bytes) for one recipient."""
        name = clean_header_value(r.name)
        email = clean_header_value(r.email)
        try:
            to = formataddr((name, email), charset="utf-8") if name else email
        except UnicodeError as exc:  # an address no relay would take
            raise LetterError(f"cannot encode recipient {email!r}: {exc}") from exc
        if not to.isascii():
            raise LetterError(f"address {email!r} needs SMTPUTF8, which Outbox does not send")
        mid = self.message_id(r.contact_key)
        html_vals = {"name": html.escape(name), "email": html.escape(email),
                     "unsubscribe_url": html.escape(r.unsubscribe_url)}
        text_vals = {"name": name, "email": email, "unsubscribe_url": r.unsubscribe_url}
        when = format_datetime(date) if date else self._now()
        headers = (
            f"To: {to}\r\nDate: {when}\r\nMessage-ID: {mid}\r\n"
            f"List-Unsubscribe: <{r.unsubscribe_url}>\r\n"
            "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
        ).encode("ascii", "strict")
        b = self.boundary.encode()
        body = b"".join([
            b"--", b, b"\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Content-Transfer-Encoding: quoted-printable\r\n\r\n",
            _fill_encoded(self.text_parts, text_vals),
            b"--", b, b"\r\nContent-Type: text/html; charset=utf-8\r\n"
            b"Content-Transfer-Encoding: quoted-printable\r\n\r\n",
            _fill_encoded(self.html_parts, html_vals),
            b"--", b, b"--\r\n",
        ])
        return mid, self.head + headers + self.tail_head + body
