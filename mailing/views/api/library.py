"""Materials, their sections and letter templates through the API (mailing/materials.py):
every role reads, editors and admins change."""

from __future__ import annotations

from typing import Any

from flask import g

from ... import materials
from ...extensions import db
from ...models import LetterTemplate, Material, Section
from ..access import EDITORS, READERS
from . import schemas as s
from .base import ctx, endpoint, iso, keyset

TAG = "materials"


def material_json(m: Material) -> dict[str, Any]:
    return {"id": m.id, "section_id": m.section_id, "title": m.title, "summary": m.summary,
            "body_html": m.body_html, "link": m.link, "image_url": m.image_url,
            "published_at": iso(m.published_at)}


def _material(material_id: int) -> Material:
    return db.get_or_404(Material, material_id, description="No such material.")


@endpoint("/materials", "GET", READERS, out=s.MaterialsOut, query=s.MaterialsQuery, errors=(), tag=TAG)
def list_materials() -> Any:
    """Materials, the last added first (?q= searches titles and summaries, ?section= one section)"""
    q = ctx("query")
    rows, cursor = keyset(materials.search_query(q.q, q.section), Material.id, q.cursor, q.limit)
    return {"materials": [material_json(m) for m in rows], "next_cursor": cursor}


@endpoint("/materials", "POST", EDITORS, ok=201, out=s.MaterialOut, json=s.MaterialIn, errors=(), tag=TAG)
def create_material() -> Any:
    """Add a material (its body_html is sanitised)"""
    values = ctx("json").model_dump(exclude_none=True)
    return material_json(materials.save_material(None, values, g.api_user)), 201


@endpoint("/materials/<int:material_id>", "GET", READERS, out=s.MaterialOut, tag=TAG)
def get_material(material_id: int) -> Any:
    """One material"""
    return material_json(_material(material_id))


@endpoint("/materials/<int:material_id>", "PATCH", EDITORS, out=s.MaterialOut, json=s.MaterialIn, tag=TAG)
def update_material(material_id: int) -> Any:
    """Change a material (fields left out keep their value)"""
    material = _material(material_id)
    materials.save_material(material, ctx("json").model_dump(exclude_none=True), g.api_user)
    return material_json(material)


@endpoint("/materials/<int:material_id>", "DELETE", EDITORS, ok=204, tag=TAG)
def delete_material(material_id: int) -> Any:
    """Delete a material"""
    materials.delete_material(_material(material_id))
    return "", 204


@endpoint("/sections", "GET", READERS, out=s.SectionsOut, errors=(), tag=TAG)
def list_sections() -> Any:
    """The materials' sections"""
    return {"sections": [{"id": x.id, "name": x.name} for x in materials.sections()]}


@endpoint("/sections", "POST", EDITORS, ok=201, out=s.SectionOut, json=s.SectionIn, errors=(), tag=TAG)
def create_section() -> Any:
    """Add a section (names are unique, whatever their case)"""
    section = materials.add_section(ctx("json").name)
    return {"id": section.id, "name": section.name}, 201


def _section(section_id: int) -> Section:
    return db.get_or_404(Section, section_id, description="No such section.")


@endpoint("/sections/<int:section_id>", "PATCH", EDITORS, out=s.SectionOut, json=s.SectionIn, tag=TAG)
def rename_section(section_id: int) -> Any:
    """Rename a section"""
    section = _section(section_id)
    materials.rename_section(section, ctx("json").name)
    return {"id": section.id, "name": section.name}


@endpoint("/sections/<int:section_id>", "DELETE", EDITORS, ok=204, errors=(404, 409), tag=TAG)
def delete_section(section_id: int) -> Any:
    """Delete an empty section (409 while it has materials)"""
    materials.delete_section(_section(section_id))
    return "", 204


def template_json(t: LetterTemplate) -> dict[str, Any]:
    return {"id": t.id, "name": t.name, "shipped": t.shipped, "html": t.html}


def _template(template_id: int) -> LetterTemplate:
    return db.get_or_404(LetterTemplate, template_id, description="No such template.")


@endpoint("/templates", "GET", READERS, out=s.TemplatesOut, errors=(), tag=TAG)
def list_templates() -> Any:
    """Letter templates: the shipped ones, then the team's copies"""
    return {"templates": [template_json(t) for t in materials.templates()]}


@endpoint("/templates/<int:template_id>/copy", "POST", EDITORS, ok=201, out=s.TemplateOut,
          json=s.TemplateCopyIn, tag=TAG)
def copy_template(template_id: int) -> Any:
    """Copy a template under a new name, to change the copy"""
    return template_json(materials.copy_template(_template(template_id), ctx("json").name)), 201


@endpoint("/templates/<int:template_id>", "PATCH", EDITORS, out=s.TemplateOut, json=s.TemplatePatch, tag=TAG)
def update_template(template_id: int) -> Any:
    """Change a copied template (a shipped one is refused: copy it)"""
    template, body = _template(template_id), ctx("json")
    materials.save_template(template, body.name if body.name is not None else template.name,
                            body.html if body.html is not None else template.html)
    return template_json(template)
