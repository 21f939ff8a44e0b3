"""The admin's webhooks page: endpoints (URL and events), the secret shown once when made
or rolled, switching on and off, a test ping, and the log of delivery attempts.

The secret is rendered only in the answer to the POST that made it (never flashed: the
session cookie is signed, not encrypted), and never again.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from flask import Blueprint, flash, redirect, render_template, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import IntegerField, SelectChoice, SelectMultipleField, StringField, widgets
from wtforms.validators import InputRequired, NumberRange

from .. import settings, webhooks
from ..enums import Role
from ..extensions import db
from ..models import WebhookAttempt, WebhookEndpoint
from ..states import record
from .access import roles

bp = Blueprint("webhooks", __name__)

LOG_ROWS = 50  # attempts shown per endpoint


class EndpointForm(FlaskForm):
    url = StringField(_l("URL"), render_kw={"inputmode": "url", "autocomplete": "off", "spellcheck": "false",
                                            "placeholder": "https://example.com/outbox-hook"})
    events = SelectMultipleField(_l("Events"), choices=[SelectChoice(k, v) for k, v in webhooks.EVENT_LABELS.items()],
                                 option_widget=widgets.CheckboxInput(), widget=widgets.ListWidget(prefix_label=False),
                                 validate_choice=False)

    def check(self) -> bool:
        """The form's own checks, then the URL's (scheme, host, a public address) next to it."""
        ok = self.validate_on_submit()
        problem = webhooks.url_problem(self.url.data or "")
        if problem:
            self.url.errors = [*self.url.errors, problem]
            ok = False
        chosen = [e for e in (self.events.data or []) if e in webhooks.EVENT_TYPES]
        if not chosen or len(chosen) != len(self.events.data or []):
            self.events.errors = [*self.events.errors, _("Choose at least one event.")]
            ok = False
        return ok


class LimitForm(FlaskForm):
    limit = IntegerField(_l("Switch an endpoint off after this many failed deliveries in a row"),
                         validators=[InputRequired(), NumberRange(1, 10_000)])


def _page(form: EndpointForm | None = None, *, shown_secret: tuple[int, str] | None = None, status: int = 200,
          limit_form: LimitForm | None = None) -> Any:
    endpoints = db.session.scalars(sa.select(WebhookEndpoint).order_by(WebhookEndpoint.id)).all()
    attempts: dict[int, list[WebhookAttempt]] = {}
    for ep in endpoints:
        attempts[ep.id] = list(db.session.scalars(
            sa.select(WebhookAttempt).where(WebhookAttempt.endpoint_id == ep.id)
            .order_by(WebhookAttempt.id.desc()).limit(LOG_ROWS)))
    return render_template("admin/webhooks.html", form=form or EndpointForm(formdata=None), endpoints=endpoints,
                           attempts=attempts, labels=webhooks.EVENT_LABELS, shown_secret=shown_secret,
                           limit_form=limit_form or LimitForm(formdata=None,
                                                              limit=settings.get("webhook_failure_limit"))), status


def _endpoint(endpoint_id: int) -> WebhookEndpoint:
    return db.get_or_404(WebhookEndpoint, endpoint_id)


@bp.get("/admin/webhooks")
@roles(Role.ADMIN)
def index() -> Any:
    return _page()


@bp.post("/admin/webhooks")
@roles(Role.ADMIN)
def create() -> Any:
    form = EndpointForm()
    if not form.check():
        return _page(form, status=400)
    endpoint, secret = webhooks.create_endpoint(form.url.data or "", form.events.data or [], current_user)
    db.session.commit()
    webhooks.subscriptions_changed()
    flash(_("Endpoint added. Copy its secret now: it is not shown again."))
    return _page(shown_secret=(endpoint.id, secret))


@bp.post("/admin/webhooks/<int:endpoint_id>/roll")
@roles(Role.ADMIN)
def roll(endpoint_id: int) -> Any:
    endpoint = _endpoint(endpoint_id)
    secret = webhooks.roll_secret(endpoint, current_user)
    db.session.commit()
    flash(_("New secret made; the old one no longer signs. Copy it now: it is not shown again."))
    return _page(shown_secret=(endpoint.id, secret))


@bp.post("/admin/webhooks/<int:endpoint_id>/enable")
@roles(Role.ADMIN)
def enable(endpoint_id: int) -> Any:
    return _switch(endpoint_id, True, _("Endpoint switched on: events waiting for it are delivered now."))


@bp.post("/admin/webhooks/<int:endpoint_id>/disable")
@roles(Role.ADMIN)
def disable(endpoint_id: int) -> Any:
    return _switch(endpoint_id, False,
                   _("Endpoint switched off: no events are written for it until it is switched on."))


def _switch(endpoint_id: int, on: bool, message: str) -> Any:
    endpoint = _endpoint(endpoint_id)
    if endpoint.enabled != on:
        webhooks.set_enabled(endpoint, on, current_user)
        db.session.commit()
        webhooks.subscriptions_changed()
        flash(message)
    return redirect(url_for("webhooks.index") + f"#endpoint-{endpoint.id}")


@bp.post("/admin/webhooks/<int:endpoint_id>/ping")
@roles(Role.ADMIN)
def ping(endpoint_id: int) -> Any:
    endpoint = _endpoint(endpoint_id)
    if not endpoint.enabled:
        flash(_("Switch the endpoint on first: a switched-off endpoint is sent nothing."), "error")
    else:
        webhooks.ping(endpoint, current_user)
        db.session.commit()
        flash(_("Test event queued; its attempt appears in the log below in a moment."))
    return redirect(url_for("webhooks.index") + f"#endpoint-{endpoint.id}")


@bp.post("/admin/webhooks/<int:endpoint_id>/delete")
@roles(Role.ADMIN)
def delete(endpoint_id: int) -> Any:
    endpoint = _endpoint(endpoint_id)
    webhooks.delete_endpoint(endpoint, current_user)
    db.session.commit()
    webhooks.subscriptions_changed()
    flash(_("Endpoint deleted with its waiting events and its log."))
    return redirect(url_for("webhooks.index"))


@bp.post("/admin/webhooks/limit")
@roles(Role.ADMIN)
def limit() -> Any:
    form = LimitForm()
    if not form.validate_on_submit():
        return _page(limit_form=form, status=400)
    old = settings.get("webhook_failure_limit")
    if form.limit.data != old:
        settings.put("webhook_failure_limit", form.limit.data)
        record(None, "settings", actor=current_user,
               details={"changed": {"webhook_failure_limit": form.limit.data},
                        "before": {"webhook_failure_limit": old}})
        db.session.commit()
        flash(_("Settings saved."))
    return redirect(url_for("webhooks.index") + "#failure-limit")
