"""Login, logout and the user's profile (language)."""

from __future__ import annotations

import secrets
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user, login_required, login_user, logout_user
from flask_wtf import FlaskForm
from wtforms import EmailField, PasswordField, SelectChoice, SelectField, StringField
from wtforms.validators import DataRequired, Length

from ..extensions import db
from ..models import ApiToken, User, utcnow

bp = Blueprint("auth", __name__)


class LoginForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Length(max=254)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=200)])


class ProfileForm(FlaskForm):
    locale = SelectField("Language", choices=[SelectChoice("", "Browser default"), SelectChoice("en", "English"),
                                           SelectChoice("ru", "Русский")])


def _safe_next(target: str | None) -> str:
    if target and not urlsplit(target).netloc and target.startswith("/") and not target.startswith("//"):
        return target
    return url_for("outgoing.index")


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    form = LoginForm()
    if form.validate_on_submit():
        user = db.session.scalar(sa.select(User).where(User.email == form.email.data.strip().lower()))
        if user is None or not user.check_password(form.password.data):
            form.password.errors.append(_("Wrong email or password."))
        else:
            login_user(user)
            return redirect(_safe_next(request.args.get("next")))
    return render_template("auth/login.html", form=form)


@bp.post("/logout")
@login_required
def logout() -> Any:
    logout_user()
    return redirect(url_for("auth.login"))


class TokenForm(FlaskForm):
    name = StringField("Token name", validators=[DataRequired(), Length(max=100)])


def _tokens() -> list[ApiToken]:
    return list(db.session.scalars(sa.select(ApiToken).where(ApiToken.user_id == current_user.id)
                                   .order_by(ApiToken.id.desc())))


@bp.route("/profile", methods=["GET", "POST"])
@login_required
def profile() -> Any:
    form = ProfileForm(locale=current_user.locale or "")
    if form.validate_on_submit():
        current_user.locale = form.locale.data or None
        db.session.commit()
        flash(_("Saved."))
        return redirect(url_for("auth.profile"))
    return render_template("auth/profile.html", form=form, token_form=TokenForm(), tokens=_tokens())


@bp.post("/profile/tokens")
@login_required
def create_token() -> Any:
    """A new API token with the user's role; shown once, stored as a SHA-256."""
    from .api import token_hash

    form = TokenForm()
    new = None
    status = 400
    if form.validate_on_submit():
        new = "obx_" + secrets.token_urlsafe(32)
        db.session.add(ApiToken(user_id=current_user.id, name=form.name.data.strip(),
                                token_hash=token_hash(new)))
        db.session.commit()
        status = 201
    return render_template("auth/profile.html", form=ProfileForm(locale=current_user.locale or ""),
                           token_form=form, tokens=_tokens(), new_token=new), status


@bp.post("/profile/tokens/<int:token_id>/revoke")
@login_required
def revoke_token(token_id: int) -> Any:
    token = db.session.get(ApiToken, token_id)
    if token is None or token.user_id != current_user.id:
        abort(404)
    token.revoked_at = token.revoked_at or utcnow()
    db.session.commit()
    flash(_("Token revoked."))
    return redirect(url_for("auth.profile"))
