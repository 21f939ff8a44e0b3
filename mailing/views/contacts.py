"""Subscribers: contacts (search, card, edit), lists, and CSV imports with live progress."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from flask import Blueprint, current_app, flash, redirect, render_template, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired
from htmx_flask import request
from wtforms import EmailField, StringField
from wtforms.validators import DataRequired, Email, Length, Optional

from .. import contacts, stoplists
from ..errors import error, forbidden
from ..extensions import db
from ..fielderror import Conflict, FieldError
from ..models import Contact, ContactImport, ContactList, StopEntry, StopList, list_members
from ..store import contacts as contact_rows
from ..store import stoplists as stop_rows
from .access import EDITORS, READERS, roles
from .params import arg_int, form_int

bp = Blueprint("contacts", __name__)


class ContactForm(FlaskForm):
    email = EmailField(_l("Email"), validators=[DataRequired(), Email(check_deliverability=False), Length(max=254)])
    name = StringField(_l("Name"), validators=[Optional(), Length(max=200)])
    phone = StringField(_l("Phone"), validators=[Optional(), Length(max=40)])


class ListForm(FlaskForm):
    name = StringField(_l("Name"), validators=[DataRequired(), Length(max=200)])


class ImportForm(FlaskForm):
    file = FileField(_l("CSV file (email, name, phone, any other columns)"), validators=[FileRequired()])


def _save_contact(form: ContactForm, contact: Contact) -> bool:
    """The form's values through the use case; a refusal is shown next to its field."""
    try:
        contacts.save_contact(contact, email=form.email.data or "", name=form.name.data or "",
                              phone=form.phone.data or "", region=current_app.config["DEFAULT_PHONE_REGION"])
    except FieldError as exc:
        getattr(form, exc.field).errors.append(exc.message)
        return False
    return True


@bp.get("/contacts")
@roles(*READERS)
def index() -> Any:
    q = (request.args.get("q") or "").strip()[:254]
    before = arg_int("before")
    rows, next_before = contacts.search_page(q, before)
    return render_template("contacts/index.html", rows=rows, q=q, next_before=next_before, form=ContactForm())


@bp.post("/contacts")
@roles(*EDITORS)
def create() -> Any:
    form = ContactForm()
    contact = Contact(attributes={})
    if form.validate_on_submit() and _save_contact(form, contact):
        db.session.add(contact)
        db.session.commit()
        return redirect(url_for("contacts.card", contact_id=contact.id))
    rows, next_before = contacts.search_page()
    return render_template("contacts/index.html", rows=rows, q="", next_before=next_before, form=form), 400


@bp.route("/contacts/<int:contact_id>", methods=["GET", "POST"])
@roles(*READERS)
def card(contact_id: int) -> Any:
    contact = db.get_or_404(Contact, contact_id)
    form = ContactForm(obj=contact)
    if request.method == "POST":
        if current_user.role not in EDITORS:
            return forbidden()
        if form.validate_on_submit() and _save_contact(form, contact):
            db.session.commit()
            flash(_("Saved."))
            return redirect(url_for("contacts.card", contact_id=contact.id))
    values = [v for v in (contact.email_key, contact.phone) if v]
    in_lists = stop_rows.entries_holding(values)
    lists = db.session.scalars(sa.select(ContactList).join(list_members)
                               .where(list_members.c.contact_id == contact.id)).all()
    all_stoplists = db.session.scalars(sa.select(StopList).order_by(StopList.id)).all()
    return render_template("contacts/card.html", contact=contact, form=form, stops=in_lists, lists=lists,
                           all_stoplists=all_stoplists), 400 if form.errors else 200


@bp.post("/contacts/<int:contact_id>/delete")
@roles(*EDITORS)
def delete(contact_id: int) -> Any:
    """The contact goes; its stop-list entries stay (they name the address, not the contact)."""
    contact = db.get_or_404(Contact, contact_id)
    contacts.delete_contact(contact)
    flash(_("Contact deleted; its stop-list entries stay."))
    return redirect(url_for("contacts.index"))


@bp.post("/contacts/<int:contact_id>/stoplists")
@roles(*EDITORS)
def stoplist_add(contact_id: int) -> Any:
    contact = db.get_or_404(Contact, contact_id)
    stop = db.session.get(StopList, form_int("list_id") or 0)
    if stop is None:
        return error(400, "list_id", _("Choose a stop-list."))
    text = "\n".join(v for v in (contact.email, contact.phone) if v)
    stoplists.add_pasted(stop, text, actor=current_user, source="card",
                         region=current_app.config["DEFAULT_PHONE_REGION"])
    return redirect(url_for("contacts.card", contact_id=contact.id))


@bp.post("/contacts/<int:contact_id>/stoplists/<int:entry_id>/remove")
@roles(*EDITORS)
def stoplist_remove(contact_id: int, entry_id: int) -> Any:
    db.get_or_404(Contact, contact_id)
    entry = db.get_or_404(StopEntry, entry_id)
    stop = db.session.get(StopList, entry.list_id)
    stoplists.remove_entries(stop, [entry.id], actor=current_user, source="card")
    return redirect(url_for("contacts.card", contact_id=contact_id))


# --- lists ------------------------------------------------------------------------

@bp.get("/lists")
@roles(*READERS)
def lists() -> Any:
    return _lists_page(ListForm())


def _lists_page(form: ListForm, status: int = 200) -> Any:
    """The lists, with `form`'s errors beside the new list's name."""
    rows = db.session.scalars(sa.select(ContactList).order_by(ContactList.name)).all()
    return render_template("contacts/lists.html", lists=rows, sizes=contacts.list_sizes(), form=form), status


@bp.post("/lists")
@roles(*EDITORS)
def list_create() -> Any:
    form = ListForm()
    if not form.validate_on_submit():
        return _lists_page(form, 400)
    lst = ContactList()
    try:
        contacts.name_list(lst, form.name.data)
    except Conflict as exc:
        form.name.errors.append(exc.message)
        return _lists_page(form, 409)
    return redirect(url_for("contacts.list_show", list_id=lst.id))


@bp.get("/lists/<int:list_id>")
@roles(*READERS)
def list_show(list_id: int) -> Any:
    return _list_page(db.get_or_404(ContactList, list_id))


def _list_page(lst: ContactList, rename_form: ListForm | None = None, status: int = 200) -> Any:
    """A list's page; `rename_form` carries a refused rename's errors beside the name."""
    before = arg_int("before")
    rows = contact_rows.members_page(lst.id, before, 50)
    imports = contact_rows.recent_imports(lst.id)
    return render_template("contacts/list.html", lst=lst, rows=rows[:50],
                           next_before=rows[49].id if len(rows) > 50 else None, imports=imports,
                           rename_form=rename_form or ListForm(name=lst.name), import_form=ImportForm(),
                           size=contacts.list_sizes().get(lst.id, 0)), status


@bp.post("/lists/<int:list_id>/rename")
@roles(*EDITORS)
def list_rename(list_id: int) -> Any:
    lst = db.get_or_404(ContactList, list_id)
    form = ListForm()
    if not form.validate_on_submit():
        return _list_page(lst, form, 400)
    try:
        contacts.name_list(lst, form.name.data)
    except Conflict as exc:  # names are unique: this was an IntegrityError (500)
        db.session.rollback()
        form.name.errors.append(exc.message)
        return _list_page(lst, form, 409)
    return redirect(url_for("contacts.list_show", list_id=lst.id))


@bp.post("/lists/<int:list_id>/delete")
@roles(*EDITORS)
def list_delete(list_id: int) -> Any:
    contacts.delete_unused_list(db.get_or_404(ContactList, list_id))
    return redirect(url_for("contacts.lists"))


@bp.post("/lists/<int:list_id>/add")
@roles(*EDITORS)
def list_add(list_id: int) -> Any:
    """Add contacts by hand: one address per line; unknown addresses become contacts."""
    lst = db.get_or_404(ContactList, list_id)
    db.session.commit()  # end the read: on SQLite the upsert takes the write lock
    added, new, bad = contacts.add_lines(lst.id, (request.form.get("emails") or "").splitlines())
    flash(_("Added %(n)s contacts (%(new)s new).", n=added, new=new)
          + (" " + "; ".join(f"line {n}: {reason}" for n, _text, reason in bad[:20]) if bad else ""))
    return redirect(url_for("contacts.list_show", list_id=lst.id))


@bp.post("/lists/<int:list_id>/import")
@roles(*EDITORS)
def list_import(list_id: int) -> Any:
    lst = db.get_or_404(ContactList, list_id)
    form = ImportForm()
    if not form.validate_on_submit():
        return error(400, "file", "; ".join(form.file.errors) or _("Choose a CSV file."))
    imp = contacts.start_import(lst, form.file.data, current_user)
    return redirect(url_for("contacts.import_show", import_id=imp.id))


@bp.get("/imports/<int:import_id>")
@roles(*READERS)
def import_show(import_id: int) -> Any:
    imp = db.get_or_404(ContactImport, import_id)
    template = "contacts/_import.html" if request.htmx else "contacts/import.html"
    return render_template(template, imp=imp)


