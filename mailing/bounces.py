"""What comes back after the send: late bounces (delivery status notifications) and
complaints (ARF), matched to the delivery they are about and applied, or quarantined.

Three intakes feed `receive`: the Maildir the maintenance loop reads, the SMTP listener
(`flask bounces serve`) a bounce domain's MX points at, and `POST /api/v1/bounces`. A
report is ours only when it names a delivery we made: by the VERP return path it came back
to (mailing/verp.py) or by the original Message-ID it quotes; both carry a MAC, so a report
naming some address never unsubscribes or blocks anyone. Every message becomes one
`BounceReport` row (applied or quarantined with the reason), its SHA-256 makes a replay a
no-op, and a bad message is quarantined without stopping the ones after it.

Parsing: RFC 3464 reports (`multipart/report; report-type=delivery-status`, as Postfix,
Exim 4.9x, Gmail and most relays send) are read with the standard library: Action,
Status and Diagnostic-Code of the failed recipient. Anything else goes through
flufl.bounce (Mailman's detectors for the non-standard bounces real servers still send),
with the status code and the diagnostic line taken from its text. Complaints are RFC 5965
feedback reports.

Applying (`apply`, the one place every report passes): a hard bounce turns a `sent`
delivery into `bounced` (its first 250 stays; the report holds the DSN's status and
diagnostic, shown beside it) and moves the issue's counters in the same transaction; a
hard bounce, or soft bounces from `soft_bounce_limit` different issues within 30 days,
put the address in the system stop-list Undeliverable; a complaint puts it in
Unsubscribed from all. Hard bounces and complaints of an issue still sending count in
its rate window (lifecycle.late_report).
"""

from __future__ import annotations

import base64
import email
import email.policy
import hashlib
import logging
import quopri
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import timedelta
from email.message import Message
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from flask import current_app

from . import lifecycle, settings, verp, webhooks
from .enums import DeliveryState as D
from .extensions import db
from .models import BounceReport, Delivery, Issue, StopEntry, StopEvent, StopList, utcnow
from .sending.letter import message_id as make_message_id
from .stoplists import ensure_system_lists
from .store import among, dialect_insert

# A detector of flufl.bounce that trips over a broken message logs a traceback before the
# error reaches us; the message is quarantined with the reason, which is the record.
logging.getLogger("flufl.bounce").setLevel(logging.CRITICAL)

KEEP_RAW = 65_536  # octets of a quarantined report kept to show admins
SOFT_WINDOW = timedelta(days=30)
_PARSER = email.policy.compat32
_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_SMTP_LINE = re.compile(r"^.*\b[45]\d\d[ -].*$", re.MULTILINE)
_OUR_MID = re.compile(r"<outbox\.(\d{1,18})\.(d?\d{1,18})\.([0-9a-f]{16})@([^>\s]+)>", re.IGNORECASE)
_HEADER_MID = re.compile(r"^Message-I[Dd]:\s*(<[^>\r\n]+>)", re.MULTILINE)


class Unparseable(ValueError):
    """Not a report we can read; quarantined with this reason."""


@dataclass
class Parsed:
    kind: str  # hard | soft | complaint
    delivery_id: int | None = None  # from a VERP return path
    message_id: str | None = None  # the original letter's, as quoted
    status: str | None = None
    diagnostic: str | None = None


@dataclass
class Incoming:
    """One message to take in: its bytes, where it came from, and the SMTP envelope's
    recipients when it came over SMTP (the VERP address is there for certain)."""
    raw: bytes
    source: str
    rcpts: list[str] = field(default_factory=list)


@dataclass
class Outcome:
    digest: str
    outcome: str  # applied | quarantined | duplicate
    kind: str | None = None
    reason: str | None = None
    delivery_id: int | None = None


# --- parsing ------------------------------------------------------------------------------

def _text(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if payload is None:  # a message/* part: its sub-message as text
        inner = part.get_payload()
        if isinstance(inner, list):
            return "\n".join(m.as_string() for m in inner if isinstance(m, Message))
        return str(inner or "")
    return payload.decode(part.get_content_charset() or "utf-8", "replace")


def _dsn_fields(part: Message) -> list[dict[str, str]]:
    """The per-recipient blocks of a message/delivery-status part, names lower-cased."""
    inner = part.get_payload()
    blocks: list[Message] = inner if isinstance(inner, list) else []
    cte = str(part.get("Content-Transfer-Encoding") or "").strip().lower()
    if cte in ("base64", "quoted-printable") or not blocks:
        # Encoded (the parser then holds the encoded text as one block) or left as one
        # text by its generator: decode it and split the blocks ourselves.
        text = "".join(b.get_payload() for b in blocks if isinstance(b.get_payload(), str)) if blocks \
            else str(inner or "")
        if cte == "base64":
            text = base64.b64decode(text).decode("utf-8", "replace")
        elif cte == "quoted-printable":
            text = quopri.decodestring(text.encode()).decode("utf-8", "replace")
        blocks = [email.message_from_string(b, policy=_PARSER) for b in re.split(r"\r?\n\r?\n", text) if b.strip()]
    return [{k.lower(): str(v) for k, v in b.items()} for b in blocks[1:] or blocks]


def _quoted_message_id(msg: Message, text: str) -> str | None:
    for part in msg.walk():
        if part.get_content_type() in ("message/rfc822", "text/rfc822-headers"):
            inner = part.get_payload()
            if isinstance(inner, list) and inner and inner[0].get("Message-ID"):
                return str(inner[0]["Message-ID"]).strip()
            found = _HEADER_MID.search(_text(part))
            if found:
                return found.group(1)
    found = _OUR_MID.search(text)
    return found.group(0) if found else None


def _status_of(text: str) -> str | None:
    m = _STATUS.search(text)
    return m.group(0) if m else None


_DS_PART = re.compile(r"content-type:[ \t]*message/delivery-status[^\n]*\n(?:[^\n]*\S[^\n]*\n)*?\r?\n"
                      r"(.*?)(?:\n--|\Z)", re.IGNORECASE | re.DOTALL)
_FIELD = re.compile(r"^(action|status|diagnostic-code)[ \t]*:[ \t]*(.*)$", re.IGNORECASE)
_SUBJECT = re.compile(r"^subject:[ \t]*(.*)$", re.IGNORECASE | re.MULTILINE)


def _quick(raw: bytes) -> Parsed | None:
    """The common shapes without building a MIME tree (a tenth of the time): an RFC 3464
    report whose delivery-status part is plain text, or an ARF complaint. None sends the
    message to the full parse. Only our own Message-IDs are looked for, as only they can
    be matched (they carry a MAC)."""
    end = raw.find(b"\n\n") if raw.find(b"\r\n\r\n") < 0 else raw.find(b"\r\n\r\n")
    head = raw[:end if end > 0 else 4096].lower()
    if b"multipart/report" not in head:
        return None
    text = raw.decode("utf-8", "replace")
    ours = _OUR_MID.search(text)
    mid = ours.group(0) if ours else None
    if b"feedback-report" in head:
        subject = _SUBJECT.search(text[:end if end > 0 else 4096])
        return Parsed("complaint", message_id=mid, diagnostic=subject.group(1).strip()[:500] if subject else None)
    if b"delivery-status" not in head:
        return None
    part = _DS_PART.search(text)
    if part is None:
        return None
    for block in re.split(r"\r?\n[ \t]*\r?\n", part.group(1))[1:]:
        fields: dict[str, str] = {}
        last = None
        for line in block.splitlines():
            if line[:1] in (" ", "\t") and last:  # a folded field goes on
                fields[last] += " " + line.strip()
                continue
            m = _FIELD.match(line)
            last = m.group(1).lower() if m else None
            if m:
                fields[last] = m.group(2).strip()
        if "action" not in fields and "status" not in fields:
            continue
        return _failure(fields, mid)
    return None


def _failure(rcpt: dict[str, str], mid: str | None) -> Parsed | None:
    """One recipient block of a delivery report: a hard or soft bounce, or None when the
    block reports a success (delivered, relayed, expanded)."""
    action = rcpt.get("action", "").strip().lower()
    status = _status_of(rcpt.get("status", "")) or ""
    if action in ("delivered", "relayed", "expanded"):
        return None
    kind = "hard" if status.startswith("5") or (action == "failed" and not status.startswith("4")) else "soft"
    diagnostic = " ".join(rcpt.get("diagnostic-code", "").split()) or None
    if diagnostic and ";" in diagnostic[:10]:
        diagnostic = diagnostic.split(";", 1)[1].strip()  # "smtp; 550 ..." → "550 ..."
    return Parsed(kind, message_id=mid, status=status or None, diagnostic=(diagnostic or "")[:1000] or None)


def parse(raw: bytes) -> Parsed:
    """Read one report. Raises Unparseable when it is neither a bounce nor a complaint."""
    return _quick(raw) or _full(raw)


def _full(raw: bytes) -> Parsed:
    """The MIME parse: any encoding or structure, and flufl.bounce for the rest."""
    msg = email.message_from_bytes(raw, policy=_PARSER)
    whole = raw.decode("utf-8", "replace")
    if msg.get_content_type() == "multipart/report":
        report_type = (msg.get_param("report-type") or "").lower()
        if report_type == "feedback-report":
            return Parsed("complaint", message_id=_quoted_message_id(msg, whole),
                          diagnostic=str(msg.get("Subject") or "")[:500] or None)
        if report_type == "delivery-status":
            return _rfc3464(msg, whole)
    return _other(msg, whole)


def _rfc3464(msg: Message, whole: str) -> Parsed:
    for part in msg.walk():
        if part.get_content_type() != "message/delivery-status":
            continue
        for rcpt in _dsn_fields(part):
            found = _failure(rcpt, _quoted_message_id(msg, whole))
            if found is not None:
                return found
        raise Unparseable("a delivery report that names no failed recipient")
    raise Unparseable("a delivery report without a message/delivery-status part")


def _other(msg: Message, whole: str) -> Parsed:
    from flufl.bounce import all_failures  # loaded only for the non-standard shapes

    try:
        temporary, permanent = all_failures(msg)
    except Exception as exc:  # a detector tripping over a broken message
        raise Unparseable(f"not readable as a bounce ({type(exc).__name__})") from None
    body = "\n".join(_text(p) for p in msg.walk() if p.get_content_maintype() == "text")
    status = _status_of(body)
    if not permanent and not temporary and status is None:
        raise Unparseable("neither a delivery report nor a bounce any detector knows")
    soft = (not permanent and bool(temporary)) or (status or "").startswith("4")
    line = _SMTP_LINE.search(body)
    diagnostic = " ".join(line.group(0).split())[:1000] if line else None
    return Parsed("soft" if soft else "hard", message_id=_quoted_message_id(msg, whole),
                  status=status, diagnostic=diagnostic)


# --- matching ----------------------------------------------------------------------------

def _our_message_id(secret: bytes, mid: str | None) -> tuple[int, int | None, int | None] | None:
    """(issue id, contact id, delivery id) from one of our Message-IDs, checked by its MAC."""
    m = _OUR_MID.search(mid or "")
    if m is None:
        return None
    issue_id, key = int(m.group(1)), m.group(2)
    expected = make_message_id(secret, issue_id, key if key.startswith("d") else int(key), m.group(4))
    if expected.lower() != m.group(0).lower():
        return None
    return (issue_id, None, int(key[1:])) if key.startswith("d") else (issue_id, int(key), None)


@dataclass
class _Job:
    incoming: Incoming
    digest: str
    parsed: Parsed | None = None
    reason: str | None = None
    delivery: Any = None  # the matched row (id, issue_id, email_key, state)


def _clean(text: str | None) -> str | None:
    """Text as a database keeps it: PostgreSQL refuses NUL characters, which a hostile or
    broken report may hold."""
    return text.replace("\x00", "\ufffd") if text else text


def _digest(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def _read(job: _Job, secret: bytes, max_bytes: int) -> None:
    raw = job.incoming.raw
    if len(raw) > max_bytes:
        job.reason = f"too big: {len(raw):,} octets (the limit is {max_bytes:,})"
        return
    try:
        job.parsed = parse(raw)
    except Unparseable as exc:
        job.reason = str(exc)
        return
    except Exception as exc:  # any message at all must not stop the ones after it
        job.reason = f"unparseable ({type(exc).__name__})"
        return
    for rcpt in job.incoming.rcpts:
        job.parsed.delivery_id = job.parsed.delivery_id or verp.find(secret, rcpt)
    if job.parsed.delivery_id is None:
        head = raw[:8192].decode("utf-8", "replace")  # To:, Delivered-To:, X-Original-To:
        job.parsed.delivery_id = verp.find(secret, head)


def _match(jobs: list[_Job], secret: bytes) -> None:
    """Find each report's delivery in two bulk reads: by VERP id and by the (issue,
    contact) of a quoted Message-ID (the deliveries' unique index)."""
    d = Delivery.__table__.c
    cols = (d.id, d.issue_id, d.contact_id, d.email_key, d.state)
    by_id: dict[int, Any] = {}
    pairs: dict[tuple[int, int], list[_Job]] = defaultdict(list)
    for job in jobs:
        if job.parsed is None:
            continue
        if job.parsed.delivery_id is None:
            found = _our_message_id(secret, job.parsed.message_id)
            if found is None:
                continue
            issue_id, contact_id, delivery_id = found
            if delivery_id is not None:
                job.parsed.delivery_id = delivery_id
            else:
                pairs[(issue_id, contact_id)].append(job)
    ids = {j.parsed.delivery_id for j in jobs if j.parsed and j.parsed.delivery_id}
    if ids:
        for row in db.session.execute(sa.select(*cols).where(among(d.id, sorted(ids)))):
            by_id[row.id] = row
    if pairs:
        issues = sorted({i for i, _c in pairs})
        contacts = sorted({c for _i, c in pairs})
        for row in db.session.execute(sa.select(*cols).where(among(d.issue_id, issues),
                                                             among(d.contact_id, contacts))):
            for job in pairs.get((row.issue_id, row.contact_id), []):
                job.delivery = row
    for job in jobs:
        if job.parsed is not None and job.delivery is None and job.parsed.delivery_id:
            job.delivery = by_id.get(job.parsed.delivery_id)
        if job.parsed is not None and job.delivery is None and job.reason is None:
            job.reason = "names no delivery of ours (no valid VERP address or Message-ID)"


# --- applying ----------------------------------------------------------------------------

def receive(items: list[Incoming], *, keep_unreadable: bool = True) -> list[Outcome]:
    """Take in a batch of messages: each is applied or quarantined, once. Commits.
    `keep_unreadable=False` (the API): a message that is no report at all is answered
    as refused to its sender and not kept, so a refusal changes nothing.

    The report rows are written first, with the digest's unique index deciding what is
    new (INSERT … ON CONFLICT DO NOTHING RETURNING): only the reports that row went in for
    are applied, in the same transaction, so a replay, or the same report arriving through
    two intakes at once, is applied exactly once, without a look-up before."""
    cfg = current_app.config
    secret = cfg["SECRET_KEY"].encode()
    max_bytes = int(cfg.get("BOUNCE_MAX_BYTES") or 1_048_576)
    jobs = [_Job(i, _digest(i.raw)) for i in items]
    first: dict[str, _Job] = {}
    for job in jobs:
        first.setdefault(job.digest, job)
    fresh = list(first.values())
    for job in fresh:
        _read(job, secret, max_bytes)
    _match(fresh, secret)
    now = utcnow()
    rows = []
    refused: dict[str, Outcome] = {}
    for job in fresh:
        p = job.parsed
        ok = p is not None and job.delivery is not None
        if p is None and not keep_unreadable:
            refused[job.digest] = Outcome(job.digest, "refused", None, job.reason)
            continue
        rows.append({
            "digest": job.digest, "outcome": "applied" if ok else "quarantined",
            "kind": p.kind if p else None, "reason": None if ok else _clean((job.reason or "unknown")[:200]),
            "source": job.incoming.source, "delivery_id": job.delivery.id if ok else None,
            "issue_id": job.delivery.issue_id if ok else None, "email_key": job.delivery.email_key if ok else None,
            "status": _clean(p.status) if p else None, "diagnostic": _clean(p.diagnostic) if p else None,
            "raw": None if ok else _clean(job.incoming.raw[:KEEP_RAW].decode("utf-8", "replace")),
            "received_at": now})
    new = set(db.session.scalars(
        dialect_insert(BounceReport.__table__).on_conflict_do_nothing(index_elements=["digest"])
        .returning(BounceReport.__table__.c.digest), rows)) if rows else set()
    applied = [j for j in fresh if j.digest in new and j.parsed is not None and j.delivery is not None]
    apply(applied)
    db.session.commit()
    by_digest = {r["digest"]: r for r in rows}
    out = []
    for job in jobs:
        if job.digest in refused:
            out.append(refused[job.digest])
        elif job.digest not in new or first[job.digest] is not job:
            out.append(Outcome(job.digest, "duplicate"))
        else:
            r = by_digest[job.digest]
            out.append(Outcome(job.digest, r["outcome"], r["kind"], r["reason"], r["delivery_id"]))
    _count_late(applied)
    return out


def apply(jobs: list[_Job]) -> None:
    """Apply matched reports to their deliveries, stop-lists and issue counters, in the
    caller's transaction. Every applied report passes here."""
    if not jobs:
        return
    d = Delivery.__table__
    hard = [j for j in jobs if j.parsed.kind == "hard"]
    # A late hard bounce of a letter the relay had accepted: bounced now, counted once (the
    # UPDATE's own rows decide: a delivery already bounced is not counted again).
    if hard:
        moved = db.session.execute(
            sa.update(d).where(among(d.c.id, sorted({j.delivery.id for j in hard})), d.c.state == D.SENT)
            .values(state=D.BOUNCED, updated_at=utcnow()).returning(d.c.issue_id, d.c.id, d.c.email)).all()
        _tell_webhooks("bounced", moved, {j.delivery.id: j for j in hard})
        for issue_id, n in Counter(r.issue_id for r in moved).items():
            db.session.execute(sa.update(Issue).where(Issue.id == issue_id).values(
                sent_count=Issue.sent_count - n, bounced_count=Issue.bounced_count + n))
    undeliverable = {j.delivery.email_key for j in hard}
    soft_keys = {j.delivery.email_key for j in jobs if j.parsed.kind == "soft"}
    if soft_keys:
        undeliverable |= _soft_streaks(soft_keys, jobs)
    _stop("undeliverable", undeliverable, "bounce")
    _stop("unsubscribed", {j.delivery.email_key for j in jobs if j.parsed.kind == "complaint"}, "complaint")
    complaints = {j.delivery.id: j for j in jobs if j.parsed.kind == "complaint"}
    if complaints and webhooks.wanted([webhooks.RECIPIENT_EVENTS["complained"]]):
        rows = db.session.execute(sa.select(d.c.issue_id, d.c.id, d.c.email)
                                  .where(among(d.c.id, sorted(complaints)))).all()
        _tell_webhooks("complained", rows, complaints)


def _tell_webhooks(state: str, rows: Any, jobs: dict[int, _Job]) -> None:
    """Late bounces and complaints for the subscribed webhook endpoints, one event per
    issue and batch of reports (mailing/webhooks.py), with the report's status and text."""
    def reply(j: _Job) -> str | None:
        return " ".join(x for x in (j.parsed.status, j.parsed.diagnostic) if x) or None

    webhooks.recipients(state, [webhooks.recipient(delivery_id, issue_id, email, state, reply(jobs[delivery_id]))
                                for issue_id, delivery_id, email in sorted(rows, key=lambda r: r[1])])


def _soft_streaks(keys: set[str], jobs: list[_Job]) -> set[str]:
    """Addresses whose soft bounces now come from `soft_bounce_limit` different issues
    within SOFT_WINDOW: a mailbox that keeps refusing for a month is gone."""
    limit = int(settings.get("soft_bounce_limit"))
    if limit <= 0:
        return set()
    r = BounceReport.__table__.c
    earlier = db.session.execute(
        sa.select(r.email_key, r.issue_id).distinct()
        .where(r.email_key.in_(sorted(keys)), r.kind == "soft", r.outcome == "applied",
               r.received_at > utcnow() - SOFT_WINDOW)).all()
    issues: dict[str, set[int]] = defaultdict(set)
    for key, issue_id in earlier:
        issues[key].add(issue_id)
    for j in jobs:
        if j.parsed.kind == "soft":
            issues[j.delivery.email_key].add(j.delivery.issue_id)
    return {k for k in keys if len(issues[k]) >= limit}


def _stop(code: str, keys: set[str], source: str) -> None:
    """Put these address keys in a system list (each once) and journal the additions."""
    keys = {k for k in keys if k}
    if not keys:
        return
    stop = db.session.scalar(sa.select(StopList).where(StopList.code == code))
    if stop is None:
        ensure_system_lists()
        db.session.flush()
        stop = db.session.scalar(sa.select(StopList).where(StopList.code == code))
    e = StopEntry.__table__.c
    # A plain IN list: with `= ANY(:array)` PostgreSQL's generic plan for this statement
    # scanned the whole list's entries (measured: 34 ms a batch, against 2 ms).
    there = set(db.session.scalars(sa.select(e.value).where(e.list_id == stop.id, e.sender_id.is_(None),
                                                            e.value.in_(sorted(keys)))))
    new = sorted(keys - there)
    if not new:
        return
    now = utcnow()
    _insert_rows(StopEntry.__table__, [
        {"list_id": stop.id, "kind": "email", "value": k, "sender_id": None, "source": source, "created_at": now}
        for k in new])
    _insert_rows(StopEvent.__table__, [
        {"list_id": stop.id, "action": "add", "value": k, "sender_id": None, "source": source,
         "actor_label": source, "created_at": now} for k in new])


def _insert_rows(table: sa.Table, rows: list[dict[str, Any]]) -> None:
    """A Core executemany on the table: SQLAlchemy batches the rows into multi-row INSERTs
    from one cached statement ("insertmanyvalues"), without the ORM's per-row work."""
    if rows:
        db.session.execute(sa.insert(table), rows)


def _count_late(applied: list[_Job]) -> None:
    """Hard bounces and complaints of issues still sending count in their rate windows."""
    per_issue: dict[int, Counter[str]] = defaultdict(Counter)
    for j in applied:
        if j.parsed.kind in ("hard", "complaint"):
            per_issue[j.delivery.issue_id][j.parsed.kind] += 1
    for issue_id, n in per_issue.items():
        lifecycle.late_report(issue_id, bounced=n["hard"], complained=n["complaint"])


# --- intakes -------------------------------------------------------------------------------

def receive_one(raw: bytes, source: str, rcpts: list[str] | None = None, *, keep_unreadable: bool = True) -> Outcome:
    return receive([Incoming(raw, source, rcpts or [])], keep_unreadable=keep_unreadable)[0]


def scan_maildir(path: str, batch: int = 500) -> int:
    """Reports dropped in a watched Maildir's new/: each is taken in once and moved to cur/
    (applied and quarantined alike: the database row is the record), in batches, so a
    report is never read twice and a bad one never stops the ones after it."""
    new, cur = Path(path or "") / "new", Path(path or "") / "cur"
    if not path or not new.is_dir():
        return 0
    cur.mkdir(exist_ok=True)
    files = sorted(p for p in new.iterdir() if p.is_file() and not p.name.startswith("."))
    for start in range(0, len(files), batch):
        chunk = files[start:start + batch]
        receive([Incoming(f.read_bytes(), "maildir") for f in chunk])
        for f in chunk:  # Maildir's "seen" flag, as a mail reader would leave it
            f.rename(cur / (f.name if ":2," in f.name else f.name + ":2,S"))
    return len(files)
