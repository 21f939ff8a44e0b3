"""The materials library, letter templates, and assembling a Draft's letter from materials
(mailing/materials.py does the work). Editors and admins change; everyone reads."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user

from .. import materials
from ..extensions import db
from ..models import Issue, LetterTemplate, Material, Section
from ..states import IllegalTransition, allowed, refusal
from .access import EDITORS, READERS, roles
from .params import arg_int, form_int

bp = Blueprint("materials", __name__)


def _library(errors: dict[str, str] | None = None, values: dict[str, Any] | None = None, status: int = 200) -> Any:
    q = (request.args.get("q") or "").strip()[:200]
    section = arg_int("section", minimum=1, maximum=2**31)
    return render_template("materials/index.html", items=materials.search(q, section), q=q, section=section,
                           sections=materials.sections(), errors=errors or {}, values=values or {}), status


@bp.get("/materials")
@roles(*READERS)
def index() -> Any:
    return _library()


@bp.post("/materials")
@roles(*EDITORS)
def create() -> Any:
    try:
        materials.save_material(None, request.form.to_dict(), current_user)
    except materials.MaterialError as exc:
        return _library({exc.field: exc.message}, request.form.to_dict(), 400)
    flash(_("The material was added."))
    return redirect(url_for("materials.index"), 303)


@bp.post("/materials/sections")
@roles(*EDITORS)
def add_section() -> Any:
    try:
        materials.add_section(request.form.get("name"))
    except materials.MaterialError as exc:
        return _library({"section_name": exc.message}, request.form.to_dict(), 400)
    flash(_("The section was added."))
    return redirect(url_for("materials.index"), 303)


@bp.post("/materials/sections/<int:section_id>")
@roles(*EDITORS)
def rename_section(section_id: int) -> Any:
    section = db.get_or_404(Section, section_id, description=_("No such section."))
    try:
        materials.rename_section(section, request.form.get("name"))
    except materials.MaterialError as exc:
        db.session.rollback()
        return _library({f"section-{section_id}": exc.message}, status=400)
    flash(_("The section was renamed."))
    return redirect(url_for("materials.index"), 303)


@bp.post("/materials/sections/<int:section_id>/delete")
@roles(*EDITORS)
def delete_section(section_id: int) -> Any:
    try:
        materials.delete_section(db.get_or_404(Section, section_id, description=_("No such section.")))
    except materials.MaterialError as exc:
        return _library({f"section-{section_id}": exc.message}, status=400)
    flash(_("The section was deleted."))
    return redirect(url_for("materials.index"), 303)


@bp.route("/materials/<int:material_id>/edit", methods=["GET", "POST"])
@roles(*EDITORS)
def edit(material_id: int) -> Any:
    material = db.get_or_404(Material, material_id, description=_("No such material."))
    errors: dict[str, str] = {}
    if request.method == "POST":
        try:
            materials.save_material(material, request.form.to_dict(), current_user)
        except materials.MaterialError as exc:
            db.session.rollback()
            errors = {exc.field: exc.message}
        else:
            flash(_("Saved."))
            return redirect(url_for("materials.index"), 303)
    return render_template("materials/edit.html", material=material, sections=materials.sections(),
                           errors=errors, values=request.form.to_dict() if errors else {}), 400 if errors else 200


@bp.post("/materials/<int:material_id>/delete")
@roles(*EDITORS)
def delete(material_id: int) -> Any:
    materials.delete_material(db.get_or_404(Material, material_id, description=_("No such material.")))
    flash(_("The material was deleted."))
    return redirect(url_for("materials.index"), 303)


# --- templates -----------------------------------------------------------------------------

@bp.get("/templates")
@roles(*READERS)
def templates() -> Any:
    return render_template("materials/templates.html", templates=materials.templates(), errors={})


@bp.post("/templates/<int:template_id>/copy")
@roles(*EDITORS)
def copy_template(template_id: int) -> Any:
    template = db.get_or_404(LetterTemplate, template_id, description=_("No such template."))
    try:
        copy = materials.copy_template(template, request.form.get("name"))
    except materials.MaterialError as exc:
        return render_template("materials/templates.html", templates=materials.templates(),
                               errors={template.id: exc.message}), 400
    return redirect(url_for("materials.edit_template", template_id=copy.id), 303)


@bp.route("/templates/<int:template_id>/edit", methods=["GET", "POST"])
@roles(*EDITORS)
def edit_template(template_id: int) -> Any:
    template = db.get_or_404(LetterTemplate, template_id, description=_("No such template."))
    errors: dict[str, str] = {}
    if request.method == "POST":
        try:
            materials.save_template(template, request.form.get("name"), request.form.get("html"))
        except materials.MaterialError as exc:
            db.session.rollback()
            errors = {exc.field: exc.message}
        else:
            flash(_("Saved."))
            return redirect(url_for("materials.templates"), 303)
    return render_template("materials/template_edit.html", template=template, errors=errors,
                           values=request.form.to_dict() if errors else {}), 400 if errors else 200


# --- assembling a letter -------------------------------------------------------------------

def _ids(name: str) -> list[int]:
    return [int(v) for v in request.values.getlist(name) if v.isascii() and v.isdigit() and len(v) < 10]


@bp.route("/issues/<int:issue_id>/assemble", methods=["GET", "POST"])
@roles(*EDITORS)
def assemble(issue_id: int) -> Any:
    """The chosen sections' recent materials ticked, others found by search and added;
    OK builds the letter and opens it in the editor."""
    issue = db.get_or_404(Issue, issue_id, description=_("No such issue."))
    if not allowed("assemble", issue.status):  # refused before the form is filled in vain
        raise IllegalTransition("assemble", issue.status, refusal("assemble", issue.status))
    errors: dict[str, str] = {}
    posted = request.method == "POST"
    template_id = form_int("template") if posted else arg_int("template")
    if posted and request.form.get("go"):
        try:
            materials.assemble(issue.id, _ids("material"), template_id, current_user, section_ids=_ids("section"))
        except materials.MaterialError as exc:
            db.session.rollback()
            errors = {exc.field: exc.message}
        else:
            flash(_("The letter was assembled: correct it here, then send or postpone it."))
            return redirect(url_for("outgoing.edit", issue_id=issue.id), 303)
    chosen_sections = _ids("section") if posted else [s.id for s in issue.sections]
    ticked = set(_ids("material")) if posted else None
    offered = materials.recent_of(chosen_sections)
    extra_ids = [i for i in _ids("material") if i not in {m.id for m in offered}]
    extra = [db.session.get(Material, i) for i in extra_ids]
    q = (request.values.get("q") or "").strip()[:200]
    found = [m for m in materials.search(q, limit=30) if m.id not in {o.id for o in offered} | set(extra_ids)] \
        if q else []
    return render_template("materials/assemble.html", issue=issue, sections=materials.sections(),
                           chosen_sections=chosen_sections, offered=offered + [m for m in extra if m],
                           ticked=ticked, found=found, q=q, templates=materials.templates(),
                           template_id=template_id or issue.template_id,
                           errors=errors), 400 if errors else 200


