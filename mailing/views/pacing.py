"""The admins' Pacing page: receiving-domain groups with their limits, and senders'
warm-up schedules (mailing/limits.py does the work)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from flask import Blueprint, flash, redirect, render_template, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import DateField, DecimalField, HiddenField, IntegerField, StringField, TextAreaField
from wtforms.validators import InputRequired, Length, NumberRange, Optional

from .. import clock, limits, queueing
from ..enums import Role
from ..extensions import db
from ..models import Sender
from .access import roles

bp = Blueprint("pacing", __name__)


class GroupForm(FlaskForm):
    group_id = HiddenField()
    name = StringField(_l("Name"), validators=[InputRequired(), Length(max=60)])
    domains = TextAreaField(_l("Domains (one per line; “hotmail.*” for every ending)"),
                            validators=[Length(max=20_000)])
    rate = DecimalField(_l("Letters per second per relay (0: no limit)"), places=None,
                        validators=[InputRequired(), NumberRange(0, 100_000)])


class WarmupForm(FlaskForm):
    sender_id = HiddenField()
    start = IntegerField(_l("First day's cap (empty: no warm-up)"), validators=[Optional(), NumberRange(1, 10_000_000)])
    factor = DecimalField(_l("Daily factor"), places=None, default=1.5, validators=[Optional(), NumberRange(1, 10)])
    started_on = DateField(_l("First day"), validators=[Optional()])


def _slowed_now() -> dict[str, float]:
    """Groups slowed by deferrals right now, on any relay: key → rate."""
    r = queueing.redis_connection()
    out: dict[str, float] = {}
    for key in r.scan_iter(match="outbox:pace:*:group:*:adapt", count=1000):
        group = key.decode().rsplit(":group:", 1)[1].removesuffix(":adapt")
        rate = r.hget(key, "rate")
        if rate is not None:
            out[group] = min(float(rate), out.get(group, float("inf")))
    return out


def _page(group_form: GroupForm | None = None, warmup_form: WarmupForm | None = None,
          form_for: str | None = None, status: int = 200) -> Any:
    senders = db.session.scalars(sa.select(Sender).order_by(Sender.email)).all()
    warmups = {s.id: limits.warmup_of(s.id) for s in senders}
    today = clock.now().date()
    caps = {sid: limits.daily_cap(w, today) for sid, w in warmups.items() if w is not None}
    return render_template(
        "admin/pacing.html", groups=limits.ordered_groups(), slowed=_slowed_now(),
        group_form=group_form or GroupForm(formdata=None), warmup_form=warmup_form or WarmupForm(formdata=None),
        form_for=form_for, senders=senders, warmups=warmups, caps=caps), status


@bp.get("/admin/pacing")
@roles(Role.ADMIN)
def index() -> Any:
    return _page()


@bp.post("/admin/pacing/groups")
@roles(Role.ADMIN)
def save_group() -> Any:
    form = GroupForm()
    group_id = int(form.group_id.data) if (form.group_id.data or "").isdigit() else None
    if form.validate():
        try:
            limits.save_group(group_id, form.name.data, form.domains.data or "", float(form.rate.data),
                              current_user)
        except limits.LimitError as exc:
            db.session.rollback()
            getattr(form, exc.field if exc.field in ("name", "domains", "rate") else "name").errors.append(
                _(str(exc)))
        else:
            db.session.commit()
            flash(_("Saved. Runners apply it within seconds."))
            return redirect(url_for("pacing.index"))
    return _page(group_form=form, form_for=f"g{group_id or 'new'}", status=400)


@bp.post("/admin/pacing/groups/<int:group_id>/delete")
@roles(Role.ADMIN)
def delete_group(group_id: int) -> Any:
    form = FlaskForm()
    if not form.validate():
        return _page(status=400)
    try:
        limits.delete_group(group_id, current_user)
    except limits.LimitError as exc:
        db.session.rollback()
        flash(_(str(exc)), "error")
        return redirect(url_for("pacing.index"))
    db.session.commit()
    flash(_("Deleted."))
    return redirect(url_for("pacing.index"))


@bp.post("/admin/pacing/warmup/<int:sender_id>")
@roles(Role.ADMIN)
def save_warmup(sender_id: int) -> Any:
    db.get_or_404(Sender, sender_id)
    form = WarmupForm()
    if form.validate():
        try:
            limits.set_warmup(sender_id, form.start.data, float(form.factor.data or 1.5),
                              form.started_on.data or clock.now().date(), current_user)
        except limits.LimitError as exc:
            db.session.rollback()
            getattr(form, exc.field).errors.append(_(str(exc)))
        else:
            db.session.commit()
            flash(_("Saved."))
            return redirect(url_for("pacing.index"))
    return _page(warmup_form=form, form_for=f"w{sender_id}", status=400)
