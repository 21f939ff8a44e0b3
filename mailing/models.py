"""Database models: users, contacts and lists, senders, issues, deliveries, journal, stop-lists."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import sqlalchemy as sa
import sqlalchemy.orm as so
from flask_login import UserMixin
from werkzeug.security import check_password_hash, generate_password_hash

from .addresses import key_of
from .enums import DeliveryState, IssueStatus, Role
from .extensions import db


def utcnow() -> datetime:
    """Naive UTC timestamps: SQLite and PostgreSQL compare them alike."""
    return datetime.now(UTC).replace(tzinfo=None)




class User(UserMixin, db.Model):
    __tablename__ = "users"
    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    email: so.Mapped[str] = so.mapped_column(sa.String(254), unique=True)
    password_hash: so.Mapped[str] = so.mapped_column(sa.String(256))
    role: so.Mapped[str] = so.mapped_column(sa.String(16), default=Role.EDITOR)
    locale: so.Mapped[str | None] = so.mapped_column(sa.String(8))
    time_zone: so.Mapped[str | None] = so.mapped_column(sa.String(64))  # IANA name; None: not known yet
    created_at: so.Mapped[datetime] = so.mapped_column(default=utcnow)
    # Part of every session cookie (see get_id); raising it ends every session made before.
    session_version: so.Mapped[int] = so.mapped_column(default=1, server_default="1")
    # A disabled user cannot log in, and their sessions and API tokens stop working.
    disabled_at: so.Mapped[datetime | None]

    def set_password(self, password: str) -> None:
        self.password_hash = generate_password_hash(password)

    def check_password(self, password: str) -> bool:
        return check_password_hash(self.password_hash, password)

    def has_role(self, *roles: str) -> bool:
        return self.role in roles

    @property
    def is_active(self) -> bool:  # Flask-Login refuses to log in an inactive user
        return self.disabled_at is None

    def get_id(self) -> str:
        """What Flask-Login keeps in the session: the id and the session version, so that a
        copied cookie stops working once the version moves (logout, password change, ...)."""
        return f"{self.id}.{self.session_version}"

    def end_sessions(self) -> None:
        """Invalidate every session cookie issued so far; the caller commits."""
        self.session_version = (self.session_version or 0) + 1


class ApiToken(db.Model):
    """A personal API token; only its SHA-256 is stored."""

    __tablename__ = "api_tokens"
    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    user_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"))
    name: so.Mapped[str] = so.mapped_column(sa.String(100))
    token_hash: so.Mapped[str] = so.mapped_column(sa.String(64), unique=True)
    created_at: so.Mapped[datetime] = so.mapped_column(default=utcnow)
    revoked_at: so.Mapped[datetime | None]
    last_used_at: so.Mapped[datetime | None]
    # Optional: after this moment the API answers 401.
    expires_at: so.Mapped[datetime | None]
    # A read-only token may only GET.
    read_only: so.Mapped[bool] = so.mapped_column(default=False, server_default=sa.false())
    user: so.Mapped[User] = so.relationship()

    @property
    def expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= utcnow()


list_members = sa.Table(
    "list_members",
    db.metadata,
    sa.Column("list_id", sa.ForeignKey("contact_lists.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("contact_id", sa.ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True),
)


def _email_key_default(context: Any) -> str | None:
    """Rows inserted with an address get its key (bulk inserts included); code that
    changes an address sets both."""
    email = context.get_current_parameters().get("email")
    return key_of(email) if email else None


class Contact(db.Model):
    __tablename__ = "contacts"
    __table_args__ = (sa.Index("ix_contacts_email_key", "email_key", unique=True),)
    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    # The address as given (what we send to) and its match key (who the person is:
    # mailing.addresses); every comparison of people goes through the key. One key has
    # one address, so the address stays unique too.
    email: so.Mapped[str | None] = so.mapped_column(sa.String(254), unique=True)
    email_key: so.Mapped[str | None] = so.mapped_column(sa.String(254), default=_email_key_default)
    phone: so.Mapped[str | None] = so.mapped_column(sa.String(20), index=True)
    name: so.Mapped[str] = so.mapped_column(sa.String(200), default="")
    attributes: so.Mapped[dict[str, Any]] = so.mapped_column(sa.JSON, default=dict)
    created_at: so.Mapped[datetime] = so.mapped_column(default=utcnow)


class ContactField(db.Model):
    """A custom contact field seen in the contact base (an extra CSV column): the names a
    letter's placeholders may use besides the built-in ones."""

    __tablename__ = "contact_fields"
    name: so.Mapped[str] = so.mapped_column(sa.String(64), primary_key=True)
    created_at: so.Mapped[datetime] = so.mapped_column(default=utcnow)


class ContactList(db.Model):
    __tablename__ = "contact_lists"
    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    name: so.Mapped[str] = so.mapped_column(sa.String(200), unique=True)
    created_at: so.Mapped[datetime] = so.mapped_column(default=utcnow)

    def size(self) -> int:
        return db.session.scalar(
            sa.select(sa.func.count()).select_from(list_members).where(list_members.c.list_id == self.id)
        ) or 0


class Sender(db.Model):
    __tablename__ = "senders"
    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    name: so.Mapped[str] = so.mapped_column(sa.String(200))
    email: so.Mapped[str] = so.mapped_column(sa.String(254), unique=True)
    # The sender's own relay (mailing/relays.py); NULL: the default relay (SMTP_URL). The URL
    # with its credentials is sealed (mailing/secretbox.py) and never shown back.
    relay_url_sealed: so.Mapped[str | None] = so.mapped_column(sa.Text)
    relay_tls: so.Mapped[str | None] = so.mapped_column(sa.String(16))  # starttls | tls | none
    relay_rate_per_second: so.Mapped[int | None]  # the own relay's cap; NULL: the global setting

    @property
    def domain(self) -> str:
        return self.email.rsplit("@", 1)[-1]


class Issue(db.Model):
    __tablename__ = "issues"
    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    subject: so.Mapped[str] = so.mapped_column(sa.String(300))
    body_html: so.Mapped[str] = so.mapped_column(sa.Text, default="")
    # The plain-text part as the editor wrote it; empty means generated from the HTML.
    body_text: so.Mapped[str] = so.mapped_column(sa.Text, default="")
    preheader: so.Mapped[str] = so.mapped_column(sa.String(300), default="")
    from_name: so.Mapped[str] = so.mapped_column(sa.String(200), default="")  # empty: the sender's
    reply_to: so.Mapped[str] = so.mapped_column(sa.String(254), default="")
    custom_headers: so.Mapped[str] = so.mapped_column(sa.Text, default="")  # "Name: value" lines
    sender_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("senders.id"))
    list_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("contact_lists.id"))
    # Written only by mailing.states.transition().
    status: so.Mapped[str] = so.mapped_column(sa.String(16), default=IssueStatus.DRAFT, index=True)
    status_reason: so.Mapped[str | None] = so.mapped_column(sa.Text)
    created_by_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("users.id"))
    launched_by_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("users.id"))
    created_at: so.Mapped[datetime] = so.mapped_column(default=utcnow)
    updated_at: so.Mapped[datetime] = so.mapped_column(default=utcnow)
    send_at: so.Mapped[datetime | None]  # when a scheduled or accepted issue starts
    launched_at: so.Mapped[datetime | None]
    started_at: so.Mapped[datetime | None]
    finished_at: so.Mapped[datetime | None]
    # Spread over time: `spread_size` recipients every `spread_interval` seconds.
    spread_size: so.Mapped[int | None]
    spread_interval: so.Mapped[int | None]
    spread_hours: so.Mapped[float | None]  # or: evenly over this many hours (size set at launch)
    released: so.Mapped[bool] = so.mapped_column(default=False)  # "send whole" ignores the spread
    settings: so.Mapped[dict[str, Any]] = so.mapped_column(sa.JSON, default=dict)  # in force at launch
    # Progress counters, moved by the sending engine in the same transaction as the
    # deliveries they count, so a poll reads one row instead of scanning deliveries.
    total: so.Mapped[int] = so.mapped_column(default=0)
    sent_count: so.Mapped[int] = so.mapped_column(default=0)
    bounced_count: so.Mapped[int] = so.mapped_column(default=0)
    failed_count: so.Mapped[int] = so.mapped_column(default=0)
    suppressed_count: so.Mapped[int] = so.mapped_column(default=0)
    stopped_count: so.Mapped[int] = so.mapped_column(default=0)
    last_reply: so.Mapped[str | None] = so.mapped_column(sa.Text)
    # A chain (mailing/chains.py): a step follows `chain_parent_id` once it is Sent, after
    # `chain_delay_seconds` or at `chain_at`, to the audience `chain_audience` (all | sent
    # | not_reached, of the previous step). Every step of a chain, the first too, has the
    # first's id in `chain_root_id` and its place in `chain_step` (1, 2, ...): steps are only
    # appended, and deleting one deletes the later ones, so places never need renumbering.
    chain_parent_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("issues.id"))
    chain_root_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("issues.id"), index=True)
    chain_step: so.Mapped[int | None]
    chain_delay_seconds: so.Mapped[int | None]
    chain_at: so.Mapped[datetime | None]
    chain_audience: so.Mapped[str | None] = so.mapped_column(sa.String(16))
    # Resent from an earlier issue to its whole list again ("all") or to those it did not
    # reach ("not_reached"); the original's bounced recipients are left out either way.
    resent_from_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("issues.id", ondelete="SET NULL"))
    resend_audience: so.Mapped[str | None] = so.mapped_column(sa.String(16))
    # Why an Interrupted issue stopped, when it decides who may resume it: "rates" (its
    # bounce or complaint rate: an admin resumes, with a comment), "package" (the letter
    # package ran out: anyone may resume after a top-up). None for relay errors and the like.
    interrupt_kind: so.Mapped[str | None] = so.mapped_column(sa.String(16))
    # "issue": one send to its list. "triggered" (mailing/triggers.py): once launched it
    # stays live and sends one letter to each participant as it arrives (through the API,
    # or, with `trigger_on_join`, each contact who joins its list).
    kind: so.Mapped[str] = so.mapped_column(sa.String(16), default="issue", server_default="issue")
    trigger_on_join: so.Mapped[bool] = so.mapped_column(default=False, server_default=sa.false())
    # Letters assembled from materials (mailing/materials.py): the template last used, and
    # the sections whose recent materials the assembly offers first.
    template_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("letter_templates.id", ondelete="SET NULL"))
    sections: so.Mapped[list[Section]] = so.relationship(secondary="issue_sections", order_by="Section.name")

    sender: so.Mapped[Sender | None] = so.relationship()
    contact_list: so.Mapped[ContactList | None] = so.relationship()
    created_by: so.Mapped[User | None] = so.relationship(foreign_keys=[created_by_id])

    @property
    def done(self) -> int:
        return (
            self.sent_count + self.bounced_count + self.failed_count
            + self.suppressed_count + self.stopped_count
        )

    @property
    def remaining(self) -> int:
        return max(self.total - self.done, 0)

    @property
    def sendable(self) -> int:
        """Recipients a letter can go to: the stop-listed ones are never sent to."""
        return max(self.total - self.suppressed_count, 0)

    @property
    def percent(self) -> int:
        """Progress among the sendable recipients, so that stop-listed ones never look like
        letters already sent (a list with 5 % stop-listed does not start at 5 %)."""
        handled = self.done - self.suppressed_count
        return 100 if not self.sendable else min(int(handled * 100 / self.sendable), 100)


class Delivery(db.Model):
    """One recipient of one issue."""

    __tablename__ = "deliveries"
    __table_args__ = (
        sa.UniqueConstraint("issue_id", "contact_id", name="uq_deliveries_issue_contact"),
        sa.Index("ix_deliveries_issue_state", "issue_id", "state", "id"),
        sa.Index("ix_deliveries_email_key", "email_key"),
    )
    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    # No foreign keys here, on purpose: deliveries are only ever written by the launch's
    # INSERT … SELECT from the issue's list, so both ids are right by construction, and
    # PostgreSQL's per-row FK checks (a locking probe into contacts and issues for every
    # recipient) were 40 % of a million-recipient launch. Deleting a contact clears its
    # contact_id (mailing.contacts.delete_contact); issues with deliveries are never deleted.
    issue_id: so.Mapped[int]
    contact_id: so.Mapped[int | None]
    email: so.Mapped[str] = so.mapped_column(sa.String(254))  # as given: what we send to
    email_key: so.Mapped[str] = so.mapped_column(sa.String(254), default=_email_key_default)  # who it is
    name: so.Mapped[str] = so.mapped_column(sa.String(200), default="")
    state: so.Mapped[str] = so.mapped_column(sa.String(20), default=DeliveryState.PENDING)
    attempts: so.Mapped[int] = so.mapped_column(default=0)
    lease_owner: so.Mapped[str | None] = so.mapped_column(sa.String(80))
    lease_until: so.Mapped[datetime | None]
    next_attempt_at: so.Mapped[datetime | None]
    reply_code: so.Mapped[int | None]
    reply_enhanced: so.Mapped[str | None] = so.mapped_column(sa.String(16))
    reply_text: so.Mapped[str | None] = so.mapped_column(sa.Text)
    reason: so.Mapped[str | None] = so.mapped_column(sa.String(200))  # e.g. the stop-list's name
    message_id: so.Mapped[str | None] = so.mapped_column(sa.String(200))
    sent_at: so.Mapped[datetime | None]
    updated_at: so.Mapped[datetime | None]

    issue: so.Mapped[Issue] = so.relationship(primaryjoin="Issue.id == foreign(Delivery.issue_id)")


class JournalEvent(db.Model):
    """The job journal: who did what to which issue, written with the change it records."""

    __tablename__ = "journal_events"
    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    # A deleted issue's rows stay (issue_id goes NULL) and keep its subject in issue_title.
    issue_id: so.Mapped[int | None] = so.mapped_column(
        sa.ForeignKey("issues.id", ondelete="SET NULL"), index=True
    )
    issue_title: so.Mapped[str | None] = so.mapped_column(sa.String(300))
    actor_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("users.id"))
    actor_label: so.Mapped[str] = so.mapped_column(sa.String(254), default="system")
    event: so.Mapped[str] = so.mapped_column(sa.String(40), index=True)
    from_status: so.Mapped[str | None] = so.mapped_column(sa.String(16))
    to_status: so.Mapped[str | None] = so.mapped_column(sa.String(16))
    reason: so.Mapped[str | None] = so.mapped_column(sa.Text)
    details: so.Mapped[dict[str, Any]] = so.mapped_column(sa.JSON, default=dict)
    created_at: so.Mapped[datetime] = so.mapped_column(default=utcnow, index=True)

    issue: so.Mapped[Issue | None] = so.relationship()


class StopList(db.Model):
    __tablename__ = "stop_lists"
    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    # System lists have a code and cannot be deleted or renamed.
    code: so.Mapped[str | None] = so.mapped_column(sa.String(40), unique=True)
    name: so.Mapped[str] = so.mapped_column(sa.String(200))
    created_at: so.Mapped[datetime] = so.mapped_column(default=utcnow)

    @property
    def system(self) -> bool:
        return self.code is not None


class StopEntry(db.Model):
    __tablename__ = "stop_entries"
    __table_args__ = (
        sa.UniqueConstraint("list_id", "value", "sender_id", name="uq_stop_entries_list_value_sender"),
        sa.Index("ix_stop_entries_value", "value"),
    )
    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    list_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("stop_lists.id", ondelete="CASCADE"))
    kind: so.Mapped[str] = so.mapped_column(sa.String(8))  # "email" or "phone"
    value: so.Mapped[str] = so.mapped_column(sa.String(254))  # an address's match key, or an E.164 phone
    sender_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("senders.id", ondelete="CASCADE"))
    source: so.Mapped[str] = so.mapped_column(sa.String(20), default="ui")
    created_by_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("users.id"))
    created_at: so.Mapped[datetime] = so.mapped_column(default=utcnow)


class StopEvent(db.Model):
    """Who added or removed which stop-list entry, when and how (ui, api, link, import, ...)."""

    __tablename__ = "stop_events"
    __table_args__ = (sa.Index("ix_stop_events_list_action_time", "list_id", "action", "created_at"),)
    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    list_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("stop_lists.id", ondelete="CASCADE"))
    action: so.Mapped[str] = so.mapped_column(sa.String(10))  # add | remove
    value: so.Mapped[str] = so.mapped_column(sa.String(254))
    sender_id: so.Mapped[int | None]
    source: so.Mapped[str] = so.mapped_column(sa.String(20))
    actor_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("users.id"))
    actor_label: so.Mapped[str] = so.mapped_column(sa.String(254), default="system")
    created_at: so.Mapped[datetime] = so.mapped_column(default=utcnow)


class UploadJob:
    """What every uploaded file worked through by an RQ job has: where it is, how far the
    job read it (the progress bar), the per-line report and how it ended."""

    path: so.Mapped[str] = so.mapped_column(sa.String(500))
    filename: so.Mapped[str] = so.mapped_column(sa.String(300), default="")
    state: so.Mapped[str] = so.mapped_column(sa.String(12), default="queued")  # queued|running|done|failed
    size_bytes: so.Mapped[int] = so.mapped_column(sa.BigInteger, default=0)
    read_bytes: so.Mapped[int] = so.mapped_column(sa.BigInteger, default=0)
    rejected: so.Mapped[list[Any]] = so.mapped_column(sa.JSON, default=list)  # [line, text, reason], capped
    rejected_count: so.Mapped[int] = so.mapped_column(default=0)
    error: so.Mapped[str | None] = so.mapped_column(sa.Text)
    created_by_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("users.id"))
    created_at: so.Mapped[datetime] = so.mapped_column(default=utcnow)
    finished_at: so.Mapped[datetime | None]

    @property
    def percent(self) -> int:
        """Read share of the file; 100 only once the job says it is done."""
        if self.state == "done":
            return 100
        return min(int(self.read_bytes * 100 / self.size_bytes), 99) if self.size_bytes else 0


class ContactImport(UploadJob, db.Model):
    """A CSV import into a list, run by an RQ job; its counters are the progress bar."""

    __tablename__ = "contact_imports"
    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    list_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("contact_lists.id", ondelete="CASCADE"))
    imported: so.Mapped[int] = so.mapped_column(default=0)
    updated: so.Mapped[int] = so.mapped_column(default=0)
    skipped: so.Mapped[int] = so.mapped_column(default=0)


class Setting(db.Model):
    """Admin settings changeable at run time (launch delay, edit lock, ...)."""

    __tablename__ = "settings"
    key: so.Mapped[str] = so.mapped_column(sa.String(60), primary_key=True)
    value: so.Mapped[Any] = so.mapped_column(sa.JSON)


class StopListImport(UploadJob, db.Model):
    """A stop-list CSV too large for one web request, added by an RQ job in chunks; its
    counters are the progress bar and `rejected` the per-line report."""

    __tablename__ = "stop_list_imports"
    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    list_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("stop_lists.id", ondelete="CASCADE"), index=True)
    lines: so.Mapped[int] = so.mapped_column(default=0)
    added: so.Mapped[int] = so.mapped_column(default=0)
    already: so.Mapped[int] = so.mapped_column(default=0)


class DomainGroup(db.Model):
    """Receiving domains paced together (one mailbox provider), and their limit per
    relay. The catch-all row ("everyone else") has no domains: its limit applies to
    each other domain on its own."""

    __tablename__ = "domain_groups"
    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    name: so.Mapped[str] = so.mapped_column(sa.String(60), unique=True)
    # One per line: a domain ("gmail.com") or a name with any suffix ("hotmail.*").
    domains: so.Mapped[str] = so.mapped_column(sa.Text, default="")
    rate_per_second: so.Mapped[float] = so.mapped_column(sa.Float, default=0.0)  # 0: no limit
    catch_all: so.Mapped[bool] = so.mapped_column(default=False, server_default=sa.false())
    position: so.Mapped[int] = so.mapped_column(default=0)


class SenderWarmup(db.Model):
    """A new sender's daily cap: `start` letters on the first day, × `factor` each day."""

    __tablename__ = "sender_warmups"
    sender_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("senders.id", ondelete="CASCADE"), primary_key=True)
    start: so.Mapped[int] = so.mapped_column(default=500)
    factor: so.Mapped[float] = so.mapped_column(sa.Float, default=1.5)
    started_on: so.Mapped[date]


class DkimKey(db.Model):
    """A DKIM signing key of one sender domain (mailing/dkim.py). Letters are signed with the
    domain's active key of each algorithm; a new key waits inactive until its DNS record is
    published and an admin switches to it. The private key is sealed (mailing/secretbox.py)
    and never shown back; the public key is what the TXT record publishes."""

    __tablename__ = "dkim_keys"
    __table_args__ = (
        sa.UniqueConstraint("domain", "selector", name="uq_dkim_keys_domain_selector"),
        sa.Index("ix_dkim_keys_domain_active", "domain", "active"),
    )
    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    domain: so.Mapped[str] = so.mapped_column(sa.String(253))  # lowercase, IDNA A-label
    selector: so.Mapped[str] = so.mapped_column(sa.String(63))
    algorithm: so.Mapped[str] = so.mapped_column(sa.String(16))  # rsa-sha256 | ed25519-sha256
    private_key_sealed: so.Mapped[str] = so.mapped_column(sa.Text)
    public_key: so.Mapped[str] = so.mapped_column(sa.Text)  # base64, the record's p= value
    created_at: so.Mapped[datetime] = so.mapped_column(default=utcnow)
    active: so.Mapped[bool] = so.mapped_column(default=False, server_default=sa.false())


class LetterPackage(db.Model):
    """The account's balance of letters (one row, id 1), used when the `package_unlimited`
    setting is off. A unit is taken when a recipient is claimed for sending and kept while
    the recipient is in `sending`; it is spent when the relay answers (sent or bounced) and
    comes back otherwise (deferred, failed, suppressed, released, stopped). So at every
    commit: balance + recipients in `sending` of metered issues = top-ups − letters spent,
    and a runner that dies hands its units on with its rows to whoever claims them next."""

    __tablename__ = "letter_package"
    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    balance: so.Mapped[int] = so.mapped_column(sa.BigInteger, default=0)
    __table_args__ = (sa.CheckConstraint("balance >= 0", name="balance"),)


class TriggerParticipant(db.Model):
    """One arrival at a triggered mailing: the delivery it became, the caller's idempotency
    key (the same key twice is one letter) and the fields for its letter. The delivery has
    no contact (a person may take part many times), so the fields live here."""

    __tablename__ = "trigger_participants"
    __table_args__ = (sa.UniqueConstraint("issue_id", "idempotency_key", name="uq_trigger_participants_key"),)
    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    issue_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("issues.id", ondelete="CASCADE"))
    delivery_id: so.Mapped[int] = so.mapped_column(unique=True)
    contact_id: so.Mapped[int | None]
    idempotency_key: so.Mapped[str | None] = so.mapped_column(sa.String(200))
    fields: so.Mapped[dict[str, Any]] = so.mapped_column(sa.JSON, default=dict)
    created_at: so.Mapped[datetime] = so.mapped_column(default=utcnow)


class BounceReport(db.Model):
    """One report that came back after the send (mailing/bounces.py): a delivery status
    notification (a late bounce, hard or soft) or a complaint (ARF), applied to its
    delivery, or quarantined with the reason. Nothing is dropped silently: every message
    received is a row, and its digest (SHA-256 of the bytes) makes a replay a no-op."""

    __tablename__ = "bounce_reports"
    __table_args__ = (
        sa.Index("ix_bounce_reports_issue_received", "issue_id", "received_at"),
        sa.Index("ix_bounce_reports_key_kind", "email_key", "kind"),
        sa.Index("ix_bounce_reports_outcome_id", "outcome", "id"),
    )
    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    digest: so.Mapped[str] = so.mapped_column(sa.String(64), unique=True)
    outcome: so.Mapped[str] = so.mapped_column(sa.String(16))  # applied | quarantined
    kind: so.Mapped[str | None] = so.mapped_column(sa.String(16))  # hard | soft | complaint
    reason: so.Mapped[str | None] = so.mapped_column(sa.String(200))  # why it was quarantined
    source: so.Mapped[str] = so.mapped_column(sa.String(16))  # smtp | maildir | api
    delivery_id: so.Mapped[int | None]
    issue_id: so.Mapped[int | None]
    email_key: so.Mapped[str | None] = so.mapped_column(sa.String(254))
    status: so.Mapped[str | None] = so.mapped_column(sa.String(16))  # the enhanced status, 5.1.1
    diagnostic: so.Mapped[str | None] = so.mapped_column(sa.Text)
    raw: so.Mapped[str | None] = so.mapped_column(sa.Text)  # kept for quarantined reports only
    received_at: so.Mapped[datetime] = so.mapped_column(default=utcnow)


class Section(db.Model):
    """A section of the materials library (news, articles, events, ...)."""

    __tablename__ = "sections"
    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    name: so.Mapped[str] = so.mapped_column(sa.String(100), unique=True)


issue_sections = sa.Table(
    "issue_sections",
    db.metadata,
    sa.Column("issue_id", sa.ForeignKey("issues.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("section_id", sa.ForeignKey("sections.id", ondelete="CASCADE"), primary_key=True),
)


class Material(db.Model):
    """One piece a letter can be assembled from (seed 002): its body is sanitised HTML."""

    __tablename__ = "materials"
    __table_args__ = (sa.Index("ix_materials_section_published", "section_id", "published_at"),)
    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    section_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("sections.id", ondelete="CASCADE"))
    title: so.Mapped[str] = so.mapped_column(sa.String(300))
    summary: so.Mapped[str] = so.mapped_column(sa.Text, default="")
    body_html: so.Mapped[str] = so.mapped_column(sa.Text, default="")
    link: so.Mapped[str] = so.mapped_column(sa.String(2000), default="")
    image_url: so.Mapped[str] = so.mapped_column(sa.String(2000), default="")
    published_at: so.Mapped[datetime] = so.mapped_column(default=utcnow)
    created_by_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("users.id", ondelete="SET NULL"))

    section: so.Mapped[Section] = so.relationship()


class LetterTemplate(db.Model):
    """A letter's frame with a `{{ materials }}` block where the chosen materials go.
    Shipped templates are read-only: editors copy one to change it."""

    __tablename__ = "letter_templates"
    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    name: so.Mapped[str] = so.mapped_column(sa.String(100), unique=True)
    html: so.Mapped[str] = so.mapped_column(sa.Text)
    shipped: so.Mapped[bool] = so.mapped_column(default=False, server_default=sa.false())


# --- webhooks (mailing/webhooks.py) ------------------------------------------------------

class WebhookEndpoint(db.Model):
    """A URL an admin registered to be told of events. Its signing secret is sealed
    (mailing/secretbox.py) and shown once, when made or rolled; an endpoint that keeps
    failing is switched off (`disabled_at`, with a journal event)."""

    __tablename__ = "webhook_endpoints"
    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    url: so.Mapped[str] = so.mapped_column(sa.String(2000))
    events: so.Mapped[list[str]] = so.mapped_column(sa.JSON, default=list)  # event types it subscribes to
    secret_sealed: so.Mapped[str] = so.mapped_column(sa.Text)
    enabled: so.Mapped[bool] = so.mapped_column(default=True, server_default=sa.true())
    consecutive_failures: so.Mapped[int] = so.mapped_column(default=0, server_default="0")
    disabled_at: so.Mapped[datetime | None]
    disabled_reason: so.Mapped[str | None] = so.mapped_column(sa.String(200))
    created_by_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("users.id", ondelete="SET NULL"))
    created_at: so.Mapped[datetime] = so.mapped_column(default=utcnow)


class WebhookEvent(db.Model):
    """The transactional outbox: one event for one endpoint, written in the transaction of
    the change it tells of, and marked delivered once the endpoint answered 2xx. No foreign
    key on the endpoint, on purpose: an endpoint deleted while a send flush writes its
    event must not fail the flush (deleting an endpoint deletes its events itself)."""

    __tablename__ = "webhook_events"
    __table_args__ = (sa.Index("ix_webhook_events_endpoint_pending", "endpoint_id", "delivered_at", "id"),)
    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    endpoint_id: so.Mapped[int]
    type: so.Mapped[str] = so.mapped_column(sa.String(40))
    payload: so.Mapped[dict[str, Any]] = so.mapped_column(sa.JSON, default=dict)
    created_at: so.Mapped[datetime] = so.mapped_column(default=utcnow)
    delivered_at: so.Mapped[datetime | None]
    attempts: so.Mapped[int] = so.mapped_column(default=0, server_default="0")


class WebhookAttempt(db.Model):
    """One POST to an endpoint, for the admin page's log: what it carried and what came
    back (the start of the response only). Never holds the secret or the signature."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (sa.Index("ix_webhook_attempts_endpoint_at", "endpoint_id", "at"),)
    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    endpoint_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("webhook_endpoints.id", ondelete="CASCADE"))
    event_ids: so.Mapped[list[int]] = so.mapped_column(sa.JSON, default=list)
    event_count: so.Mapped[int] = so.mapped_column(default=0)
    status_code: so.Mapped[int | None]
    response: so.Mapped[str | None] = so.mapped_column(sa.Text)  # the first bytes of the body
    error: so.Mapped[str | None] = so.mapped_column(sa.String(300))
    duration_ms: so.Mapped[int] = so.mapped_column(default=0)
    at: so.Mapped[datetime] = so.mapped_column(default=utcnow)
