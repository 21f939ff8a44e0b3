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
    # One multi-row INSERT … ON CONFLICT … RETURNING gives the ids of inserted and updated
    # contacts alike, so membership needs no second look-up.
    ids = db.session.execute(stmt.returning(Contact.__table__.c.id),
                             [{**r, "created_at": now} for r in rows]).scalars().all()
    if list_id is not None and ids:
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
            row = parse_row(record, region)
        except ValueError as exc:
            text = ",".join((v or "") for v in record.values() if isinstance(v, str))[:120]
            rejected.append([line, text, str(exc)])
            continue
        if row.email in good:
            repeats += 1  # the same address twice in one chunk: the first wins
            continue
        good[row.email] = {"email": row.email, "name": row.name, "phone": row.phone,
                           "attributes": row.attributes}
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
            header = [f.strip().lower() for f in next(reader, [])]
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
                counts["rejected"] += len(bad)
                counts["skipped"] += repeats
                rejected.extend(bad[:max(MAX_REJECTED_KEPT - len(rejected), 0)])
                _flush(imp, {r["email"]: r for r in good}, counts, rejected, position)
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


def list_sizes() -> dict[int, int]:
    return dict(db.session.execute(sa.select(list_members.c.list_id, sa.func.count())
                                   .group_by(list_members.c.list_id)).all())


def delete_list(lst: ContactList) -> None:
    db.session.execute(sa.delete(list_members).where(list_members.c.list_id == lst.id))
    db.session.delete(lst)
    db.session.commit()
