"""Contacts and lists: search, edit, and CSV import with upserts in batches."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from email_validator import EmailNotValidError

from . import stoplists
from .extensions import db
from .models import Contact, ContactImport, ContactList, list_members, utcnow
from .stoplists import normalise_email

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
        like = q.lower()
        stmt = stmt.where(sa.or_(Contact.email.contains(like, autoescape=True),
                                 Contact.phone.contains(q.replace(" ", ""), autoescape=True),
                                 Contact.name.contains(q, autoescape=True)))
    rows = list(db.session.scalars(stmt))
    return rows[:per_page], rows[per_page - 1].id if len(rows) > per_page else None


def _insert(table: Any) -> Any:
    if db.engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(table)


def upsert(rows: list[dict[str, Any]], list_id: int | None) -> tuple[int, int]:
    """Insert or update contacts by email, and put them in the list; (imported, updated)."""
    if not rows:
        return 0, 0
    emails = [r["email"] for r in rows]
    existing = set(db.session.scalars(sa.select(Contact.email).where(Contact.email.in_(emails))))
    stmt = _insert(Contact.__table__)
    stmt = stmt.on_conflict_do_update(
        index_elements=["email"],
        set_={"name": sa.func.coalesce(sa.func.nullif(stmt.excluded.name, ""), Contact.__table__.c.name),
              "phone": sa.func.coalesce(stmt.excluded.phone, Contact.__table__.c.phone),
              "attributes": stmt.excluded.attributes})
    now = utcnow()
    db.session.execute(stmt, [{**r, "created_at": now} for r in rows])
    if list_id is not None:
        ids = db.session.scalars(sa.select(Contact.id).where(Contact.email.in_(emails))).all()
        member = _insert(list_members).on_conflict_do_nothing()
        db.session.execute(member, [{"list_id": list_id, "contact_id": i} for i in ids])
    return len(rows) - len(existing), len(existing)


@dataclass
class ParsedRow:
    email: str
    name: str
    phone: str | None
    attributes: dict[str, str]


def parse_row(record: dict[str, str], region: str) -> ParsedRow:
    raw_email = (record.get("email") or "").strip()
    if not raw_email:
        raise ValueError("no email")
    try:
        email = normalise_email(raw_email)
    except EmailNotValidError as exc:
        raise ValueError(f"email: {exc}") from None
    name = (record.get("name") or "").strip()[:200]
    phone = normalise_phone(record.get("phone") or "", region)
    extra = {k: v for k, v in record.items() if k and k not in ("email", "name", "phone") and v}
    return ParsedRow(email, name, phone, extra)


def run_import(import_id: int, region: str) -> ContactImport:
    """Stream the CSV in batches: memory stays flat whatever its size. Counters move with
    each batch's commit, so the page's progress bar is the database's truth."""
    imp = db.session.get(ContactImport, import_id, populate_existing=True)
    if imp is None or imp.state in ("done", "failed"):
        return imp  # type: ignore[return-value]
    if imp.state == "running" and imp.read_bytes:
        # A re-run after a crash starts over: upserts make that harmless.
        imp.imported = imp.updated = imp.skipped = imp.rejected_count = 0
        imp.rejected = []
    imp.state = "running"
    db.session.commit()
    rejected: list[list[Any]] = []
    counts = {"imported": 0, "updated": 0, "skipped": 0, "rejected": 0}
    try:
        with open(imp.path, "rb") as raw:
            text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="replace", newline="")
            reader = csv.DictReader(text)
            if not reader.fieldnames or "email" not in [f.strip().lower() for f in reader.fieldnames]:
                raise ValueError("the CSV needs a header row with an 'email' column")
            reader.fieldnames = [f.strip().lower() for f in reader.fieldnames]
            batch: dict[str, dict[str, Any]] = {}
            for record in reader:
                line = reader.line_num
                try:
                    row = parse_row(record, region)
                except ValueError as exc:
                    counts["rejected"] += 1
                    if len(rejected) < MAX_REJECTED_KEPT:
                        rejected.append([line, ",".join((v or "") for v in record.values() if isinstance(v, str))[:120],
                                         str(exc)])
                    continue
                if row.email in batch:
                    counts["skipped"] += 1  # the same address twice in one file: the first wins
                    continue
                batch[row.email] = {"email": row.email, "name": row.name, "phone": row.phone,
                                    "attributes": row.attributes}
                if len(batch) >= BATCH:
                    _flush(imp, batch, counts, rejected, raw.tell())
                    batch = {}
            _flush(imp, batch, counts, rejected, raw.tell())
        imp.state, imp.finished_at = "done", utcnow()
        db.session.commit()
    except (OSError, ValueError, csv.Error) as exc:
        db.session.rollback()
        imp = db.session.get(ContactImport, import_id, populate_existing=True)
        imp.state, imp.error, imp.finished_at = "failed", str(exc), utcnow()
        db.session.commit()
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


def list_sizes() -> dict[int, int]:
    return dict(db.session.execute(sa.select(list_members.c.list_id, sa.func.count())
                                   .group_by(list_members.c.list_id)).all())


def delete_list(lst: ContactList) -> None:
    db.session.execute(sa.delete(list_members).where(list_members.c.list_id == lst.id))
    db.session.delete(lst)
    db.session.commit()
