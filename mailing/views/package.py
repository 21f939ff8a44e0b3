"""The admins' Letter package page: the balance, top-ups and the unlimited switch
(mailing/package.py does the work)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, flash, redirect, render_template, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_babel import ngettext
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import BooleanField, IntegerField
from wtforms.validators import InputRequired, NumberRange

from .. import package
from ..enums import Role
from ..store.journal import events_of
from .access import roles

bp = Blueprint("package", __name__)


class TopUpForm(FlaskForm):
    amount = IntegerField(_l("Letters to add"), validators=[
        InputRequired(_l("Give the number of letters to add.")), NumberRange(1, package.MAX_TOP_UP)])


class ModeForm(FlaskForm):
    unlimited = BooleanField(_l("Unlimited letters (no package)"))


def _page(top_up: TopUpForm | None = None, status: int = 200) -> Any:
    mode = ModeForm(unlimited=package.unlimited())
    return render_template("admin/package.html", balance=package.balance(), top_up=top_up or TopUpForm(),
                           mode=mode, history=events_of("package_topped_up", "package_mode")), status


@bp.get("/admin/package")
@roles(Role.ADMIN)
def index() -> Any:
    return _page()


@bp.post("/admin/package/top-up")
@roles(Role.ADMIN)
def top_up() -> Any:
    form = TopUpForm()
    if not form.validate_on_submit():
        return _page(form, 400)
    after = package.top_up(form.amount.data, current_user)
    flash(ngettext("Added %(n)s letter; the balance is %(b)s.", "Added %(n)s letters; the balance is %(b)s.",
                   form.amount.data, n=f"{form.amount.data:,}", b=f"{after:,}"))
    return redirect(url_for("package.index"), 303)


@bp.post("/admin/package/mode")
@roles(Role.ADMIN)
def mode() -> Any:
    form = ModeForm()
    if not form.validate_on_submit():
        return _page(status=400)
    package.set_unlimited(bool(form.unlimited.data), current_user)
    flash(_("Saved."))
    return redirect(url_for("package.index"), 303)
