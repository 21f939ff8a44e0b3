"""Proofs of a letter before it goes out: the preview a sample reader would see, and one
test letter sent now through the sender's relay. The issue page and the API share them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import current_app

from . import contacts, states
from .addresses import needs_smtputf8, wire_address
from .extensions import db
from .fielderror import FieldError
from .models import Issue
from .redact import redact
from .sending.letter import LetterError, Recipient
from .sending.runner import build_letter, relay_config
from .sending.transport import NoSmtpUtf8, RelayUnavailable, SmtpConnection
from .unsubscribe import test_unsubscribe_url


class NotReady(FieldError):
    """The letter cannot be built yet (an empty subject, a broken placeholder)."""


@dataclass
class Preview:
    subject: str
    html: str
    recipient: str


def preview(issue: Issue, as_address: str = "") -> Preview:
    """The letter as the contact `as_address` (else the list's first) would get it, with a
    dead unsubscribe link: a preview must not let anyone unsubscribe a real reader."""
    try:
        letter = build_letter(issue)
    except LetterError as exc:
        raise NotReady("not_ready", str(exc)) from exc
    sample = contacts.sample_recipient(issue, as_address[:254], "#unsubscribe")
    return Preview(letter.subject_for(sample),
                   letter.sample_html(sample.name, sample.email, sample.unsubscribe_url, sample.fields),
                   sample.email)


@dataclass
class TestResult:
    ok: bool
    reply: str


class TestFailed(Exception):
    """The relay could not be reached or would not take the letter; the message is safe to show."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def send_test(issue: Issue, address: str, as_contact: str, actor: Any) -> TestResult:
    """One letter to `address`, now, as the contact `as_contact` (else the address's own
    contact, else the list's first) would get it; journalled with the relay's reply."""
    link = test_unsubscribe_url(current_app.config["BASE_URL"], current_app.config["SECRET_KEY"].encode(),
                                issue.id)
    sample = contacts.sample_recipient(issue, as_contact.strip() or address, link)
    try:
        letter = build_letter(issue)
        _mid, data = letter.build(Recipient(0, f"test-{address}", address, sample.name, link, sample.fields))
        conn = SmtpConnection(relay_config(issue.sender))  # the sender's own relay, if it has one
        try:
            reply = conn.send(letter.wire_from, wire_address(address), data, smtputf8=needs_smtputf8(address))
        finally:
            conn.close()
    except (LetterError, RelayUnavailable, NoSmtpUtf8, ValueError) as exc:
        # redact: a mistyped SMTP_URL's error quotes it, password and all.
        raise TestFailed(redact(str(exc))) from exc
    states.record(issue.id, "test_letter", actor=actor,
                  details={"to": address, "as": sample.email, "reply": str(reply)})
    db.session.commit()
    return TestResult(reply.kind == "ok", redact(str(reply)))
