"""The admins' page of reports that came back: quarantined ones with why, recent applied ones."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user

from .. import states
from ..enums import Role
from ..extensions import db
from ..store import reports
from .access import roles
from .params import page_arg

bp = Blueprint("bounces", __name__)

KIND_LABELS = {"hard": _l("hard bounce"), "soft": _l("soft bounce"), "complaint": _l("complaint")}


@bp.app_context_processor
def _labels() -> dict[str, Any]:
    return {"KIND_LABELS": KIND_LABELS}


@bp.get("/admin/bounces")
@roles(Role.ADMIN)
def index() -> Any:
    page = page_arg()
    rows, has_next = reports.quarantined(page)
    return render_template("admin/bounces.html", quarantined=rows, has_next=has_next, page=page,
                           applied=reports.recent_applied(), counts=reports.counts())


@bp.post("/admin/bounces/<int:report_id>/delete")
@roles(Role.ADMIN)
def delete(report_id: int) -> Any:
    if not reports.delete_quarantined(report_id):
        abort(404, _("No such quarantined report."))
    states.record(None, "bounce_report_deleted", actor=current_user, details={"report": report_id})
    db.session.commit()
    flash(_("The report was deleted."))
    return redirect(url_for("bounces.index"), 303)
