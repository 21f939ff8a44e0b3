"""Subscribers → Stop-lists: every list with its count; add by paste or CSV, remove, clear."""

from __future__ import annotations

import dataclasses
import json
import secrets
from typing import Any

import sqlalchemy as sa
from flask import Blueprint, abort, current_app, flash, redirect, render_template, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm
from flask_wtf.file import FileField
from htmx_flask import request
from wtforms import BooleanField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length

from .. import queueing, stopimports, stoplists, uploads
from ..errors import error
from ..extensions import db
from ..models import StopList, StopListImport
from .access import EDITORS, READERS, roles
from .params import form_ids, page_arg

bp = Blueprint("stoplists", __name__, url_prefix="/stoplists")


class ListForm(FlaskForm):
    name = StringField(_l("Name"), validators=[DataRequired(), Length(max=200)])


class AddForm(FlaskForm):
    items = TextAreaField(_l("Addresses and phone numbers"), validators=[Length(max=20_000_000)])
    upload = FileField("or a CSV file (first column)")
    confirm = BooleanField(_l("I confirm these people must not get mail"))


def _list(list_id: int) -> StopList:
    stop = db.session.get(StopList, list_id)
    if stop is None:
        abort(404)
    return stop


def _page(stop: StopList, add_form: AddForm | None = None, report: Any = None, status: int = 200,
          rename_form: ListForm | None = None) -> Any:
    q = (request.args.get("q") or "").strip()[:254]
    page = page_arg()
    rows, has_next = stoplists.entries_page(stop, q, page)
    quota = stoplists.removal_quota() if stop.code == "unsubscribed" else None
    return render_template("stoplists/show.html", stop=stop, rows=rows, has_next=has_next, q=q, page=page,
                           add_form=add_form or AddForm(), rename_form=rename_form or ListForm(name=stop.name),
                           report=report, quota=quota, imports=stopimports.recent(stop.id)), status


@bp.get("/")
@roles(*READERS)
def index() -> Any:
    return _index(ListForm())


def _index(form: ListForm, status: int = 200) -> Any:
    """Every stop-list, with `form`'s errors beside the new list's name."""
    lists = db.session.scalars(sa.select(StopList).order_by(StopList.id)).all()
    return render_template("stoplists/index.html", lists=lists, counts=stoplists.counts(), form=form), status


@bp.post("/")
@roles(*EDITORS)
def create() -> Any:
    form = ListForm()
    if not form.validate_on_submit():
        return _index(form, 400)
    stop = StopList(name=form.name.data.strip())
    db.session.add(stop)
    db.session.commit()
    return redirect(url_for("stoplists.show", list_id=stop.id))


@bp.get("/<int:list_id>")
@roles(*READERS)
def show(list_id: int) -> Any:
    return _page(_list(list_id), report=_kept_report(request.args.get("report") or ""))


@bp.post("/<int:list_id>/add")
@roles(*EDITORS)
def add(list_id: int) -> Any:
    stop = _list(list_id)
    form = AddForm()
    if not form.validate_on_submit():
        return _page(stop, form, status=400)
    upload = form.upload.data
    if upload is not None and uploads.upload_size(upload) > current_app.config["STOPLIST_JOB_BYTES"]:
        # Too much for one web request: stored, and added by a job with a progress bar.
        if (form.items.data or "").strip():
            form.items.errors.append(_("A large file is imported on its own: empty this box, "
                                       "or add these lines separately."))
            return _page(stop, form, status=400)
        if not form.confirm.data:
            form.confirm.errors.append(_("Tick the box to confirm."))
            return _page(stop, form, status=400)
        imp = stopimports.start(stop, upload, actor_id=current_user.id)
        return redirect(url_for("stoplists.import_show", import_id=imp.id), 303)
    # Nothing below needs the database until add_pasted has checked every line: end the
    # transaction the login check opened, which on SQLite holds the write lock, so other
    # requests do not wait for the parsing (objects keep their values after a commit).
    db.session.commit()
    text = form.items.data or ""
    if upload is not None:
        # A CSV from another service: the first column of each row, one item per line.
        text += "\n" + stopimports.csv_text(upload.read())
        source = "import"
    else:
        source = "ui"
    if not text.strip():
        form.items.errors.append(_("Paste at least one address or phone number."))
        return _page(stop, form, status=400)
    if not form.confirm.data:
        form.confirm.errors.append(_("Tick the box to confirm."))
        return _page(stop, form, status=400)
    report = stoplists.add_pasted(stop, text, actor=current_user, source=source,
                                  region=current_app.config["DEFAULT_PHONE_REGION"])
    # Post/Redirect/Get: a refresh of the report page must not paste again.
    return redirect(url_for("stoplists.show", list_id=stop.id, report=_keep_report(report)), 303)


REPORT_SHOWN = 1000  # rejected lines kept for the report page; the count covers them all
REPORT_TTL = 3600


def _report_key(token: str) -> str:
    return f"outbox:stoplist-report:{current_user.id}:{token}"


def _keep_report(report: stoplists.Report) -> str:
    """The paste's report, kept an hour in Redis for the page the POST redirects to; only
    the user who pasted can read it (the key carries their id)."""
    token = secrets.token_urlsafe(12)
    data = {"added": report.added, "already": report.already, "rejected_count": len(report.rejected),
            "rejected": [dataclasses.asdict(r) for r in report.rejected[:REPORT_SHOWN]]}
    queueing.redis_connection().set(_report_key(token), json.dumps(data), ex=REPORT_TTL)
    return token


def _kept_report(token: str) -> dict[str, Any] | None:
    if not token or len(token) > 40:
        return None
    raw = queueing.redis_connection().get(_report_key(token))
    return json.loads(raw) if raw else None


@bp.post("/<int:list_id>/remove")
@roles(*EDITORS)
def remove(list_id: int) -> Any:
    stop = _list(list_id)
    ids = form_ids("entry")
    if not ids:
        return error(400, "entry", _("Tick the entries to remove."))
    if request.form.get("confirm") != "yes":
        return error(400, "confirm", _("Tick the box to confirm the removal."))
    n = stoplists.remove_entries(stop, ids, actor=current_user, source="ui")
    flash(_("Removed %(n)s entries.", n=n))
    return redirect(url_for("stoplists.show", list_id=stop.id))


@bp.post("/<int:list_id>/clear")
@roles(*EDITORS)
def clear(list_id: int) -> Any:
    stop = _list(list_id)
    if request.form.get("confirm") != "yes":
        return error(400, "confirm", _("Tick the box to confirm clearing the list."))
    try:
        n = stoplists.clear(stop, actor=current_user, source="ui")
    except stoplists.SystemListError as exc:
        # Not "system_list": a team's own list cannot be cleared either.
        return error(409, "not_clearable", str(exc))
    flash(_("Cleared %(n)s entries.", n=n))
    return redirect(url_for("stoplists.show", list_id=stop.id))


@bp.post("/<int:list_id>/rename")
@roles(*EDITORS)
def rename(list_id: int) -> Any:
    stop = _list(list_id)
    form = ListForm()
    if not form.validate_on_submit():
        return _page(stop, status=400, rename_form=form)
    stoplists.rename(stop, form.name.data.strip())
    return redirect(url_for("stoplists.show", list_id=stop.id))


@bp.post("/<int:list_id>/delete")
@roles(*EDITORS)
def delete(list_id: int) -> Any:
    stop = _list(list_id)
    stoplists.delete(stop)
    return redirect(url_for("stoplists.index"))


@bp.get("/imports/<int:import_id>")
@roles(*READERS)
def import_show(import_id: int) -> Any:
    """A large CSV's import: progress while the job runs, then the per-line report."""
    imp = db.session.get(StopListImport, import_id)
    if imp is None:
        abort(404)
    template = "stoplists/_import.html" if request.htmx else "stoplists/import.html"
    return render_template(template, imp=imp, stop=db.session.get(StopList, imp.list_id))
