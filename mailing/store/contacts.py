"""Contact queries: who an issue will reach, and the fields a letter needs."""

from __future__ import annotations

import sqlalchemy as sa

from ..extensions import db
from ..models import Contact, ContactImport, Issue, StopEntry, StopList, list_members
from . import among
from .stoplists import applies_to_sender


def letter_values(contact_ids: list[int], wanted: set[str]) -> dict[int, dict[str, str]]:
    """The phone and custom fields a letter uses, for one claimed chunk: one query by
    primary key. Each field is taken out of the attributes by the server (`->>` on
    PostgreSQL, json_extract on SQLite), so a wide contact costs no more and the
    driver never decodes a whole JSON document per recipient."""
    if not contact_ids:
        return {}
    custom = sorted(wanted - {"phone"})
    columns = [Contact.id, Contact.phone, *(Contact.attributes[name].as_string() for name in custom)]
    rows = db.session.execute(sa.select(*columns).where(among(Contact.id, contact_ids))).all()
    out: dict[int, dict[str, str]] = {}
    for cid, phone, *found in rows:
        values = {name: str(v) for name, v in zip(custom, found, strict=True) if v is not None}
        if phone and "phone" in wanted:
            values["phone"] = phone
        out[cid] = values
    return out


def audience_preview(issue: Issue) -> dict:
    """Who will get it: the list's size, how many each stop-list excludes, and how many
    addresses need a relay with SMTPUTF8, before launch. Stop-lists match address keys."""
    if issue.list_id is None:
        return {"members": 0, "excluded": [], "recipients": 0, "international": 0}
    members_q = (sa.select(sa.func.count()).select_from(list_members)
                 .join(Contact, Contact.id == list_members.c.contact_id)
                 .where(list_members.c.list_id == issue.list_id, Contact.email_key.is_not(None)))
    members = db.session.scalar(members_q) or 0
    # A key's domain is its A-label, so a key with non-ASCII characters has a non-ASCII
    # local part: more octets than characters.
    octets = (sa.func.octet_length(Contact.email_key) if db.engine.dialect.name == "postgresql"
              else sa.func.length(sa.cast(Contact.email_key, sa.LargeBinary)))
    international = db.session.scalar(members_q.where(octets != sa.func.length(Contact.email_key))) or 0
    applies = sa.and_(StopEntry.value == Contact.email_key, applies_to_sender(issue.sender_id))
    excluded = db.session.execute(
        sa.select(StopList.name, sa.func.count(sa.distinct(Contact.id)))
        .select_from(list_members).join(Contact, Contact.id == list_members.c.contact_id)
        .join(StopEntry, applies).join(StopList, StopList.id == StopEntry.list_id)
        .where(list_members.c.list_id == issue.list_id).group_by(StopList.name)).all()
    blocked_any = db.session.scalar(
        sa.select(sa.func.count(sa.distinct(Contact.id))).select_from(list_members)
        .join(Contact, Contact.id == list_members.c.contact_id).join(StopEntry, applies)
        .where(list_members.c.list_id == issue.list_id)) or 0
    return {"members": members, "excluded": excluded, "recipients": members - blocked_any,
            "international": international}


def members_page(list_id: int, before: int | None, size: int) -> list[Contact]:
    """One page of a list, newest first, keyset-paged by contact id (`before`): the
    same cost on the last page of a million as on the first. One row more than
    `size` says whether a next page exists."""
    stmt = members_query(list_id).order_by(Contact.id.desc()).limit(size + 1)
    if before:
        stmt = stmt.where(Contact.id < before)
    return list(db.session.scalars(stmt))


def members_query(list_id: int) -> sa.Select:
    """A list's contacts (unordered)."""
    return sa.select(Contact).join(list_members, list_members.c.contact_id == Contact.id) \
        .where(list_members.c.list_id == list_id)


def recent_imports(list_id: int, limit: int = 10) -> list[ContactImport]:
    return list(db.session.scalars(sa.select(ContactImport).where(ContactImport.list_id == list_id)
                                   .order_by(ContactImport.id.desc()).limit(limit)))
