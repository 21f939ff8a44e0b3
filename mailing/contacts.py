"""Contacts and lists: search, edit, and CSV import with upserts in batches."""

from __future__ import annotations

import csv
import io
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from email_validator import EmailNotValidError
from flask_babel import gettext as _

from . import queueing, stoplists, triggers, uploads
from .addresses import email_key, is_valid_email, normalise_key, search_form
from .extensions import checkpoint_wal, db
from .fielderror import Conflict, FieldError
from .models import (
    Contact,
    ContactField,
    ContactImport,
    ContactList,
    Delivery,
    Issue,
    list_members,
    utcnow,
)
from .sending.letter import BUILTIN_FIELDS, FIELD_NAME, Recipient
from .store import dialect_insert

BATCH = 5000
MAX_REJECTED_KEPT = 10_000


def normalise_phone(value: str, region: str) -> str | None:
    """A contact's phone in E.164; empty stays empty."""
    value = (value or "").strip()
    if not value:
        return None
    try:
        return stoplists.normalise_phone(value, region)
    except ValueError as exc:
        raise ValueError(f"phone: {exc}") from None


def search_page(q: str = "", before: int | None = None, per_page: int = 50) -> tuple[list[Contact], int | None]:
    """Newest first with keyset paging (`before` an id), so page 20,000 of a million
    contacts costs what page 1 does."""
    stmt = sa.select(Contact).order_by(Contact.id.desc()).limit(per_page + 1)
    if before:
        stmt = stmt.where(Contact.id < before)
    q = q.strip()
    if q:
        stmt = stmt.where(sa.or_(Contact.email_key.contains(search_form(q), autoescape=True),
                                 Contact.phone.contains(q.replace(" ", ""), autoescape=True),
                                 Contact.name.contains(q, autoescape=True)))
    rows = list(db.session.scalars(stmt))
    return rows[:per_page], rows[per_page - 1].id if len(rows) > per_page else None


def contact_row(email: str, name: str = "", phone: str | None = None,
                attributes: dict[str, Any] | None = None) -> dict[str, Any]:
    """A row for `upsert`: the address as given and its key (EmailNotValidError if bad)."""
    address, key = normalise_key(email)
    return {"email": address, "email_key": key, "name": unicodedata.normalize("NFC", name or "").strip()[:200],
            "phone": phone, "attributes": attributes or {}}


def field_name(header: str) -> str:
    """A CSV column's name as a letter's placeholder can name it: `First Name` is `first_name`."""
    return re.sub(r"[^0-9a-z_]+", "_", unicodedata.normalize("NFKC", header).strip().lower()).strip("_")[:64]


def known_fields() -> list[str]:
    """Every field a placeholder may name: the built-in ones and the custom fields seen."""
    custom = db.session.scalars(sa.select(ContactField.name).order_by(ContactField.name)).all()
    return [*BUILTIN_FIELDS, *(c for c in custom if c not in BUILTIN_FIELDS)]


def register_fields(names: set[str]) -> None:
    """Remember custom field names (once each), so placeholders can be checked at save time."""
    names = {n for n in names if n and n not in BUILTIN_FIELDS and FIELD_NAME.fullmatch(n)}
    if names:
        db.session.execute(dialect_insert(ContactField.__table__).on_conflict_do_nothing(),
                           [{"name": n, "created_at": utcnow()} for n in sorted(names)])


def upsert(rows: list[dict[str, Any]], list_id: int | None) -> tuple[int, int]:
    """Insert or update contacts by address key, and put them in the list; (imported,
    updated). An existing contact keeps its address as first given; its name, phone and
    fields are updated."""
    if not rows:
        return 0, 0
    keys = [r["email_key"] for r in rows]
    existing = set(db.session.scalars(sa.select(Contact.email_key).where(Contact.email_key.in_(keys))))
    register_fields({k for r in rows for k in r["attributes"]})
    stmt = dialect_insert(Contact.__table__)
    stmt = stmt.on_conflict_do_update(
        index_elements=["email_key"],
        set_={"name": sa.func.coalesce(sa.func.nullif(stmt.excluded.name, ""), Contact.__table__.c.name),
              "phone": sa.func.coalesce(stmt.excluded.phone, Contact.__table__.c.phone),
              "attributes": stmt.excluded.attributes})
    now = utcnow()
    # One multi-row INSERT … ON CONFLICT … RETURNING gives the ids of inserted and updated
    # contacts alike, so membership needs no second look-up.
    ids = db.session.execute(stmt.returning(Contact.__table__.c.id),
                             [{**r, "created_at": now} for r in rows]).scalars().all()
    if list_id is not None and ids:
        # RETURNING gives only the members that are new to the list: they are who
        # "joined", for a triggered mailing that welcomes them (mailing/triggers.py).
        member = dialect_insert(list_members).on_conflict_do_nothing().returning(list_members.c.contact_id)
        joined = db.session.scalars(member, [{"list_id": list_id, "contact_id": i} for i in ids]).all()
        triggers.joined(list_id, list(joined))
    return len(rows) - len(existing), len(existing)


@dataclass
class ParsedRow:
    row: dict[str, Any]
    warning: str | None = None  # what was left out of a row that was imported


def parse_row(record: dict[str, str], region: str) -> ParsedRow:
    """One CSV record as a contact row. A bad email rejects the row; a bad phone only
    leaves the phone out (the row says so), since the address is what we send to."""
    raw_email = (record.get("email") or "").strip()
    if not raw_email:
        raise ValueError("no email")
    warning = None
    try:
        phone = normalise_phone(record.get("phone") or "", region)
    except ValueError as exc:
        phone, warning = None, str(exc)
    try:
        row = contact_row(raw_email, record.get("name") or "", phone,
                          {k: v for k, v in record.items() if k and k not in ("email", "name", "phone") and v})
    except EmailNotValidError as exc:
        raise ValueError(f"email: {exc}" + (f"; {warning}" if warning else "")) from None
    return ParsedRow(row, f"{warning}; imported without the phone" if warning else None)


def parse_chunk(args: tuple[list[str], list[tuple[int, list[str]]], str]) -> tuple[list[dict[str, Any]], list[list[Any]], int]:
    """Check one chunk of CSV rows: (good rows, rejected [line, text, reason], repeats).
    Pure CPU work, so the import spreads chunks over the machine's cores (rows travel as
    lists, the cheapest to pass between processes)."""
    header, rows, region = args
    good: dict[str, dict[str, Any]] = {}
    rejected: list[list[Any]] = []
    repeats = 0
    for line, values in rows:
        record = dict(zip(header, values, strict=False))
        try:
            parsed = parse_row(record, region)
        except ValueError as exc:
            text = ",".join((v or "") for v in record.values() if isinstance(v, str))[:120]
            rejected.append([line, text, str(exc)])
            continue
        if parsed.warning:
            text = ",".join((v or "") for v in record.values() if isinstance(v, str))[:120]
            rejected.append([line, text, parsed.warning, "warning"])
        key = parsed.row["email_key"]
        if key in good:
            repeats += 1  # one person twice in one chunk (any case or IDN variant): the first wins
            continue
        good[key] = parsed.row
    return list(good.values()), rejected, repeats


def _chunks(reader: Any, header: list[str], raw: Any, region: str) -> Any:
    while True:
        rows = []
        for values in reader:
            if values:
                rows.append((reader.line_num, values))
            if len(rows) >= BATCH:
                break
        if not rows:
            return
        yield (header, rows, region), raw.tell()


def run_import(import_id: int, region: str, processes: int | None = None) -> ContactImport:
    """Stream the CSV in chunks checked on every core, a few chunks ahead at most, so
    memory stays flat whatever the file's size. Counters move with each chunk's commit,
    so the page's progress bar is the database's truth."""
    import multiprocessing
    import os
    from collections import deque

    imp = db.session.get(ContactImport, import_id, populate_existing=True)
    if imp is None or imp.state in ("done", "failed"):
        return imp  # type: ignore[return-value]
    # A re-run after a crash starts over: upserts make that harmless.
    imp.imported = imp.updated = imp.skipped = imp.rejected_count = 0
    imp.rejected = []
    imp.state = "running"
    db.session.commit()
    rejected: list[list[Any]] = []
    counts = {"imported": 0, "updated": 0, "skipped": 0, "rejected": 0}
    processes = processes or max(os.cpu_count() or 1, 1)
    pool = multiprocessing.get_context("fork").Pool(processes) if processes > 1 else None
    try:
        with open(imp.path, "rb") as raw:
            text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="replace", newline="")
            reader = csv.reader(text)
            header = [field_name(f) for f in next(reader, [])]
            if "email" not in header:
                raise ValueError("the CSV needs a header row with an 'email' column")
            pending: deque[tuple[Any, int]] = deque()
            chunks = _chunks(reader, header, raw, region)
            while True:
                while len(pending) < 2 * processes:
                    nxt = next(chunks, None)
                    if nxt is None:
                        break
                    work, position = nxt
                    pending.append((pool.apply_async(parse_chunk, (work,)) if pool else parse_chunk(work), position))
                if not pending:
                    break
                result, position = pending.popleft()
                good, bad, repeats = result.get() if pool else result
                counts["rejected"] += sum(1 for b in bad if len(b) < 4)
                counts["skipped"] += repeats
                rejected.extend(bad[:max(MAX_REJECTED_KEPT - len(rejected), 0)])
                _flush(imp, {r["email_key"]: r for r in good}, counts, rejected, position)
        imp.state, imp.finished_at = "done", utcnow()
        db.session.commit()
    except (OSError, ValueError, csv.Error) as exc:
        db.session.rollback()
        imp = db.session.get(ContactImport, import_id, populate_existing=True)
        imp.state, imp.error, imp.finished_at = "failed", str(exc), utcnow()
        db.session.commit()
    finally:
        if pool is not None:
            pool.terminate()
    return imp


def _flush(imp: ContactImport, batch: dict[str, dict[str, Any]], counts: dict[str, int],
           rejected: list[list[Any]], position: int) -> None:
    imported, updated = upsert(list(batch.values()), imp.list_id)
    counts["imported"] += imported
    counts["updated"] += updated
    imp.imported, imp.updated = counts["imported"], counts["updated"]
    imp.skipped, imp.rejected_count = counts["skipped"], counts["rejected"]
    imp.rejected = list(rejected)
    imp.read_bytes = position
    db.session.commit()
    checkpoint_wal()


def list_sizes() -> dict[int, int]:
    return dict(db.session.execute(sa.select(list_members.c.list_id, sa.func.count())
                                   .group_by(list_members.c.list_id)).all())


def delete_list(lst: ContactList) -> None:
    db.session.execute(sa.delete(list_members).where(list_members.c.list_id == lst.id))
    db.session.delete(lst)
    db.session.commit()


def sample_recipient(issue: Any, address: str, unsubscribe_url: str) -> Recipient:
    """A real contact's values for a preview or a test letter: the contact whose address is
    `address` (any case or IDN variant), else the first member of the issue's list; with
    neither, `address` with empty fields (placeholders show their defaults)."""
    contact = None
    if address and is_valid_email(address):
        contact = db.session.scalar(sa.select(Contact).where(Contact.email_key == email_key(address)))
    if contact is None and issue.list_id is not None:
        contact = db.session.scalar(
            sa.select(Contact).join(list_members, list_members.c.contact_id == Contact.id)
            .where(list_members.c.list_id == issue.list_id, Contact.email.is_not(None))
            .order_by(Contact.id).limit(1))
    if contact is None:
        return Recipient(0, "sample", address or "reader@example.org", "", unsubscribe_url, {})
    fields = {k: str(v) for k, v in (contact.attributes or {}).items() if v is not None}
    if contact.phone:
        fields["phone"] = contact.phone
    return Recipient(0, contact.id, contact.email or "", contact.name, unsubscribe_url, fields)


def delete_contact(contact: Contact) -> None:
    """The contact goes; its stop-list entries stay (they name the address, not the
    contact) and its deliveries keep their address but no longer point at it."""
    db.session.execute(sa.update(Delivery).where(Delivery.contact_id == contact.id).values(contact_id=None))
    db.session.delete(contact)
    db.session.commit()


# --- one contact, one list: the use cases the pages and the API share ----------------

def save_contact(contact: Contact, *, email: str | None = None, name: str | None = None,
                 phone: str | None = None, fields: dict[str, Any] | None = None, region: str) -> None:
    """Change a contact (a new one has no id yet); None leaves a value as it is, and a field
    set to None is removed. FieldError names the field at fault and nothing is changed;
    Conflict when another contact has the address. The caller commits."""
    if email is not None:
        try:
            address, key = normalise_key(email)
        except EmailNotValidError as exc:  # email-validator's message is the user's answer
            raise FieldError("email", str(exc)) from None
        clash = db.session.scalar(sa.select(Contact.email).where(Contact.email_key == key,
                                                                Contact.id != (contact.id or 0)))
        if clash:
            raise Conflict("email", _("Another contact has this address (%(email)s).", email=clash))
    new_phone = contact.phone
    if phone is not None:
        try:
            new_phone = normalise_phone(phone, region)
        except ValueError as exc:
            raise FieldError("phone", str(exc)) from None
    attributes = dict(contact.attributes or {})
    for field, value in (fields or {}).items():
        if field_name(field) != field or not FIELD_NAME.fullmatch(field) or field in BUILTIN_FIELDS:
            raise FieldError(f"fields.{field}"[:100], _("A field name is lower-case letters, digits and _ "
                                                        "(and not a built-in field such as name)."))
        if value is None:
            attributes.pop(field, None)
        else:
            attributes[field] = str(value)[:2000]
    if email is not None:
        contact.email, contact.email_key = address, key
    contact.phone = new_phone
    if name is not None:
        contact.name = unicodedata.normalize("NFC", name).strip()[:200]
    contact.attributes = attributes
    register_fields(set(attributes))


def join(contact_id: int, list_ids: list[int]) -> None:
    """Put a contact in lists (those it is in already are left alone); a triggered mailing
    that welcomes new members of a list hears of it."""
    for list_id in list_ids:
        if db.session.get(ContactList, list_id) is None:
            raise FieldError("lists", _("No list has the id %(id)s.", id=list_id))
    for list_id in list_ids:
        member = dialect_insert(list_members).on_conflict_do_nothing().returning(list_members.c.contact_id)
        joined = db.session.scalars(member, [{"list_id": list_id, "contact_id": contact_id}]).all()
        triggers.joined(list_id, list(joined))


def add_lines(list_id: int, lines: list[str]) -> tuple[int, int, list[tuple[int, str, str]]]:
    """Add contacts to a list by address, one a line; unknown addresses become contacts.
    (added, new, [(line, text, reason)]) — a bad line is reported and the good ones kept."""
    good, bad = [], []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            good.append(contact_row(line))
        except EmailNotValidError as exc:
            bad.append((number, line[:254], str(exc)))
    new, updated = upsert(list({r["email_key"]: r for r in good}.values()), list_id)
    db.session.commit()
    return new + updated, new, bad


def remove_members(list_id: int, contact_ids: list[int]) -> int:
    """Take contacts out of a list (they stay in the contact base); how many were in it."""
    removed = db.session.execute(sa.delete(list_members).where(
        list_members.c.list_id == list_id, list_members.c.contact_id.in_(contact_ids))).rowcount
    db.session.commit()
    return removed


def _name_taken(name: str, list_id: int | None) -> bool:
    return bool(db.session.scalar(sa.select(ContactList.id).where(
        ContactList.name == name, ContactList.id != (list_id or 0))))


def name_list(lst: ContactList, name: str) -> None:
    """Name a new list or rename one; names are unique (Conflict), surrounding spaces dropped."""
    name = (name or "").strip()
    if not name or len(name) > 200:
        raise FieldError("name", _("A list's name is 1 to 200 characters."))
    if _name_taken(name, lst.id):
        raise Conflict("name", _("A list with this name exists."))
    lst.name = name
    if lst.id is None:
        db.session.add(lst)
    db.session.commit()


def delete_unused_list(lst: ContactList) -> None:
    """Delete a list no issue uses (Conflict otherwise: the issue would lose its audience)."""
    if db.session.scalar(sa.select(Issue.id).where(Issue.list_id == lst.id).limit(1)):
        raise Conflict("in_use", _("Issues use this list; it cannot be deleted."))
    delete_list(lst)


def start_import(lst: ContactList, storage: Any, actor: Any) -> ContactImport:
    """Keep an uploaded CSV and queue its import (jobs/imports.py); the import's page or
    GET /api/v1/imports/<id> follows its progress and per-line report."""
    # End the request's transaction (on SQLite it holds the write lock) while the file is copied.
    db.session.commit()
    path, size = uploads.save_upload(storage)  # 0600; the job deletes it when it ends
    imp = ContactImport(list_id=lst.id, path=str(path), filename=(storage.filename or "")[:300],
                        size_bytes=size, created_by_id=actor.id, rejected=[])
    db.session.add(imp)
    db.session.commit()
    queueing.enqueue("jobs.imports.import_csv", imp.id)
    return imp
