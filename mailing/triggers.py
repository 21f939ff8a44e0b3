"""Triggered mailings (seed 001): an issue that stays live and sends one letter to each
participant as it arrives.

A participant arrives through the API (an address or a contact, fields for its letter,
an idempotency key) or, with `trigger_on_join`, as a contact joins the mailing's list. It
becomes one delivery of the issue, sent by the same engine as any other (stop-lists,
personalisation, Message-ID, server response, journal): while the mailing is Sending a
runner waiting on it is woken at once; while it is Paused the delivery waits as pending
and Resume sends it; once the mailing is Stopping or Cancelled ("Stopped") the delivery is
recorded at once as `stopped_manually`, as the seed says. The same idempotency key twice
is one delivery: the second call answers with the first one's state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from email_validator import EmailNotValidError
from flask_babel import gettext as _

from . import queueing
from .addresses import normalise_key
from .enums import DeliveryState as D
from .enums import IssueStatus
from .extensions import db
from .fielderror import FieldError
from .models import Contact, Delivery, Issue, TriggerParticipant, utcnow
from .states import IllegalTransition, IssueNotFound, record

S = IssueStatus
TRIGGERED = "triggered"
MAX_FIELDS = 50
MAX_FIELD_LENGTH = 2000
# Arrivals while the mailing is in one of these are recorded stopped at once.
STOPPED = (S.STOPPING, S.CANCELLED)


class ParticipantError(FieldError):
    """A participant the API cannot take (HTTP 400), with its field."""


def wake_key(issue_id: int) -> str:
    """A short Redis list a live runner of the mailing waits on (BLPOP)."""
    return f"outbox:issue:{issue_id}:wake"


def wake(issue_id: int) -> None:
    """After the commit that added participants: the waiting runner claims them now."""
    r = queueing.redis_connection()
    pipe = r.pipeline(transaction=False)
    pipe.lpush(wake_key(issue_id), 1)
    pipe.ltrim(wake_key(issue_id), 0, 7)
    pipe.expire(wake_key(issue_id), 3600)
    pipe.execute()
    # No runner waiting: start one, once for a burst of arrivals (the maintenance loop
    # starts one anyway for due letters of a Sending issue without a runner).
    if not queueing.live_runners(issue_id) and r.set(f"outbox:issue:{issue_id}:spawning", 1, nx=True, ex=5):
        queueing.enqueue("jobs.sending.send_issue", issue_id)


@dataclass
class Arrival:
    """What became of one participant, as the API answers it."""
    participant_id: int
    delivery_id: int
    state: str
    reason: str | None
    duplicate: bool
    live: bool = False  # the mailing is Sending: wake its runner after the commit


def _clean_fields(fields: Any) -> dict[str, str]:
    if fields is None:
        return {}
    if not isinstance(fields, dict) or len(fields) > MAX_FIELDS:
        raise ParticipantError("fields", _("Send fields as an object of at most %(n)s names and values.", n=MAX_FIELDS))
    out: dict[str, str] = {}
    for name, value in fields.items():
        if not isinstance(name, str) or not name or len(name) > 64:
            raise ParticipantError("fields", _("A field's name must be 1 to 64 characters."))
        if isinstance(value, bool) or not isinstance(value, str | int | float) or len(str(value)) > MAX_FIELD_LENGTH:
            raise ParticipantError("fields", _("The field %(name)s must be a text or a number.", name=name[:64]))
        out[name] = str(value)
    return out


def _person(email: Any, contact_id: Any) -> tuple[str, str, str, int | None, dict[str, str]]:
    """(address, key, name, contact id, the contact's own fields) of a participant."""
    contact: Contact | None = None
    if contact_id is not None:
        if isinstance(contact_id, bool) or not isinstance(contact_id, int):
            raise ParticipantError("contact_id", _("contact_id must be a number."))
        contact = db.session.get(Contact, contact_id)
        if contact is None or not contact.email:
            raise ParticipantError("contact_id", _("No contact with that id and an address."))
        address, key = contact.email, contact.email_key or normalise_key(contact.email)[1]
    else:
        if not isinstance(email, str) or not email.strip():
            raise ParticipantError("email", _("Give an email or a contact_id."))
        try:
            address, key = normalise_key(email)
        except EmailNotValidError as exc:
            raise ParticipantError("email", str(exc)) from None
        contact = db.session.scalar(sa.select(Contact).where(Contact.email_key == key))
    if contact is None:
        return address, key, "", None, {}
    own = {k: str(v) for k, v in (contact.attributes or {}).items() if v is not None}
    if contact.phone:
        own["phone"] = contact.phone
    return address, key, contact.name or "", contact.id, own


def arrive(issue_id: int, *, email: Any = None, contact_id: Any = None, name: Any = None,
           fields: Any = None, key: Any = None) -> Arrival:
    """Take one participant (commits; the caller wakes the mailing's runner)."""
    if key is not None and (not isinstance(key, str) or not 0 < len(key) <= 200):
        raise ParticipantError("idempotency_key", _("The idempotency key must be 1 to 200 characters."))
    if name is not None and not isinstance(name, str):
        raise ParticipantError("name", _("The name must be a text."))
    extra = _clean_fields(fields)
    address, email_key, known_name, cid, own = _person(email, contact_id)
    # The issue's row is locked first, so an arrival and a Stop never cross: an arrival
    # either lands before the Stop (and is stopped with the rest) or is recorded stopped.
    issue = db.session.execute(sa.select(Issue).where(Issue.id == issue_id).with_for_update()).scalar_one_or_none()
    if issue is None:
        raise IssueNotFound(issue_id)
    if issue.kind != TRIGGERED:
        raise IllegalTransition("arrive", issue.status, _("this is not a triggered mailing"))
    if issue.status == S.DRAFT or issue.status == S.SCHEDULED:
        raise IllegalTransition("arrive", issue.status, _("launch the triggered mailing before sending it participants"))
    if key is not None:
        seen = _by_key(issue_id, key)
        if seen is not None:
            db.session.commit()
            return seen
    stopped = issue.status in STOPPED
    now = utcnow()
    delivery = Delivery(issue_id=issue_id, contact_id=None, email=address, email_key=email_key,
                        name=(name if name is not None else known_name).strip()[:200],
                        state=D.STOPPED if stopped else D.PENDING,
                        reason="stopped_manually" if stopped else None, updated_at=now)
    db.session.add(delivery)
    db.session.flush()
    participant = TriggerParticipant(issue_id=issue_id, delivery_id=delivery.id, contact_id=cid,
                                     idempotency_key=key, fields={**own, **extra}, created_at=now)
    db.session.add(participant)
    counters: dict[str, Any] = {"total": Issue.total + 1}
    if stopped:
        counters["stopped_count"] = Issue.stopped_count + 1
    db.session.execute(sa.update(Issue).where(Issue.id == issue_id).values(**counters))
    try:
        db.session.flush()
    except sa.exc.IntegrityError:
        # The same key arrived at the same moment from a retried call: that one counts.
        db.session.rollback()
        seen = _by_key(issue_id, key) if key is not None else None
        if seen is None:
            raise
        db.session.commit()
        return seen
    if stopped:
        record(issue_id, "participant_stopped", details={"delivery": delivery.id})
    db.session.commit()
    return Arrival(participant.id, delivery.id, delivery.state, delivery.reason, False,
                   live=issue.status == S.SENDING)


def _by_key(issue_id: int, key: str) -> Arrival | None:
    row = db.session.execute(
        sa.select(TriggerParticipant.id, Delivery.id, Delivery.state, Delivery.reason)
        .join(Delivery, Delivery.id == TriggerParticipant.delivery_id)
        .where(TriggerParticipant.issue_id == issue_id, TriggerParticipant.idempotency_key == key)).first()
    return Arrival(row[0], row[1], row[2], row[3], True) if row else None


def letter_fields(delivery_ids: list[int]) -> dict[str, dict[str, str]]:
    """The fields of claimed participants' letters, by the send loop's recipient key
    ("d<delivery id>": their deliveries have no contact)."""
    if not delivery_ids:
        return {}
    from .store import among

    rows = db.session.execute(sa.select(TriggerParticipant.delivery_id, TriggerParticipant.fields)
                              .where(among(TriggerParticipant.delivery_id, delivery_ids))).all()
    return {f"d{d}": {k: str(v) for k, v in (f or {}).items()} for d, f in rows}


def joined(list_id: int, contact_ids: list[int]) -> int:
    """Contacts that just joined a list: a participant of each live triggered mailing of
    that list that sends on joining (the idempotency key `join:<contact>` makes a contact
    who leaves and joins again one letter). Written in the caller's transaction, in bulk
    (an import may add thousands); the mailing's waiting runner, or the maintenance loop,
    finds them due within seconds of its commit. Returns how many were added."""
    if not contact_ids:
        return 0
    from .store import among

    live = db.session.scalars(
        sa.select(Issue.id).where(Issue.list_id == list_id, Issue.kind == TRIGGERED,
                                  Issue.trigger_on_join.is_(True),
                                  Issue.status.in_([S.SENDING, S.PAUSED]))).all()
    if not live:
        return 0
    people = db.session.execute(
        sa.select(Contact.id, Contact.email, Contact.email_key, Contact.name, Contact.phone, Contact.attributes)
        .where(among(Contact.id, contact_ids), Contact.email.is_not(None))).all()
    added, now = 0, utcnow()
    for issue_id in live:
        keys = [f"join:{p.id}" for p in people]
        seen = set(db.session.scalars(sa.select(TriggerParticipant.idempotency_key).where(
            TriggerParticipant.issue_id == issue_id, among(TriggerParticipant.idempotency_key, keys))))
        fresh = [p for p in people if f"join:{p.id}" not in seen]
        if not fresh:
            continue
        ids = db.session.scalars(
            sa.insert(Delivery).returning(Delivery.id, sort_by_parameter_order=True),
            [{"issue_id": issue_id, "contact_id": None, "email": p.email, "email_key": p.email_key,
              "name": p.name or "", "state": D.PENDING, "attempts": 0, "updated_at": now} for p in fresh]).all()
        db.session.execute(sa.insert(TriggerParticipant), [
            {"issue_id": issue_id, "delivery_id": d, "contact_id": p.id, "idempotency_key": f"join:{p.id}",
             "fields": {**{k: str(v) for k, v in (p.attributes or {}).items() if v is not None},
                        **({"phone": p.phone} if p.phone else {})}, "created_at": now}
            for d, p in zip(ids, fresh, strict=True)])
        db.session.execute(sa.update(Issue).where(Issue.id == issue_id).values(total=Issue.total + len(fresh)))
        added += len(fresh)
    return added
