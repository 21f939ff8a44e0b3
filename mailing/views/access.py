"""Who may use which page: the session's user, the login every page but a few requires,
and the roles each view allows."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import Flask, request
from flask_login import current_user

from ..enums import Role
from ..errors import forbidden, wants_json
from ..extensions import db, login_manager
from ..models import User

# Endpoints reachable without logging in.
PUBLIC_ENDPOINTS = {"auth.login", "auth.language", "static", "unsubscribe.page", "unsubscribe.one_click"}

EDITORS = (Role.ADMIN, Role.EDITOR)
READERS = (Role.ADMIN, Role.EDITOR, Role.MODERATOR, Role.SUPPORT)


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


def _require_login() -> Any:
    if request.endpoint in PUBLIC_ENDPOINTS or request.endpoint is None:
        return None
    if wants_json():
        return None  # the API authenticates by token itself
    if not current_user.is_authenticated:
        return login_manager.unauthorized()
    return None


def init_app(app: Flask) -> None:
    """Every page but PUBLIC_ENDPOINTS needs a login (the roles are checked by each view)."""
    app.before_request(_require_login)
