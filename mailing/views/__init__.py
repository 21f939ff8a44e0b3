"""The web layer's wiring: the blueprints, the app-wide request hooks and error answers,
and the values every template sees. The helpers the views share live in leaf modules
(access.py, params.py, mailing/errors.py): no view imports from this file."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from flask import Flask, Response
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from htmx_flask import request

from .. import errors
from ..enums import Role
from ..extensions import db
from ..models import Issue
from ..package import balance as package_balance
from ..states import LABELS, IssueStatus, available_actions
from ..store.issues import held_rules, progress
from . import (
    access,
    api,
    auth,
    bounces,
    contacts,
    dkim,
    humane,
    materials,
    moderation,
    outgoing,
    pacing,
    package,
    params,
    sandbox,
    senders,
    stoplists,
    unsubscribe,
    webhooks,
)
from .access import EDITORS

ACTION_LABELS = {"pause": _l("Pause"), "resume": _l("Resume"), "send_whole": _l("Send whole"),
                 "cancel": _l("Cancel")}
# What each action does, shown under its name in the menu.
ACTION_HINTS = {"pause": _l("Stop sending until someone resumes; nothing is lost"),
                "resume": _l("Go on with the recipients not yet sent"),
                "send_whole": _l("Send everything left now, ignoring the spread over time"),
                "cancel": _l("End it for good; those not yet sent will not get it")}


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


def _held() -> int:
    if not current_user.is_authenticated:
        return 0
    return db.session.scalar(
        sa.select(sa.func.count()).select_from(Issue).where(Issue.status == "moderation")) or 0


def _package_balance() -> int | None:
    """The balance the navigation shows to editors and admins (None: unlimited)."""
    if not current_user.is_authenticated or current_user.role not in EDITORS:
        return None
    return package_balance()


def _template_globals() -> dict[str, Any]:
    return {"held_count": Lazy(_held), "package_left": _package_balance, "STATUS_LABELS": LABELS,
            "IssueStatus": IssueStatus, "Role": Role, "EDITORS": EDITORS, "ACTION_LABELS": ACTION_LABELS,
            "ACTION_HINTS": ACTION_HINTS, "held_rules": held_rules,
            "available_actions": available_actions, "issue_progress": progress}


def _vary(resp: Response) -> Response:
    # The security headers are set in mailing/security.py.
    if request.htmx:
        resp.vary.add("HX-Request")
    return resp


def register(app: Flask) -> None:
    params.init_app(app)  # the strict <int:> converter must be in place before any route is added
    errors.init_app(app)
    humane.init_app(app)
    access.init_app(app)
    for bp in (auth.bp, outgoing.bp, sandbox.bp, unsubscribe.bp, api.bp, stoplists.bp, moderation.bp,
               contacts.bp, senders.bp, pacing.bp, dkim.bp, package.bp, bounces.bp, materials.bp, webhooks.bp):
        app.register_blueprint(bp)
    app.context_processor(_template_globals)
    app.after_request(_vary)
