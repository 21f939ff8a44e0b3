"""Letters assembled from materials (seed 002, "Running a mailing"): a library of materials
in sections, letter templates with a `{{ materials }}` block, and the assembly of a Draft's
letter from chosen materials, which then opens in the editor to be corrected, sent or
postponed like any letter.

A template is never run as code: its `{{ materials }}` block is replaced by the materials,
each drawn by one fixed block rendered in Jinja's sandbox with autoescape, and the rest
stays the letter's own text, whose placeholders are filled per recipient at send time.
Everything that becomes part of a letter is sanitised (mailing/sanitise.py).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlparse

import sqlalchemy as sa
from flask_babel import gettext as _
from jinja2.sandbox import SandboxedEnvironment
from markupsafe import Markup

from .contacts import known_fields
from .extensions import db
from .fielderror import Conflict, FieldError
from .models import Issue, LetterTemplate, Material, Section, utcnow
from .sanitise import clean_html
from .sending.letter import placeholder_errors
from .states import IssueNotFound, operate

RECENT = 20  # materials of the issue's sections offered first
MATERIALS = "{{ materials }}"

# One material as the {{ materials }} block shows it: the title (linked), the image, the
# summary and "Read more" at the material's page. A letter is a digest, so the body goes in
# only when the material has no page of its own to read it at.
_ITEM = SandboxedEnvironment(autoescape=True).from_string(
    '<div class="material" style="margin: 0 0 24px">'
    '{% if m.image_url %}<img src="{{ m.image_url }}" alt="" style="max-width: 100%; height: auto"><br>{% endif %}'
    '<h2 style="margin: 8px 0; font-size: 20px">{% if m.link %}<a href="{{ m.link }}">{{ m.title }}</a>'
    '{% else %}{{ m.title }}{% endif %}</h2>'
    '{% if m.summary %}<p>{{ m.summary }}</p>{% endif %}'
    '{% if m.link %}<p><a href="{{ m.link }}">{{ more }}</a></p>{% else %}{{ body }}{% endif %}</div>')
# The block as people type it: `{{materials}}` is the same block as `{{ materials }}`.
_BLOCK = re.compile(r"\{\{\s*materials\s*\}\}")


class MaterialError(FieldError):
    """A material, section or template that cannot be saved (HTTP 400), with its field."""


class SectionInUse(Conflict, MaterialError):
    """A section that still has materials cannot go (HTTP 409; the page shows it beside the section)."""


def _url(value: Any, field: str) -> str:
    text = str(value or "").strip()
    if text and (urlparse(text).scheme not in ("http", "https") or not urlparse(text).netloc or len(text) > 2000):
        raise MaterialError(field, _("Give a full http(s) address."))
    return text


def _text(value: Any, field: str, limit: int, required: bool = False) -> str:
    if value is not None and not isinstance(value, str):
        raise MaterialError(field, _("This must be a text."))
    text = (value or "").strip()
    if required and not text:
        raise MaterialError(field, _("This is required."))
    if len(text) > limit:
        raise MaterialError(field, _("At most %(n)s characters.", n=limit))
    return text


# --- sections and materials ------------------------------------------------------------

def sections() -> list[Section]:
    return list(db.session.scalars(sa.select(Section).order_by(Section.name)))


def add_section(name: Any) -> Section:
    name = _text(name, "name", 100, required=True)
    # The exact name too: SQLite's lower() folds only ASCII letters.
    if db.session.scalar(sa.select(Section.id).where(sa.or_(Section.name == name,
                                                            sa.func.lower(Section.name) == name.lower()))):
        raise MaterialError("name", _("A section with this name exists."))
    section = Section(name=name)
    db.session.add(section)
    try:
        db.session.commit()
    except sa.exc.IntegrityError:  # the same name added at the same moment
        db.session.rollback()
        raise MaterialError("name", _("A section with this name exists.")) from None
    return section


def rename_section(section: Section, name: Any) -> None:
    name = _text(name, "name", 100, required=True)
    # The exact name too: SQLite's lower() folds only ASCII letters.
    if db.session.scalar(sa.select(Section.id).where(sa.or_(Section.name == name,
                                                            sa.func.lower(Section.name) == name.lower()),
                                                     Section.id != section.id)):
        raise MaterialError("name", _("A section with this name exists."))
    section.name = name
    db.session.commit()


def delete_section(section: Section) -> None:
    """Only an empty section goes: deleting one must never take its materials with it."""
    if db.session.scalar(sa.select(Material.id).where(Material.section_id == section.id).limit(1)):
        raise SectionInUse("name", _("This section still has materials: delete them or move them to another "
                                     "section first."))
    db.session.delete(section)
    db.session.commit()


def save_material(material: Material | None, values: dict[str, Any], actor: Any) -> Material:
    """Create or change a material from form or API values; its body is sanitised."""
    section_id = values.get("section_id", material.section_id if material else None)
    if isinstance(section_id, str) and section_id.isdigit():
        section_id = int(section_id)
    if not isinstance(section_id, int) or isinstance(section_id, bool) or db.session.get(Section, section_id) is None:
        raise MaterialError("section_id", _("Choose a section."))
    old = material
    fields = {
        "title": _text(values.get("title", old.title if old else None), "title", 300, required=True),
        "summary": _text(values.get("summary", old.summary if old else ""), "summary", 5000),
        "body_html": clean_html(_text(values.get("body_html", old.body_html if old else ""), "body_html", 200_000)),
        "link": _url(values.get("link", old.link if old else ""), "link"),
        "image_url": _url(values.get("image_url", old.image_url if old else ""), "image_url"),
    }
    published = values.get("published_at")
    if published is not None and not isinstance(published, str):
        raise MaterialError("published_at", _("Give a date as YYYY-MM-DD (and a time if you like)."))
    if published and published.strip():
        try:
            published = datetime.fromisoformat(published.strip().replace("Z", "+00:00"))
        except ValueError:
            raise MaterialError("published_at", _("Give a date as YYYY-MM-DD (and a time if you like).")) from None
        if published.tzinfo:  # stored in UTC, as every time is
            published = published.astimezone(UTC)
        published = published.replace(tzinfo=None)
    if material is None:
        material = Material(created_by_id=getattr(actor, "id", None))
        db.session.add(material)
    material.section_id = section_id
    for k, v in fields.items():
        setattr(material, k, v)
    if isinstance(published, datetime):
        material.published_at = published
    elif material.published_at is None:
        material.published_at = utcnow()
    db.session.commit()
    return material


def delete_material(material: Material) -> None:
    db.session.delete(material)
    db.session.commit()


def search(q: str = "", section_id: int | None = None, limit: int = 100) -> list[Material]:
    """Newest first; `q` matches the title or the summary, whatever the case."""
    stmt = search_query(q, section_id).order_by(Material.published_at.desc(), Material.id.desc()).limit(limit)
    return list(db.session.scalars(stmt))


def search_query(q: str = "", section_id: int | None = None) -> sa.Select:
    """The materials `search` finds, unordered (the API pages them by id)."""
    stmt = sa.select(Material)
    if section_id:
        stmt = stmt.where(Material.section_id == section_id)
    if q.strip():
        # As the issue search: `%` and `_` are letters here, not wildcards.
        stmt = stmt.where(sa.or_(Material.title.icontains(q.strip(), autoescape=True),
                                 Material.summary.icontains(q.strip(), autoescape=True)))
    return stmt


def recent_of(section_ids: list[int]) -> list[Material]:
    """The newest RECENT materials of these sections: what an assembly offers first."""
    if not section_ids:
        return []
    return list(db.session.scalars(sa.select(Material).where(Material.section_id.in_(section_ids))
                                   .order_by(Material.published_at.desc(), Material.id.desc()).limit(RECENT)))


# --- templates -------------------------------------------------------------------------

def templates() -> list[LetterTemplate]:
    return list(db.session.scalars(sa.select(LetterTemplate).order_by(LetterTemplate.shipped.desc(),
                                                                     LetterTemplate.name)))


def _check_template(html: str) -> str:
    html = _BLOCK.sub(MATERIALS, html)
    if MATERIALS not in html:
        raise MaterialError("html", _("The template needs a {{ materials }} block where the materials go."))
    if "{%" in html:  # it would reach the letter as text: a template is never run
        raise MaterialError("html", _("A template has no {% … %} statements: only the {{ materials }} block and "
                                      "placeholders such as {{ name }}."))
    # The rest of a template is the letter's own text: its placeholders are checked as
    # the issue form checks a letter's, so a typo is caught here and not at launch.
    problems = placeholder_errors(html.replace(MATERIALS, ""), known_fields())
    if problems:
        raise MaterialError("html", problems[0])
    return html


def copy_template(template: LetterTemplate, name: Any) -> LetterTemplate:
    name = _text(name, "name", 100, required=True)
    if db.session.scalar(sa.select(LetterTemplate.id).where(LetterTemplate.name == name)):
        raise MaterialError("name", _("A template with this name exists."))
    copy = LetterTemplate(name=name, html=template.html, shipped=False)
    db.session.add(copy)
    db.session.commit()
    return copy


def save_template(template: LetterTemplate, name: Any, html: Any) -> None:
    """Change a copied template; the shipped ones stay as they are (copy them)."""
    if template.shipped:
        raise MaterialError("html", _("A shipped template cannot be changed: copy it and change the copy."))
    name = _text(name, "name", 100, required=True)
    clash = db.session.scalar(sa.select(LetterTemplate.id).where(LetterTemplate.name == name,
                                                                LetterTemplate.id != template.id))
    if clash:
        raise MaterialError("name", _("A template with this name exists."))
    template.name = name
    template.html = _check_template(clean_html(_text(html, "html", 200_000, required=True)))
    db.session.commit()


# --- assembling ------------------------------------------------------------------------

def render(template: LetterTemplate, chosen: list[Material]) -> str:
    """The letter's HTML: each material drawn into the template's {{ materials }} block.
    The rest of the template is left as written, so its own placeholders ({{ name }},
    {{ unsubscribe_url }}) are filled per recipient when the letter is sent."""
    more = _("Read more")
    block = "".join(_ITEM.render(m=m, body=Markup(clean_html(m.body_html)), more=more) for m in chosen)
    return clean_html(template.html.replace(MATERIALS, block))


def assemble(issue_id: int, material_ids: Any, template_id: Any, actor: Any,
             section_ids: Any = None) -> Issue:
    """Build a Draft's letter from the chosen materials, in the order given, through a
    template; journalled as "assembled". Commits."""
    if not isinstance(material_ids, list) or not material_ids or len(material_ids) > 200 \
            or not all(isinstance(i, int) and not isinstance(i, bool) for i in material_ids):
        raise MaterialError("material_ids", _("Choose at least one material."))
    if isinstance(template_id, bool) or not isinstance(template_id, int):
        raise MaterialError("template_id", _("Choose a template."))
    template = db.session.get(LetterTemplate, template_id)
    if template is None:
        raise MaterialError("template_id", _("Choose a template."))
    found = {m.id: m for m in db.session.scalars(sa.select(Material).where(Material.id.in_(material_ids)))}
    missing = [i for i in material_ids if i not in found]
    if missing:
        raise MaterialError("material_ids", _("No material with the id %(id)s.", id=missing[0]))
    issue = db.session.get(Issue, issue_id)
    if issue is None:
        raise IssueNotFound(issue_id)
    operate(issue_id, "assemble", actor=actor,
            details={"materials": len(material_ids), "template": template.name})
    issue.body_html = render(template, [found[i] for i in material_ids])
    issue.body_text = ""  # the plain part is made from the HTML, as for any letter
    issue.template_id = template.id
    if isinstance(section_ids, list):
        issue.sections = list(db.session.scalars(sa.select(Section).where(Section.id.in_(
            [i for i in section_ids if isinstance(i, int)]))))
    db.session.commit()
    return issue


