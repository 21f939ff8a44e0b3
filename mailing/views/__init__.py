"""Blueprints, access rules shared by every route, and error pages."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

import sqlalchemy as sa
from flask import Flask, jsonify, render_template, request
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf.csrf import CSRFError

from ..extensions import db, login_manager
from ..models import Role, User
from ..states import LABELS, IllegalTransition, IssueNotFound, IssueStatus, available_actions

# Endpoints reachable without logging in.
PUBLIC_ENDPOINTS = {"auth.login", "static", "unsubscribe.page", "unsubscribe.one_click"}


@login_manager.user_loader
def _load_user(user_id: str) -> User | None:
    """The session holds "id.version" (User.get_id): a cookie made before the version moved
    (logout, password change, disabling, sign out everywhere) no longer loads anyone."""
    uid, _, version = str(user_id).partition(".")
    if not (uid.isascii() and uid.isdigit() and version.isascii() and version.isdigit()) or len(uid) > 18:
        return None
    user = db.session.get(User, int(uid), populate_existing=True)
    if user is None or user.disabled_at is not None or str(user.session_version) != version:
        return None
    return user


def roles(*allowed: str) -> Callable:
    """Refuse (403) a logged-in user whose role is not among `allowed`."""

    def deco(view: Callable) -> Callable:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if not current_user.is_authenticated:
                return login_manager.unauthorized()
            if current_user.role not in allowed:
                return forbidden()
            return view(*args, **kwargs)

        wrapper.allowed_roles = allowed  # type: ignore[attr-defined]
        return wrapper

    return deco


ACTION_LABELS = {"pause": _l("Pause"), "resume": _l("Resume"), "send_whole": _l("Send whole"),
                 "cancel": _l("Cancel")}

EDITORS = (Role.ADMIN, Role.EDITOR)
READERS = (Role.ADMIN, Role.EDITOR, Role.MODERATOR, Role.SUPPORT)


def wants_json() -> bool:
    return request.path.startswith("/api/")


def error(status: int, code: str, message: str) -> Any:
    if wants_json():
        return jsonify(error=code, message=message), status
    if request.headers.get("HX-Request"):
        return render_template("_flash_error.html", message=message), status
    return render_template("error.html", status=status, message=message), status


def forbidden() -> Any:
    return error(403, "forbidden", "Your role does not allow this.")


class Lazy:
    """A template value computed on first use: a polled partial that never shows the
    navigation does not pay for its query."""

    def __init__(self, compute: Callable[[], Any]):
        self._compute = compute
        self._done = False
        self._value: Any = None

    @property
    def value(self) -> Any:
        if not self._done:
            self._value, self._done = self._compute(), True
        return self._value

    def __bool__(self) -> bool:
        return bool(self.value)

    def __str__(self) -> str:
        return str(self.value)

    def __int__(self) -> int:
        return int(self.value)


def register(app: Flask) -> None:
    from . import api, auth, contacts, moderation, outgoing, params, sandbox, stoplists, unsubscribe

    params.init_app(app, error)  # the strict <int:> converter must be in place before any route is added
    for bp in (auth.bp, outgoing.bp, sandbox.bp, unsubscribe.bp, api.bp, stoplists.bp, moderation.bp,
               contacts.bp):
        app.register_blueprint(bp)

    @app.before_request
    def _require_login() -> Any:
        if request.endpoint in PUBLIC_ENDPOINTS or request.endpoint is None:
            return None
        if wants_json():
            return None  # the API authenticates by token itself
        if not current_user.is_authenticated:
            return login_manager.unauthorized()
        return None

    @app.context_processor
    def _globals() -> dict[str, Any]:
        from ..models import Issue
        from ..queries import progress

        def held() -> int:
            if not current_user.is_authenticated:
                return 0
            return db.session.scalar(
                sa.select(sa.func.count()).select_from(Issue).where(Issue.status == "moderation")) or 0

        return {"held_count": Lazy(held), "STATUS_LABELS": LABELS, "IssueStatus": IssueStatus, "Role": Role,
                "EDITORS": EDITORS, "ACTION_LABELS": ACTION_LABELS,
                "available_actions": available_actions, "issue_progress": progress}

    @app.errorhandler(IllegalTransition)
    def _illegal(exc: IllegalTransition) -> Any:
        return error(409, "illegal_transition", exc.message)

    @app.errorhandler(IssueNotFound)
    def _missing(exc: IssueNotFound) -> Any:
        return error(404, "not_found", "No such issue.")

    @app.errorhandler(CSRFError)
    def _csrf(exc: CSRFError) -> Any:
        return error(400, "csrf", exc.description)

    @app.errorhandler(404)
    def _404(exc: Any) -> Any:
        return error(404, "not_found", "Nothing here.")

    @app.errorhandler(403)
    def _403(exc: Any) -> Any:
        return forbidden()

    @app.after_request
    def _headers(resp: Any) -> Any:
        # The security headers are set in mailing/security.py.
        if request.headers.get("HX-Request"):
            resp.headers["Vary"] = "HX-Request"
        return resp
