"""Login, logout and the user's profile (language)."""

from __future__ import annotations

import secrets
import zoneinfo
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from flask import (
    Blueprint,
    abort,
    flash,
    make_response,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user, login_required, login_user, logout_user
from flask_wtf import FlaskForm
from wtforms import (
    BooleanField,
    EmailField,
    IntegerField,
    PasswordField,
    SelectChoice,
    SelectField,
    StringField,
)
from wtforms.validators import DataRequired, EqualTo, Length, NumberRange, Optional

from .. import accounts
from ..extensions import db
from ..models import ApiToken, User, utcnow
from .api import token_hash

bp = Blueprint("auth", __name__)


class LoginForm(FlaskForm):
    email = EmailField(_l("Email"), validators=[DataRequired(), Length(max=254)])
    password = PasswordField(_l("Password"), validators=[DataRequired(), Length(max=200)])


LANGUAGES = {"en": "English", "ru": "Русский"}


def time_zones() -> list[str]:
    """The IANA zones the system knows (tzdata), for the profile's list and to check what a
    browser sends."""
    return sorted(z for z in zoneinfo.available_timezones() if "/" in z or z == "UTC")


class ProfileForm(FlaskForm):
    locale = SelectField(_l("Language"), choices=[SelectChoice("", _l("Browser default")),
                                                  *(SelectChoice(k, v) for k, v in LANGUAGES.items())])
    time_zone = SelectField(_l("Time zone (every time is shown in it, and the date pickers read it)"))

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.time_zone.choices = [SelectChoice(z, z.replace("_", " ")) for z in time_zones()]


def _safe_next(target: str | None) -> str:
    if target and not urlsplit(target).netloc and target.startswith("/") and not target.startswith("//"):
        return target
    return url_for("outgoing.index")


def _throttled(template: str, wait: int, **ctx: Any) -> Any:
    resp = make_response(render_template(template, wait_message=accounts.wait_message(wait), **ctx), 429)
    resp.headers["Retry-After"] = str(wait)
    return resp


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    form = LoginForm()
    if form.validate_on_submit():
        email = form.email.data.strip().lower()
        wait = accounts.login_wait(email, request.remote_addr)
        if wait:
            # Refused before any password check: not even the right password gets in now.
            return _throttled("auth/login.html", wait, form=form)
        user = db.session.scalar(sa.select(User).where(User.email == email))
        if not accounts.verify_password(user, form.password.data):
            wait = accounts.login_failed(email, request.remote_addr)
            if wait:
                return _throttled("auth/login.html", wait, form=form)
            form.password.errors.append(_("Wrong email or password."))
        elif user is None or not user.is_active:
            form.email.errors.append(_("This account is disabled; ask an administrator."))
        else:
            accounts.login_succeeded(email)
            login_user(user)
            return redirect(_safe_next(request.args.get("next")))
    return render_template("auth/login.html", form=form)


@bp.post("/language")
def language() -> Any:
    """The header's language switch: kept in the profile when signed in, in the session on
    the login page; back to the page it was clicked on."""
    code = request.form.get("locale", "")
    if code not in LANGUAGES:
        abort(400, _("Choose English or Russian."))
    if current_user.is_authenticated:
        current_user.locale = code
        db.session.commit()
    else:
        session["locale"] = code
    return redirect(_safe_next(request.form.get("next")), 303)


@bp.post("/profile/time-zone")
@login_required
def time_zone() -> Any:
    """The browser's own zone (Intl.DateTimeFormat), sent once by static/app.js while the
    profile has none; a zone set in the profile is never replaced this way."""
    zone = request.form.get("time_zone", "")
    if zone not in time_zones():
        abort(400, _("Unknown time zone."))
    if not current_user.time_zone:
        current_user.time_zone = zone
        db.session.commit()
    return "", 204


@bp.post("/logout")
@login_required
def logout() -> Any:
    """Ends this session and every copy of its cookie (the user's other sessions too: the
    session version is per user)."""
    user = db.session.get(User, current_user.id)
    if user is not None:
        user.end_sessions()
        db.session.commit()
    logout_user()
    return redirect(url_for("auth.login"))


class PasswordForm(FlaskForm):
    current_password = PasswordField(_l("Current password"), validators=[DataRequired(), Length(max=200)])
    new_password = PasswordField(_l("New password"), validators=[DataRequired(), Length(max=200)])
    confirm = PasswordField(_l("New password again"), validators=[
        DataRequired(), EqualTo("new_password", message=_l("The two new passwords differ."))])


class TokenForm(FlaskForm):
    name = StringField(_l("Token name"), validators=[DataRequired(), Length(max=100)])
    expires_days = IntegerField(_l("Expires after (days)"), validators=[Optional(), NumberRange(min=1, max=3650)])
    read_only = BooleanField(_l("Read-only (GET requests only)"))


def _tokens() -> list[ApiToken]:
    return list(db.session.scalars(sa.select(ApiToken).where(ApiToken.user_id == current_user.id)
                                   .order_by(ApiToken.id.desc())))


@bp.route("/profile", methods=["GET", "POST"])
@login_required
def profile() -> Any:
    form = ProfileForm(locale=current_user.locale or "", time_zone=current_user.time_zone or "UTC")
    if form.validate_on_submit():
        current_user.locale = form.locale.data or None
        current_user.time_zone = form.time_zone.data
        db.session.commit()
        flash(_("Saved."))
        return redirect(url_for("auth.profile"))
    return _profile(form=form)


def _profile(status: int = 200, **ctx: Any) -> Any:
    ctx.setdefault("form", ProfileForm(locale=current_user.locale or "", time_zone=current_user.time_zone or "UTC"))
    ctx.setdefault("token_form", TokenForm())
    ctx.setdefault("password_form", PasswordForm())
    ctx["password_min"] = accounts.PASSWORD_MIN_LENGTH
    return make_response(render_template("auth/profile.html", tokens=_tokens(), **ctx), status)


@bp.post("/profile/password")
@login_required
def change_password() -> Any:
    """Current password required; the new one must pass accounts.password_problem. Every
    other session of the user ends; this one continues with the new session version."""
    form = PasswordForm()
    if not form.validate_on_submit():
        return _profile(400, password_form=form)
    user = db.get_or_404(User, current_user.id)
    # A wrong current password counts as a failed login: a stolen session cannot guess it.
    wait = accounts.login_wait(user.email, request.remote_addr)
    if wait:
        form.current_password.errors.append(accounts.wait_message(wait))
        resp = _profile(429, password_form=form)
        resp.headers["Retry-After"] = str(wait)
        return resp
    if not accounts.verify_password(user, form.current_password.data):
        wait = accounts.login_failed(user.email, request.remote_addr)
        form.current_password.errors.append(accounts.wait_message(wait) if wait else _("Wrong password."))
        return _profile(429 if wait else 400, password_form=form)
    problem = accounts.password_problem(form.new_password.data, user.email)
    if problem is None and form.new_password.data == form.current_password.data:
        problem = _("The new password is the same as the current one.")
    if problem:
        form.new_password.errors.append(problem)
        return _profile(400, password_form=form)
    accounts.login_succeeded(user.email)
    accounts.password_changed(user, form.new_password.data)
    db.session.commit()
    login_user(user)  # this session carries the new version; copies of the old cookie do not
    flash(_("Password changed; your other sessions were signed out."))
    return redirect(url_for("auth.profile"))


@bp.post("/profile/tokens")
@login_required
def create_token() -> Any:
    """A new API token with the user's role; shown once, stored as a SHA-256."""
    form = TokenForm()
    new = None
    status = 400
    if form.validate_on_submit():
        new = "obx_" + secrets.token_urlsafe(32)
        days = form.expires_days.data
        db.session.add(ApiToken(user_id=current_user.id, name=form.name.data.strip(),
                                token_hash=token_hash(new), read_only=bool(form.read_only.data),
                                expires_at=utcnow() + timedelta(days=days) if days else None))
        db.session.commit()
        status = 201
    return _profile(status, token_form=TokenForm(formdata=None) if new else form, new_token=new)


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
