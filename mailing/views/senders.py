"""The admin's senders: adding one, and giving it its own relay or leaving it on the default.

The relay's password is write-only: the form never renders it, an empty password field
keeps the stored one, and the page only says whether one is set (mailing/relays.py).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from flask import Blueprint, flash, redirect, render_template, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import EmailField, IntegerField, PasswordField, SelectChoice, SelectField, StringField
from wtforms.validators import DataRequired, Email, Length, NumberRange, Optional

from .. import relays
from ..enums import Role
from ..extensions import db
from ..models import Sender
from ..sending.letter import clean_header_value
from ..states import record
from .access import roles

bp = Blueprint("senders", __name__)


class SenderForm(FlaskForm):
    name = StringField(_l("From name"), validators=[DataRequired(), Length(max=200)])
    email = EmailField(_l("From address"),
                       validators=[DataRequired(), Email(check_deliverability=False), Length(max=254)])


class RelayForm(FlaskForm):
    url = StringField(_l("Relay address"), validators=[Length(max=300)],
                      render_kw={"placeholder": "smtp://relay.example.com:587", "autocomplete": "off"})
    tls = SelectField(_l("Encryption"), choices=[
        SelectChoice("starttls", _l("STARTTLS (usually port 587)")),
        SelectChoice("tls", _l("Implicit TLS, smtps (usually port 465)")),
        SelectChoice("none", _l("None (no password allowed)")),
    ])
    user = StringField(_l("User name (empty: no authentication)"), validators=[Length(max=254)],
                       render_kw={"autocomplete": "off"})
    # PasswordField never renders its value back, even after a failed submit.
    password = PasswordField(_l("Password"), validators=[Length(max=500)],
                             render_kw={"autocomplete": "new-password"})
    cap = IntegerField(_l("Cap, messages per second (empty: the global cap, 0: none)"),
                       validators=[Optional(), NumberRange(0, 100000)])


@bp.route("/admin/senders", methods=["GET", "POST"])
@roles(Role.ADMIN)
def admin_senders() -> Any:
    form = SenderForm()
    if form.validate_on_submit():
        email = form.email.data.strip()
        if db.session.scalar(sa.select(Sender).where(Sender.email == email)):
            form.email.errors.append(_("This sender exists."))
        else:
            db.session.add(Sender(name=clean_header_value(form.name.data), email=email))
            db.session.commit()
            return redirect(url_for("senders.admin_senders"))
    senders = db.session.scalars(sa.select(Sender).order_by(Sender.name)).all()
    views = {s.id: relays.view(s) for s in senders}
    return render_template("admin/senders.html", form=form, senders=senders, relays=views), \
        400 if form.errors else 200


@bp.route("/admin/senders/<int:sender_id>/relay", methods=["GET", "POST"])
@roles(Role.ADMIN)
def relay(sender_id: int) -> Any:
    """Give the sender its own relay, or change it."""
    sender = db.get_or_404(Sender, sender_id)
    current = relays.view(sender)
    form = RelayForm()
    if not form.is_submitted() and current is not None:
        form.url.data, form.tls.data, form.user.data, form.cap.data = \
            current.address, current.tls, current.user, current.cap
    if form.validate_on_submit():
        try:
            relays.save(sender, url=form.url.data or "", tls=form.tls.data, user=form.user.data or "",
                        password=form.password.data or "", cap=form.cap.data)
        except relays.RelayInputError as exc:
            db.session.rollback()
            getattr(form, exc.field).errors.append(exc.message)
        else:
            saved = relays.view(sender)
            assert saved is not None
            record(None, "sender_relay", actor=current_user, details={
                "sender": sender.email, "relay": saved.address, "tls": saved.tls, "user": saved.user,
                "password": "set" if saved.password_set else "none", "cap": saved.cap})
            db.session.commit()
            flash(_("Relay saved for %(sender)s.", sender=sender.email))
            return redirect(url_for("senders.admin_senders"))
    if "@" in (form.url.data or ""):
        # Credentials typed into the address are refused, and never shown back either.
        scheme, sep, rest = form.url.data.rpartition("://")
        form.url.data = scheme + sep + rest.rsplit("@", 1)[-1]
    return render_template("admin/sender_relay.html", form=form, sender=sender, current=current), \
        400 if form.errors else 200


@bp.post("/admin/senders/<int:sender_id>/relay/clear")
@roles(Role.ADMIN)
def clear_relay(sender_id: int) -> Any:
    """Back to the default relay; the stored credentials are dropped."""
    sender = db.get_or_404(Sender, sender_id)
    if sender.relay_url_sealed:
        relays.clear(sender)
        record(None, "sender_relay", actor=current_user, details={"sender": sender.email, "relay": "default"})
        db.session.commit()
        flash(_("%(sender)s now sends through the default relay.", sender=sender.email))
    return redirect(url_for("senders.admin_senders"))
