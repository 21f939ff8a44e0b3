"""Contacts, lists and CSV imports through the API, with the pages' use cases
(mailing/contacts.py) and role rules: every role reads, editors and admins change."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from flask import current_app, g

from ... import contacts, stoplists
from ...addresses import EmailNotValidError, normalise_key, search_form
from ...extensions import db
from ...fielderror import FieldError
from ...models import Contact, ContactImport, ContactList, StopEntry, StopList, list_members
from ...store import contacts as contact_rows
from ...store import deliveries
from ...store import stoplists as stop_rows
from ..access import EDITORS, READERS
from . import schemas as s
from .base import ctx, endpoint, iso, keyset

TAG = "contacts"


def _memberships(ids: list[int]) -> dict[int, list[int]]:
    found: dict[int, list[int]] = {i: [] for i in ids}
    if ids:
        for contact_id, list_id in db.session.execute(sa.select(list_members.c.contact_id, list_members.c.list_id)
                                                      .where(list_members.c.contact_id.in_(ids))
                                                      .order_by(list_members.c.list_id)):
            found[contact_id].append(list_id)
    return found


def contacts_json(rows: list[Contact]) -> list[dict[str, Any]]:
    lists = _memberships([c.id for c in rows])
    return [{"id": c.id, "email": c.email, "name": c.name, "phone": c.phone, "fields": c.attributes or {},
             "lists": lists[c.id], "created_at": iso(c.created_at)} for c in rows]


def _contact(contact_id: int) -> Contact:
    return db.get_or_404(Contact, contact_id, description="No such contact.")


def _region() -> str:
    return current_app.config["DEFAULT_PHONE_REGION"]


@endpoint("/contacts", "GET", READERS, out=s.ContactsOut, query=s.ContactsQuery, errors=(), tag=TAG)
def list_contacts() -> Any:
    """Contacts, newest first (?q= searches address, name and phone; ?email= finds one address)"""
    q = ctx("query")
    query = sa.select(Contact)
    if q.email is not None:
        try:
            query = query.where(Contact.email_key == normalise_key(q.email)[1])
        except EmailNotValidError:
            return {"contacts": [], "next_cursor": None}
    elif q.q.strip():
        text = q.q.strip()
        query = query.where(sa.or_(Contact.email_key.contains(search_form(text), autoescape=True),
                                   Contact.phone.contains(text.replace(" ", ""), autoescape=True),
                                   Contact.name.contains(text, autoescape=True)))
    rows, cursor = keyset(query, Contact.id, q.cursor, q.limit)
    return {"contacts": contacts_json(rows), "next_cursor": cursor}


@endpoint("/contacts", "POST", EDITORS, out=s.ContactOut, json=s.ContactIn, errors=(), tag=TAG)
def upsert_contact() -> Any:
    """Create a contact, or update the one with this address (any case or alphabet)"""
    body = ctx("json")
    try:
        key = normalise_key(body.email)[1]
    except EmailNotValidError as exc:
        raise FieldError("email", f"email: {exc}") from None
    contact = db.session.scalar(sa.select(Contact).where(Contact.email_key == key))
    created = contact is None
    if contact is None:
        contact = Contact(attributes={})
        contacts.save_contact(contact, email=body.email, name=body.name or "", phone=body.phone,
                              fields=body.fields, region=_region())
        db.session.add(contact)
    else:  # the address stays as first given: it is who the person is to us
        contacts.save_contact(contact, name=body.name, phone=body.phone, fields=body.fields, region=_region())
    db.session.flush()
    contacts.join(contact.id, body.lists or [])
    db.session.commit()
    return contacts_json([contact])[0], 201 if created else 200


@endpoint("/contacts/<int:contact_id>", "GET", READERS, out=s.ContactOut, tag=TAG)
def get_contact(contact_id: int) -> Any:
    """One contact with its custom fields and lists"""
    return contacts_json([_contact(contact_id)])[0]


@endpoint("/contacts/<int:contact_id>", "PATCH", EDITORS, out=s.ContactOut, json=s.ContactPatch,
          errors=(404, 409), tag=TAG)
def update_contact(contact_id: int) -> Any:
    """Change a contact's address, name, phone or custom fields (null removes a field)"""
    contact, body = _contact(contact_id), ctx("json")
    contacts.save_contact(contact, email=body.email, name=body.name, phone=body.phone, fields=body.fields,
                          region=_region())
    db.session.commit()
    return contacts_json([contact])[0]


@endpoint("/contacts/<int:contact_id>", "DELETE", EDITORS, ok=204, tag=TAG)
def delete_contact(contact_id: int) -> Any:
    """Delete a contact; its stop-list entries stay (they name the address)"""
    contacts.delete_contact(_contact(contact_id))
    return "", 204


def _stops_json(contact: Contact) -> list[dict[str, Any]]:
    values = [v for v in (contact.email_key, contact.phone) if v]
    return [{"entry_id": e.id, "list_id": lst.id, "list_name": lst.name, "value": e.value}
            for lst, e in stop_rows.entries_holding(values)]


@endpoint("/contacts/<int:contact_id>/stoplists", "GET", READERS, out=s.ContactStopsOut, tag=TAG)
def contact_stoplists(contact_id: int) -> Any:
    """The stop-lists that hold the contact's address or phone"""
    return {"stoplists": _stops_json(_contact(contact_id))}


@endpoint("/contacts/<int:contact_id>/stoplists", "POST", EDITORS, out=s.ContactStopsOut,
          json=s.ContactStopIn, errors=(404, 409), tag=TAG)
def contact_stop(contact_id: int) -> Any:
    """Put the contact's address and phone on a stop-list"""
    contact = _contact(contact_id)
    stop = db.session.get(StopList, ctx("json").list_id)
    if stop is None:
        raise FieldError("list_id", "list_id: no stop-list has this id.")
    text = "\n".join(v for v in (contact.email, contact.phone) if v)
    stoplists.add_pasted(stop, text, actor=g.api_user, source="api", region=_region())
    return {"stoplists": _stops_json(contact)}


@endpoint("/contacts/<int:contact_id>/stoplists/<int:entry_id>", "DELETE", EDITORS, ok=204,
          errors=(404, 409), tag=TAG)
def contact_unstop(contact_id: int, entry_id: int) -> Any:
    """Take one of the contact's entries off its stop-list (within the removal quota)"""
    contact = _contact(contact_id)
    entry = db.get_or_404(StopEntry, entry_id, description="No such stop-list entry.")
    if entry.value not in (contact.email_key, contact.phone):
        return {"error": "not_found", "message": "This entry is not the contact's."}, 404
    stoplists.remove_entries(db.session.get(StopList, entry.list_id), [entry.id], actor=g.api_user, source="api")
    return "", 204


@endpoint("/contacts/<int:contact_id>/timeline", "GET", READERS, out=s.TimelineOut, tag=TAG)
def contact_timeline(contact_id: int) -> Any:
    """What happened to the contact in every issue, newest first, and its stop-lists"""
    contact = _contact(contact_id)
    rows, _by_address = deliveries.recipient_timeline(contact.email or contact.phone or "")
    return {"deliveries": [{"issue_id": r.issue_id, "subject": r.subject, "issue_status": r.issue_status,
                            "state": r.state, "at": iso(r.at), "reply": r.reply, "why": r.why} for r in rows],
            "stoplists": _stops_json(contact)}  # its phone's entries too, not only its address's


# --- lists --------------------------------------------------------------------------

LISTS = "lists"


def list_json(lst: ContactList, sizes: dict[int, int]) -> dict[str, Any]:
    return {"id": lst.id, "name": lst.name, "size": sizes.get(lst.id, 0), "created_at": iso(lst.created_at)}


def _list(list_id: int) -> ContactList:
    return db.get_or_404(ContactList, list_id, description="No such list.")


@endpoint("/lists", "GET", READERS, out=s.ListsOut, query=s.Page, errors=(), tag=LISTS)
def list_lists() -> Any:
    """Contact lists, newest first, with their sizes"""
    q = ctx("query")
    rows, cursor = keyset(sa.select(ContactList), ContactList.id, q.cursor, q.limit)
    sizes = contacts.list_sizes()
    return {"lists": [list_json(lst, sizes) for lst in rows], "next_cursor": cursor}


@endpoint("/lists", "POST", EDITORS, ok=201, out=s.ListOut, json=s.ListIn, errors=(409,), tag=LISTS)
def create_list() -> Any:
    """Create a list (names are unique)"""
    lst = ContactList()
    contacts.name_list(lst, ctx("json").name)
    return list_json(lst, {}), 201


@endpoint("/lists/<int:list_id>", "GET", READERS, out=s.ListOut, tag=LISTS)
def get_list(list_id: int) -> Any:
    """One list with its size"""
    return list_json(_list(list_id), contacts.list_sizes())


@endpoint("/lists/<int:list_id>", "PATCH", EDITORS, out=s.ListOut, json=s.ListIn, errors=(404, 409), tag=LISTS)
def rename_list(list_id: int) -> Any:
    """Rename a list"""
    lst = _list(list_id)
    contacts.name_list(lst, ctx("json").name)
    return list_json(lst, contacts.list_sizes())


@endpoint("/lists/<int:list_id>", "DELETE", EDITORS, ok=204, errors=(404, 409), tag=LISTS)
def delete_list(list_id: int) -> Any:
    """Delete a list no issue uses; its contacts stay"""
    contacts.delete_unused_list(_list(list_id))
    return "", 204


@endpoint("/lists/<int:list_id>/members", "GET", READERS, out=s.MembersOut, query=s.Page, tag=LISTS)
def list_members_page(list_id: int) -> Any:
    """The list's contacts, newest first"""
    q = ctx("query")
    _list(list_id)
    rows, cursor = keyset(contact_rows.members_query(list_id), Contact.id, q.cursor, q.limit)
    return {"contacts": contacts_json(rows), "next_cursor": cursor}


@endpoint("/lists/<int:list_id>/members", "POST", EDITORS, out=s.MembersAddedOut, json=s.MembersIn,
          tag=LISTS)
def add_members(list_id: int) -> Any:
    """Add contacts by address (unknown addresses become contacts); bad lines are reported"""
    _list(list_id)
    db.session.commit()  # end the read: on SQLite the upsert below takes the write lock
    added, new, bad = contacts.add_lines(list_id, [e.replace("\n", " ") for e in ctx("json").emails])
    return {"added": added, "new": new,
            "rejected": [{"line": n, "text": text, "reason": reason} for n, text, reason in bad]}


@endpoint("/lists/<int:list_id>/members/remove", "POST", EDITORS, out=s.RemovedOut, json=s.MembersRemoveIn,
          tag=LISTS)
def remove_members(list_id: int) -> Any:
    """Take contacts out of the list (they stay in the contact base)"""
    _list(list_id)
    return {"removed": contacts.remove_members(list_id, ctx("json").contact_ids)}


def import_json(imp: ContactImport) -> dict[str, Any]:
    return {"id": imp.id, "list_id": imp.list_id, "filename": imp.filename, "state": imp.state,
            "percent": imp.percent, "imported": imp.imported, "updated": imp.updated, "skipped": imp.skipped,
            "rejected_count": imp.rejected_count,
            "rejected": [{"line": int(r[0]), "text": str(r[1]), "reason": str(r[2])} for r in (imp.rejected or [])[:1000]],
            "error": imp.error, "created_at": iso(imp.created_at), "finished_at": iso(imp.finished_at)}


@endpoint("/lists/<int:list_id>/imports", "POST", EDITORS, ok=202, out=s.ImportOut, form=s.ImportForm,
          errors=(404, 413), tag=LISTS)
def start_import(list_id: int) -> Any:
    """Import a CSV file (multipart field `file`: email, name, phone, any other columns) into the list"""
    imp = contacts.start_import(_list(list_id), ctx("form").file, g.api_user)
    return import_json(imp), 202


@endpoint("/imports/<int:import_id>", "GET", READERS, out=s.ImportOut, tag=LISTS)
def get_import(import_id: int) -> Any:
    """An import's progress and its per-line report"""
    return import_json(db.get_or_404(ContactImport, import_id, description="No such import."))
