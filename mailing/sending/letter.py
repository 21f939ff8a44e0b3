"""The letter: rendered once per issue, personalised per recipient by cheap substitution.

Building a full EmailMessage per recipient costs about a millisecond; here the
headers and the MIME skeleton are built once, and the text and HTML bodies are
split at their placeholders and quoted-printable encoded once, piece by piece.
Each recipient then costs the encoding of its own short values and a join: every
piece is separated by a soft line break ("=" at the end of a line, which
decoders remove), so each starts a fresh line and no line exceeds 76 characters.

Placeholders are `{{ field }}` or `{{ field | default("text") }}`, where a field is
a built-in one (name, email, phone, unsubscribe_url) or a custom contact field (an
extra CSV column). They work in the subject, the preheader, both bodies, the From
name, Reply-To and custom headers. Header lines end in CRLF, stay within 78 octets
where a space allows and never exceed 998; non-ASCII text goes out as RFC 2047
encoded words, one UTF-8 character never split between two of them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import html
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

from flask_babel import gettext as _

from .. import verp
from ..addresses import is_valid_email, needs_smtputf8, wire_address
from ..unsubscribe import sign

BUILTIN_FIELDS = ("name", "email", "phone", "unsubscribe_url")
# A custom field name: what an extra CSV column may be called to be usable in a letter.
FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
PLACEHOLDER = re.compile(
    r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*"
    r"(?:\|\s*default\(\s*(?:\"([^\"]*)\"|'([^']*)')\s*\)\s*)?\}\}")
_ANY_BRACES = re.compile(r"\{\{(.*?)\}\}", re.S)
_CRLF = re.compile(r"[\r\n\x00]+")
# Headers a letter sets itself; a custom header may not replace them.
RESERVED_HEADERS = frozenset(h.lower() for h in (
    "From", "To", "Cc", "Bcc", "Subject", "Date", "Message-ID", "MIME-Version", "Content-Type",
    "Content-Transfer-Encoding", "Reply-To", "Return-Path", "Sender", "List-Unsubscribe",
    "List-Unsubscribe-Post", "Received", "DKIM-Signature"))
_HEADER_NAME = re.compile(r"[!-9;-~]{1,76}")  # RFC 5322 ftext


class LetterError(ValueError):
    pass


def clean_header_value(value: str) -> str:
    """Header text with CR, LF and NUL folded to spaces: no header injection."""
    if not value:
        return ""
    if "\r" in value or "\n" in value or "\x00" in value:
        value = _CRLF.sub(" ", value)
    return value.strip()


# --- templates ------------------------------------------------------------------------

@dataclass(frozen=True)
class Slot:
    """One placeholder: the field it names and the text used when the field is empty."""
    name: str
    default: str = ""


Template = list  # alternating literal text (even positions) and Slots (odd positions)


def parse_template(text: str) -> Template:
    """Split text at its placeholders: [text, Slot, text, Slot, ..., text]."""
    parts: Template = []
    pos = 0
    for m in PLACEHOLDER.finditer(text or ""):
        parts.append(text[pos:m.start()])
        parts.append(Slot(m.group(1), m.group(2) if m.group(2) is not None else (m.group(3) or "")))
        pos = m.end()
    parts.append((text or "")[pos:])
    return parts


def template_fields(text: str) -> set[str]:
    return {m.group(1) for m in PLACEHOLDER.finditer(text or "")}


def placeholder_errors(text: str, known: Iterable[str]) -> list[str]:
    """What is wrong with the placeholders of one field, in words for its editor: unknown
    fields (a typo such as {{ nmae }}) and braces that are not a placeholder at all."""
    known = set(known)
    problems: list[str] = []
    for m in _ANY_BRACES.finditer(text or ""):
        good = PLACEHOLDER.fullmatch(m.group(0))
        if good is None:
            problems.append(_("“%(text)s” is not a placeholder: write {{ field }} or "
                              "{{ field | default(\"text\") }}", text=m.group(0)[:60]))
        elif good.group(1) not in known:
            problems.append(_("unknown field “%(name)s” in %(text)s; known fields: %(known)s",
                              name=good.group(1), text=m.group(0), known=", ".join(sorted(known))))
    return problems


def fill(template: Template, values: dict[str, str], escape: bool = False) -> str:
    out = []
    for i, part in enumerate(template):
        if i % 2:
            value = values.get(part.name) or part.default
            out.append(html.escape(value) if escape else value)
        else:
            out.append(part)
    return "".join(out)


# --- headers --------------------------------------------------------------------------

def _encoded_words(text: str) -> list[str]:
    """RFC 2047 base64 words of at most 75 characters, never splitting a UTF-8 character."""
    raw = text.encode("utf-8")
    words = []
    start = 0
    while start < len(raw):
        end = min(start + 45, len(raw))  # 45 octets are 60 base64 characters, 72 with the wrapper
        while end < len(raw) and (raw[end] & 0xC0) == 0x80:
            end -= 1
        words.append("=?utf-8?b?" + base64.b64encode(raw[start:end]).decode("ascii") + "?=")
        start = end
    return words


def _fold(prefix: str, tokens: list[str], suffix: str = "") -> str:
    """Join tokens after `prefix` with spaces, breaking lines (CRLF SP) before 78 octets."""
    lines = [prefix.rstrip(" ")]
    for token in tokens:
        if len(lines[-1]) + 1 + len(token) > 78 and lines[-1] != prefix.rstrip(" "):
            lines.append("")
        lines[-1] += " " + token
    if suffix:
        if len(lines[-1]) + 1 + len(suffix) > 78:
            lines.append("")
        lines[-1] += " " + suffix
    return "\r\n".join(lines) + "\r\n"


def unstructured(name: str, value: str) -> str:
    """`Name: value` CRLF for free text (Subject and the like), folded and encoded as needed."""
    value = clean_header_value(value)
    words = value.split(" ")
    if value.isascii() and "=?" not in value and all(len(w) < 900 for w in words):
        return _fold(f"{name}:", [w for w in words if w])
    return _fold(f"{name}:", _encoded_words(value))


_SPECIALS = re.compile(r'[()<>@,;:\\".\[\]]')


def mailbox(name: str, display: str, address: str) -> str:
    """`Name: display <address>` CRLF: the display name quoted or encoded as needed."""
    display = clean_header_value(display)
    addr = f"<{address}>"
    if not display:
        return f"{name}: {address}\r\n"
    if display.isascii() and "=?" not in display:
        phrase = display
        if _SPECIALS.search(display):
            phrase = '"' + display.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if len(phrase) < 900:
            return _fold(f"{name}:", [phrase], addr)
    return _fold(f"{name}:", _encoded_words(display), addr)


def html_to_text(body: str) -> str:
    """A plain-text alternative: tags dropped, links kept, entities decoded."""
    text = re.sub(r"(?is)<(script|style).*?</\1>", "", body)
    text = re.sub(r'(?is)<a\s[^>]*href="([^"]+)"[^>]*>(.*?)</a>', r"\2 (\1)", text)
    text = re.sub(r"(?i)<br\s*/?>|</p>|</div>|</h\d>|</li>", "\n", text)
    text = re.sub(r"<[^>]+>", "", text)
    text = html.unescape(text)
    return re.sub(r"\n{3,}", "\n\n", re.sub(r"[ \t]+", " ", text)).strip() + "\n"


def preheader_html(preheader_template: str) -> str:
    """The preheader: the line mail clients show after the subject, hidden in the letter."""
    return ('<div style="display:none;max-height:0;overflow:hidden;mso-hide:all">'
            + preheader_template + "</div>\n")


# --- bodies ---------------------------------------------------------------------------

def _qp(text: str) -> bytes:
    """Quoted-printable (C code): mostly-ASCII letters stay near their size, where
    base64 would add a third; CRLF line ends as SMTP wants them."""
    out = binascii.b2a_qp(text.encode("utf-8").replace(b"\r\n", b"\n"), istext=True)
    return out.replace(b"\n", b"\r\n")


_SOFT_BREAK = b"=\r\n"


def _encode_parts(parts: Template) -> list[bytes | Slot]:
    """The literal text is encoded now, the slots stay to be filled per recipient."""
    return [part if i % 2 else _qp(part) for i, part in enumerate(parts)]


_QP_PLAIN = re.compile(r"[\x21-\x3c\x3e-\x7e](?:[\x20\x21-\x3c\x3e-\x7e]{0,70}[\x21-\x3c\x3e-\x7e])?")


def _qp_value(value: str) -> bytes:
    """A recipient's value quoted-printable encoded; most values (names, addresses, links
    in plain ASCII, short, no '=') encode to themselves, so the codec is skipped."""
    if _QP_PLAIN.fullmatch(value):
        return value.encode("ascii")
    return _qp(value)


def _fill_encoded(parts: list[bytes | Slot], values: dict[str, str], escape: bool) -> bytes:
    out = []
    for p in parts:
        if isinstance(p, bytes):
            out.append(p)
        else:
            value = values.get(p.name) or p.default
            out.append(_qp_value(html.escape(value) if escape else value))
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
    fields: dict[str, str] = field(default_factory=dict)  # phone and custom contact fields


def parse_custom_headers(text: str) -> list[tuple[str, str]]:
    """`Name: value` lines; LetterError naming the first bad line."""
    headers = []
    for number, line in enumerate((text or "").splitlines(), 1):
        if not line.strip():
            continue
        name, colon, value = line.partition(":")
        name = name.strip()
        if not colon or not _HEADER_NAME.fullmatch(name):
            raise LetterError(_("line %(n)s: write a header as Name: value", n=number))
        if name.lower() in RESERVED_HEADERS:
            raise LetterError(_("line %(n)s: %(name)s is set by Outbox itself", n=number, name=name))
        headers.append((name, value.strip()))
    return headers


class Letter:
    """One issue's letter, ready to be personalised."""

    def __init__(self, *, issue_id: int, subject: str, body_html: str, from_name: str,
                 from_email: str, secret: bytes, boundary_seed: str = "", body_text: str = "",
                 preheader: str = "", reply_to: str = "", custom_headers: str = ""):
        if not subject.strip():
            raise LetterError("the subject is empty")
        self.issue_id = issue_id
        self.from_email = from_email
        self.wire_from = wire_address(from_email)
        self.domain = self.wire_from.rsplit("@", 1)[-1]
        self.secret = secret
        self.text_source = parse_template(body_text if body_text.strip() else html_to_text(body_html))
        if preheader.strip():
            body_html = preheader_html(clean_header_value(preheader)) + body_html
        self.html_source = parse_template(body_html)
        self.html_parts = _encode_parts(self.html_source)
        self.text_parts = _encode_parts(self.text_source)
        self._date: tuple[int, str] = (0, "")
        self.boundary = "=_outbox_" + hashlib.sha1(f"{issue_id}{boundary_seed}".encode()).hexdigest()[:24]
        # Header templates: those without placeholders are encoded once here.
        self.subject_t = parse_template(clean_header_value(subject))
        self.from_t = parse_template(clean_header_value(from_name))
        self.reply_t = parse_template(clean_header_value(reply_to))
        self.custom = [(n, parse_template(v)) for n, v in parse_custom_headers(custom_headers)]
        self.fields = set()
        for t in (self.html_source, self.text_source, self.subject_t, self.from_t, self.reply_t,
                  *(t for _n, t in self.custom)):
            self.fields.update(p.name for p in t[1::2])
        # Each header is encoded once here unless it names a field; those are per recipient.
        self._head_parts = self._head_plan()
        self.tail_head = (
            f'Content-Type: multipart/alternative; boundary="{self.boundary}"\r\n\r\n'
        ).encode()
        # Applied to each finished letter: the DKIM signer of the sender's domain (mailing/dkim.py).
        self.sign: Callable[[bytes], bytes] | None = None
        # With a bounce domain, each letter's envelope sender is its VERP address
        # (mailing/verp.py), so a bounce names its delivery; without one, the sender's.
        self.bounce_domain: str | None = None

    def envelope_from(self, delivery_id: int) -> str:
        if self.bounce_domain:
            return verp.address(self.secret, delivery_id, self.bounce_domain)
        return self.wire_from

    @property
    def custom_fields(self) -> set[str]:
        """The fields a recipient's contact must supply besides name, email and the link."""
        return self.fields - {"name", "email", "unsubscribe_url"}

    def _head_plan(self) -> list[Any]:
        """From, Subject, Reply-To, custom headers and MIME-Version: bytes for a header
        without placeholders, a function of the recipient's values for one with them."""
        def reply_to(values: dict[str, str]) -> str:
            reply = clean_header_value(fill(self.reply_t, values))
            # A personalised one may come out empty or not an address: then none is sent.
            return f"Reply-To: {wire_address(reply)}\r\n" if reply and is_valid_email(reply) else ""

        plan: list[tuple[Template, Any]] = [
            (self.from_t, lambda v: mailbox("From", fill(self.from_t, v), self.wire_from)),
            (self.subject_t, lambda v: unstructured("Subject", fill(self.subject_t, v)))]
        if len(self.reply_t) > 1 or self.reply_t[0]:
            plan.append((self.reply_t, reply_to))
        for name, t in self.custom:
            plan.append((t, lambda v, name=name, t=t: unstructured(name, fill(t, v))))
        parts: list[Any] = []
        for template, render in plan:
            parts.append(render if len(template) > 1 else render({}).encode("utf-8"))
        parts.append(b"MIME-Version: 1.0\r\n")
        return parts

    def _head(self, values: dict[str, str]) -> bytes:
        return b"".join(p if isinstance(p, bytes) else p(values).encode("utf-8") for p in self._head_parts)

    def values(self, r: Recipient) -> dict[str, str]:
        return {**r.fields, "name": clean_header_value(r.name), "email": clean_header_value(r.email),
                "unsubscribe_url": r.unsubscribe_url}

    def subject_for(self, r: Recipient) -> str:
        return fill(self.subject_t, self.values(r))

    def sample_html(self, name: str, email: str, unsubscribe_url: str,
                    fields: dict[str, str] | None = None) -> str:
        """The HTML part as one recipient would see it (for previews)."""
        values = {**(fields or {}), "name": name, "email": email, "unsubscribe_url": unsubscribe_url}
        return fill(self.html_source, values, escape=True)

    def _now(self) -> str:
        """The Date header, formatted once a second."""
        second = int(time.time())
        if self._date[0] != second:
            self._date = (second, format_datetime(datetime.fromtimestamp(second, UTC)))
        return self._date[1]

    def message_id(self, contact_key: int | str) -> str:
        return message_id(self.secret, self.issue_id, contact_key, self.domain)

    def build(self, r: Recipient, *, date: datetime | None = None) -> tuple[str, bytes]:
        """(Message-ID, RFC 5322 bytes) for one recipient. The bytes are 7-bit unless the
        recipient's local part is not ASCII (then they need SMTPUTF8, RFC 6532)."""
        values = self.values(r)
        email = values["email"]
        try:
            address = wire_address(email)
        except UnicodeError as exc:  # an address no relay would take
            raise LetterError(f"the address {email!r} cannot be written on the wire: {exc}") from exc
        mid = self.message_id(r.contact_key)
        when = format_datetime(date) if date else self._now()
        head = self._head(values)
        to = mailbox("To", values["name"], address).encode("utf-8" if needs_smtputf8(address) else "ascii")
        headers = (
            f"Date: {when}\r\nMessage-ID: {mid}\r\n"
            f"List-Unsubscribe: <{r.unsubscribe_url}>\r\n"
            "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
        ).encode("ascii", "strict")
        b = self.boundary.encode()
        body = b"".join([
            b"--", b, b"\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Content-Transfer-Encoding: quoted-printable\r\n\r\n",
            _fill_encoded(self.text_parts, values, False),
            b"--", b, b"\r\nContent-Type: text/html; charset=utf-8\r\n"
            b"Content-Transfer-Encoding: quoted-printable\r\n\r\n",
            _fill_encoded(self.html_parts, values, True),
            b"--", b, b"--\r\n",
        ])
        data = head + to + headers + self.tail_head + body
        return mid, self.sign(data) if self.sign is not None else data


# The fields of an issue that may hold placeholders, as the editor's form names them.
TEMPLATE_FIELDS = ("subject", "preheader", "from_name", "reply_to", "body_html", "body_text",
                   "custom_headers")


def check_letter(values: dict[str, str], known: Iterable[str]) -> dict[str, list[str]]:
    """Per form field, what would make the letter wrong: unknown or malformed
    placeholders, a Reply-To that is no address, custom headers that are not headers."""
    known = list(known)
    problems: dict[str, list[str]] = {}
    for name in TEMPLATE_FIELDS:
        found = placeholder_errors(values.get(name) or "", known)
        if found:
            problems[name] = found
    reply = (values.get("reply_to") or "").strip()
    if reply and not template_fields(reply) and not is_valid_email(reply):
        problems.setdefault("reply_to", []).append(_("not an email address"))
    try:
        parse_custom_headers(values.get("custom_headers") or "")
    except LetterError as exc:
        problems.setdefault("custom_headers", []).append(str(exc))
    return problems
