"""The moderators' queue, the support staff's recipient lookup, and the admin pages."""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user, login_user
from flask_wtf import FlaskForm
from wtforms import (
    BooleanField,
    DecimalField,
    EmailField,
    IntegerField,
    SelectField,
    StringField,
    TextAreaField,
)
from wtforms.validators import DataRequired, Email, Length, NumberRange

from .. import accounts, lifecycle, settings
from ..extensions import db
from ..models import Issue, Role, User
from ..states import record
from ..store import deliveries
from ..store.issues import moderation_queue
from .access import READERS, roles

bp = Blueprint("moderation", __name__)
MODERATORS = (Role.ADMIN, Role.MODERATOR)


@bp.get("/moderation")
@roles(*READERS)
def queue() -> Any:
    """Held issues, oldest first, with the rules they failed and a sample of recipients."""
    items = moderation_queue()
    return render_template("moderation/queue.html", items=items)


@bp.post("/moderation/<int:issue_id>/approve")
@roles(*MODERATORS)
def approve(issue_id: int) -> Any:
    db.get_or_404(Issue, issue_id)
    lifecycle.approve(issue_id, current_user, request.form.get("comment", "")[:2000])
    flash(_("Approved: the issue goes out after the launch delay."))
    return redirect(url_for("moderation.queue"))


@bp.post("/moderation/<int:issue_id>/reject")
@roles(*MODERATORS)
def reject(issue_id: int) -> Any:
    db.get_or_404(Issue, issue_id)
    lifecycle.reject(issue_id, current_user, request.form.get("comment", "")[:2000])
    flash(_("Rejected: the issue is back in drafts with your comment."))
    return redirect(url_for("moderation.queue"))


@bp.get("/lookup")
@roles(*READERS)
def lookup() -> Any:
    """Everything that happened to one person: every issue they were in, and why."""
    q = (request.args.get("q") or "").strip()[:254]
    timeline, stops = deliveries.recipient_timeline(q) if q else ([], [])
    return render_template("moderation/lookup.html", q=q, timeline=timeline, stops=stops)


# --- admin ----------------------------------------------------------------------

class SettingsForm(FlaskForm):
    # Decimal fields show and read their value exactly (places=None): 0.003 stays 0.003,
    # not "0.00" saved back as 0.
    launch_delay_seconds = IntegerField(_l("Launch delay (s)"), validators=[NumberRange(0, 3600)])
    edit_lock_minutes = IntegerField(_l("Edit lock before a scheduled send (min)"), validators=[NumberRange(0, 1440)])
    late_start_grace_seconds = IntegerField(_l("Late-start grace (s)"), validators=[NumberRange(0, 86400)])
    default_portion_size = IntegerField(_l("Spread default for new issues: N recipients (0: all at once)"),
                                        validators=[NumberRange(0, 10_000_000)])
    default_portion_minutes = IntegerField(_l("… every M minutes"), validators=[NumberRange(0, 10_080)])
    relay_rate_per_second = IntegerField(_l("Relay cap, messages per second (0: none)"),
                                         validators=[NumberRange(0, 100000)])
    per_sender_unsubscribe = BooleanField(_l("Unsubscribes stop only that sender's letters"))
    moderation_growth_factor = DecimalField(_l("Hold when the audience exceeds N × the sender's largest recent issue"),
                                            places=None, validators=[NumberRange(1, 1000)])
    moderation_max_audience = IntegerField(_l("Hold when the audience exceeds (0: no cap)"), validators=[NumberRange(0)])
    moderation_fresh_share = DecimalField(_l("Hold when this share never got a letter from us (0–1)"),
                                          places=None, validators=[NumberRange(0, 1)])
    moderation_bounce_rate = DecimalField(_l("Hold when the sender's bounce rate exceeds (0–1)"),
                                          places=None, validators=[NumberRange(0, 1)])
    moderation_complaint_rate = DecimalField(_l("Hold when the sender's complaint rate exceeds (0–1)"),
                                             places=None, validators=[NumberRange(0, 1)])
    rate_window = IntegerField(_l("Rate interrupts: judge over the last N processed recipients"),
                               validators=[NumberRange(20, 1_000_000)])
    interrupt_bounce_rate = DecimalField(_l("Interrupt when the bounce share exceeds (0–1)"), places=None,
                                         validators=[NumberRange(0, 1)])
    interrupt_complaint_rate = DecimalField(_l("Interrupt when the complaint share exceeds (0–1)"), places=None,
                                            validators=[NumberRange(0, 1)])
    soft_bounce_limit = IntegerField(_l("Soft bounces from this many issues make an address undeliverable (0: never)"),
                                     validators=[NumberRange(0, 100)])
    api_requests_per_minute = IntegerField(_l("API requests per minute per token (0: no limit)"),
                                           validators=[NumberRange(0, 1_000_000)])
    spam_words = TextAreaField(_l("Spam words (one per line)"), validators=[Length(max=100_000)])
    blocked_domains = TextAreaField(_l("Blocklisted link domains (one per line)"), validators=[Length(max=100_000)])


LIST_SETTINGS = ("spam_words", "blocked_domains")


def _submitted(field: Any, name: str) -> Any:
    """A settings field's value as it is stored: lists from lines, decimals as the float the
    admin typed (str → float, never through a rounded Decimal)."""
    value = field.data
    if name in LIST_SETTINGS:
        return [line.strip() for line in (value or "").splitlines() if line.strip()]
    if isinstance(field, DecimalField):
        return float(value)
    return value


@bp.route("/admin/settings", methods=["GET", "POST"])
@roles(Role.ADMIN)
def admin_settings() -> Any:
    form = SettingsForm()
    if request.method == "GET":
        for name, field in form._fields.items():
            if name in settings.DEFAULTS:
                value = settings.get(name)
                field.data = "\n".join(value) if name in LIST_SETTINGS else value
    elif form.validate_on_submit():
        # Only what differs from the stored value is written and journalled (old → new).
        changed, before = {}, {}
        for name, field in form._fields.items():
            if name not in settings.DEFAULTS:
                continue
            value, old = _submitted(field, name), settings.get(name)
            if value != old:
                changed[name], before[name] = value, old
                settings.put(name, value)
        if changed:
            record(None, "settings", actor=current_user,
                   details=json.loads(json.dumps({"changed": changed, "before": before}, default=str)))
            db.session.commit()
            flash(_("Settings saved."))
        else:
            flash(_("Nothing to save: no setting was changed."))
        return redirect(url_for("moderation.admin_settings"))
    return render_template("admin/settings.html", form=form), 400 if form.errors else 200


class UserForm(FlaskForm):
    email = EmailField(_l("Email"), validators=[DataRequired(), Email(check_deliverability=False), Length(max=254)])
    role = SelectField(_l("Role"), choices=[r.value for r in Role])
    password = StringField(_l("Password"), validators=[DataRequired(), Length(min=10, max=200)])


@bp.route("/admin/users", methods=["GET", "POST"])
@roles(Role.ADMIN)
def admin_users() -> Any:
    form = UserForm()
    if form.validate_on_submit():
        email = form.email.data.strip().lower()
        if db.session.scalar(sa.select(User).where(User.email == email)):
            form.email.errors.append(_("A user with this email exists."))
        elif problem := accounts.password_problem(form.password.data, email):
            form.password.errors.append(problem)
        else:
            user = User(email=email, role=form.role.data)
            user.set_password(form.password.data)
            db.session.add(user)
            db.session.flush()
            accounts.record_created(user, current_user)
            db.session.commit()
            return redirect(url_for("moderation.admin_users"))
    users = db.session.scalars(sa.select(User).order_by(User.email)).all()
    return render_template("admin/users.html", form=form, users=users, roles=[r.value for r in Role]), \
        400 if form.errors else 200


def _user_change(user_id: int, change: Any) -> Any:
    """Apply one admin change to a user (role, disable, enable, sign out everywhere) with
    its journal row in one transaction; a refusal (AccountError) is answered with its reason
    by mailing/errors.py, which rolls the change back."""
    user = db.get_or_404(User, user_id)
    reason = request.form.get("reason", "")[:2000]
    changed = change(user, reason)
    db.session.commit()
    if user.id == current_user.id:
        login_user(user)  # "sign out everywhere" on oneself keeps this session, with the new version
    if changed:
        flash(_("Saved."))
    return redirect(url_for("moderation.admin_users"))


@bp.post("/admin/users/<int:user_id>/role")
@roles(Role.ADMIN)
def admin_user_role(user_id: int) -> Any:
    return _user_change(user_id, lambda user, reason: accounts.change_role(
        user, request.form.get("role", ""), current_user, reason))


@bp.post("/admin/users/<int:user_id>/disable")
@roles(Role.ADMIN)
def admin_user_disable(user_id: int) -> Any:
    return _user_change(user_id, lambda user, reason: accounts.disable(user, current_user, reason))


@bp.post("/admin/users/<int:user_id>/enable")
@roles(Role.ADMIN)
def admin_user_enable(user_id: int) -> Any:
    return _user_change(user_id, lambda user, reason: accounts.enable(user, current_user, reason))


@bp.post("/admin/users/<int:user_id>/sign-out")
@roles(Role.ADMIN)
def admin_user_sign_out(user_id: int) -> Any:
    return _user_change(user_id, lambda user, reason: accounts.sign_out_everywhere(user, current_user, reason))
