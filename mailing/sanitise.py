"""A letter's HTML as Outbox keeps it: no scripts, no event handlers, no javascript: links.

Every place that saves HTML for a letter (the issue form and API, materials, templates)
passes it here (nh3: the Rust ammonia sanitiser). What letters need stays: tables, inline
styles, images and links, and the `{{ placeholders }}` personalisation fills in later
(they are text to the sanitiser, in a body or inside an href alike).
"""

from __future__ import annotations

import re

import nh3

# No <style> element: its CSS could hide or restyle the unsubscribe link; inline styles stay.
_TAGS = nh3.ALLOWED_TAGS | {"center", "font", "span", "div", "table", "thead", "tbody", "tfoot", "tr", "td",
                            "th", "img", "hr", "br", "h1", "h2", "h3", "h4", "h5", "h6", "p"}
_COMMON = {"style", "class", "align", "valign", "width", "height", "bgcolor", "dir", "lang", "title", "role"}
_ATTRIBUTES = {
    "*": _COMMON,
    "a": _COMMON | {"href", "target", "name"},
    "img": _COMMON | {"src", "alt", "border"},
    "table": _COMMON | {"border", "cellpadding", "cellspacing"},
    "td": _COMMON | {"colspan", "rowspan"},
    "th": _COMMON | {"colspan", "rowspan", "scope"},
    "font": _COMMON | {"color", "face", "size"},
}


# An inline style is kept whole, so its value is the one place a script address could
# hide (`background: url(javascript:…)`, old IE's `expression(…)`); CSS escapes are
# refused too, since `\6a avascript:` spells the same. Letters need none of these.
_RUNNABLE_STYLE = re.compile(r"javascript:|vbscript:|expression\(|\\")


def _attribute(tag: str, name: str, value: str) -> str | None:
    if name == "style" and _RUNNABLE_STYLE.search(re.sub(r"\s+", "", value).lower()):
        return None
    return value


_CLEANER = nh3.Cleaner(tags=_TAGS, attributes=_ATTRIBUTES, attribute_filter=_attribute,
                       url_schemes={"http", "https", "mailto", "tel"}, link_rel=None, strip_comments=True)


def clean_html(html: str) -> str:
    """The HTML with everything that could run removed; what a letter shows is kept."""
    return _CLEANER.clean(html or "")
