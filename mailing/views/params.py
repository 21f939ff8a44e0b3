"""Strict parsing of the numbers people and programs put in URLs, query strings and forms.

One rule for the whole app: an id or a page number is ASCII digits only (no sign, no
spaces, no superscripts or other Unicode digits that `str.isdigit` accepts and `int`
refuses) within a bound both databases can hold; anything else is a BadParameter (a 400
that names the parameter, answered by mailing/errors.py), or a 404 for a path segment. A page number is capped so that its OFFSET
can never overflow a 64-bit integer on PostgreSQL or SQLite.
"""

from __future__ import annotations

import re
from typing import Any

from flask import Flask, request
from flask_babel import gettext as _
from werkzeug.exceptions import NotFound
from werkzeug.routing import IntegerConverter

from ..errors import BadParameter

# Ids are INTEGER columns: PostgreSQL's int4 (SQLAlchemy binds the key as ::INTEGER, so a
# larger value fails the query instead of finding nothing). Raise it with the columns.
MAX_ID = 2**31 - 1
# Pages hold 50 to 100 rows: a million pages is past any real list, and the OFFSET it
# makes (at most 10^8) is far from any integer limit.
MAX_PAGE = 1_000_000
_DIGITS = re.compile(r"[0-9]{1,19}")


def parse_int(value: str | None, name: str, *, default: int | None = None, minimum: int = 1,
              maximum: int = MAX_ID) -> int | None:
    """`value` as an int in [minimum, maximum]; `default` when absent or empty."""
    if value is None or value == "":
        return default
    if not _DIGITS.fullmatch(value) or not minimum <= int(value) <= maximum:
        raise BadParameter(name, _("%(name)s must be a whole number from %(min)s to %(max)s.",
                                   name=name, min=minimum, max=maximum))
    return int(value)


def arg_int(name: str, default: int | None = None, *, minimum: int = 1, maximum: int = MAX_ID) -> int | None:
    """A query-string integer (an id, a reply code, a keyset cursor)."""
    return parse_int(request.args.get(name), name, default=default, minimum=minimum, maximum=maximum)


def page_arg(name: str = "page") -> int:
    """The page number of a paged list: 1 when absent."""
    return parse_int(request.args.get(name), name, default=1, maximum=MAX_PAGE) or 1


def form_int(name: str, default: int | None = None, *, minimum: int = 1,
             maximum: int = MAX_ID) -> int | None:
    """A form integer that is not part of a WTForms form (a hidden id, a select)."""
    return parse_int(request.form.get(name), name, default=default, minimum=minimum, maximum=maximum)


def form_ids(name: str) -> list[int]:
    """Every value of a repeated id field (ticked checkboxes); one bad value refuses all."""
    return [v for v in (parse_int(raw, name) for raw in request.form.getlist(name)) if v is not None]


def is_id(value: Any) -> bool:
    """A JSON id: an int (not a bool) within the id bound."""
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_ID


class StrictIntConverter(IntegerConverter):
    """`<int:...>` in routes: ASCII digits only (Werkzeug's `\\d` also matches Arabic-Indic
    or full-width digits) and at most MAX_ID, so an overlong id is a 404, not an overflow.
    The 404 is raised here rather than the rule not matching: a rule that does not match
    makes the URL answer 405 when the same path has a rule for another method."""

    regex = r"[0-9]+"

    def to_python(self, value: str) -> Any:
        number = super().to_python(value)
        if number > MAX_ID:
            raise NotFound()
        return number


def _nul_in(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_nul_in(k) or _nul_in(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_nul_in(v) for v in value)
    return False


def _refuse_nul(name: str) -> BadParameter:
    return BadParameter(name.replace("\x00", "")[:100] or "input", _("The text must not contain a NUL character."))


class _NulFreeRequest:
    """Form fields, query values and JSON strings never hold a NUL: nobody types one,
    PostgreSQL cannot store one in a text column, and SQLite's C side cuts strings at it.
    The check runs when a view (or the CSRF check) first reads the body, so each route's
    body size limit is in force by then; uploaded files are not checked (their parsers
    report bad lines themselves)."""

    def _load_form_data(self) -> None:
        super()._load_form_data()  # type: ignore[misc]
        d = self.__dict__
        for attr in ("form", "files"):
            # A multipart part without a name (RFC 7578 requires one) is no field at all;
            # Werkzeug keys it None, on which Flask-WTF's CSRF lookup fails.
            parsed = d.get(attr)
            if parsed is not None and None in parsed:
                d[attr] = type(parsed)([(k, v) for k, v in parsed.items(multi=True) if k is not None])
        for key, value in self.form.items(multi=True):  # type: ignore[attr-defined]
            if _nul_in(key) or _nul_in(value):
                raise _refuse_nul(key)

    def get_json(self, *args: Any, **kwargs: Any) -> Any:
        data = super().get_json(*args, **kwargs)  # type: ignore[misc]
        if _nul_in(data):
            raise _refuse_nul("body")
        return data


def init_app(app: Flask) -> None:
    """Install the strict `int` converter (before any route is added) and the NUL-free
    request. Htmx.init_app replaces the request class outright, so it runs first
    (create_app does so); this one builds on whatever class it finds."""
    app.url_map.converters["int"] = StrictIntConverter
    if not issubclass(app.request_class, _NulFreeRequest):
        app.request_class = type("Request", (_NulFreeRequest, app.request_class), {})

    @app.before_request
    def _nul_free_args() -> Any:
        for key, value in request.args.items(multi=True):
            if "\x00" in key or "\x00" in value:
                raise _refuse_nul(key)
        return None
