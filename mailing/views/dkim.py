"""The admin's DKIM page: a key per sender domain, the TXT record to publish, a DNS check,
and rotation (a new key waits until its record is published, then takes over).

Private keys never leave mailing/dkim.py: this page shows selectors, public keys and
records only.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from flask import Blueprint, current_app, flash, redirect, render_template, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import SelectChoice, SelectField
from wtforms.validators import DataRequired

from .. import dkim
from ..enums import Role
from ..extensions import db
from ..models import DkimKey
from ..states import record
from .access import roles

bp = Blueprint("dkim", __name__)


class KeyForm(FlaskForm):
    domain = SelectField(_l("Sender domain"), validators=[DataRequired()], validate_choice=False)
    algorithm = SelectField(_l("Algorithm"), choices=[
        SelectChoice(dkim.RSA, _l("RSA 2048 (every receiver checks it)")),
        SelectChoice(dkim.ED25519, _l("Ed25519 (signs beside RSA; newer receivers check it)")),
    ])


def _page(form: KeyForm, checks: dict[int, dkim.DnsCheck] | None = None, status: int = 200) -> Any:
    domains = dkim.sender_domains()
    form.domain.choices = [SelectChoice(d, d) for d in domains]
    keys = db.session.scalars(sa.select(DkimKey).order_by(
        DkimKey.domain, DkimKey.algorithm.desc(), DkimKey.active.desc(), DkimKey.id.desc())).all()
    by_domain: dict[str, list[DkimKey]] = {d: [] for d in domains}
    for key in keys:
        by_domain.setdefault(key.domain, []).append(key)
    return render_template("admin/dkim.html", form=form, by_domain=by_domain, checks=checks or {},
                           dkim=dkim, senders_domains=set(domains)), status


@bp.get("/admin/dkim")
@roles(Role.ADMIN)
def index() -> Any:
    return _page(KeyForm())


@bp.post("/admin/dkim")
@roles(Role.ADMIN)
def generate() -> Any:
    form = KeyForm()
    if not form.validate_on_submit():
        return _page(form, status=400)
    try:
        key = dkim.generate(form.domain.data or "", form.algorithm.data or dkim.RSA)
    except dkim.DkimError as exc:
        db.session.rollback()
        form.domain.errors.append(str(exc))
        return _page(form, status=400)
    record(None, "dkim_key_generated", actor=current_user, details={
        "domain": key.domain, "selector": key.selector, "algorithm": key.algorithm, "active": key.active})
    db.session.commit()
    if key.active:
        flash(_("Key %(selector)s made: letters from %(domain)s are signed with it from now on. Publish "
                "its record.", selector=key.selector, domain=key.domain))
    else:
        flash(_("Key %(selector)s made. Publish its record, check it, then switch to it.",
                selector=key.selector))
    return redirect(url_for("dkim.index") + f"#key-{key.id}")


@bp.post("/admin/dkim/<int:key_id>/check")
@roles(Role.ADMIN)
def check(key_id: int) -> Any:
    """Look the record up now; the answer is drawn beside the key (never an error page)."""
    key = db.get_or_404(DkimKey, key_id)
    servers = current_app.config.get("DNS_NAMESERVERS") or None
    result = dkim.check_dns(key, servers.split(",") if isinstance(servers, str) else servers)
    return _page(KeyForm(formdata=None), checks={key.id: result})


@bp.post("/admin/dkim/<int:key_id>/activate")
@roles(Role.ADMIN)
def activate(key_id: int) -> Any:
    key = db.get_or_404(DkimKey, key_id)
    if not key.active:
        dkim.activate(key)
        record(None, "dkim_key_activated", actor=current_user, details={
            "domain": key.domain, "selector": key.selector, "algorithm": key.algorithm})
        db.session.commit()
        flash(_("Letters from %(domain)s are now signed with %(selector)s. Keep the old record "
                "published for a few days: letters still on their way need it.",
                domain=key.domain, selector=key.selector))
    return redirect(url_for("dkim.index") + f"#key-{key.id}")


@bp.post("/admin/dkim/<int:key_id>/delete")
@roles(Role.ADMIN)
def delete(key_id: int) -> Any:
    key = db.get_or_404(DkimKey, key_id)
    details = {"domain": key.domain, "selector": key.selector, "algorithm": key.algorithm,
               "was_active": key.active}
    db.session.delete(key)
    record(None, "dkim_key_deleted", actor=current_user, details=details)
    db.session.commit()
    flash(_("Key %(selector)s of %(domain)s deleted; its DNS record can go.",
            selector=details["selector"], domain=details["domain"]))
    return redirect(url_for("dkim.index"))
