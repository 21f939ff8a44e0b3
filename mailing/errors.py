"""How a refused request is answered, in one place.

Every refusal has a status, a short code and a message, and is answered in the form its
client reads: JSON {"error": code, "message": message} under /api/, the bare flash
fragment for htmx (app.js shows it in the page's error box), the error page otherwise.
Views call `error()` for the refusals they decide themselves; `init_app` turns the
domain errors the use cases raise, and Werkzeug's own refusals, into the same answers.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from flask import Flask, jsonify, make_response, render_template, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_wtf.csrf import CSRFError
from htmx_flask import request
from werkzeug.exceptions import Forbidden, HTTPException, NotFound, RequestEntityTooLarge

from . import uploads
from .accounts import AccountError
from .extensions import db
from .fielderror import Conflict, FieldError
from .lifecycle import AdminOnly
from .states import IllegalTransition, IssueNotFound
from .stoplists import QuotaExceeded, SystemListError


class BadParameter(Exception):
    """A query or form value that is not what the route accepts; answered with 400."""

    def __init__(self, name: str, message: str):
        super().__init__(message)
        self.name, self.message = name, message


# What each domain error answers: (status, code, message).
DOMAIN_ERRORS: dict[type[Exception], Callable[[Any], tuple[int, str, str]]] = {
    IllegalTransition: lambda exc: (409, "illegal_transition", exc.message),
    IssueNotFound: lambda exc: (404, "not_found", _("No such issue.")),
    FieldError: lambda exc: (400, exc.field, exc.message),
    Conflict: lambda exc: (409, exc.field, exc.message),
    AdminOnly: lambda exc: (403, "admin_only", exc.message),
    QuotaExceeded: lambda exc: (409, "quota", str(exc)),
    SystemListError: lambda exc: (409, "system_list", str(exc)),
    AccountError: lambda exc: (exc.status, exc.code, exc.message),
    BadParameter: lambda exc: (400, exc.name, exc.message),
}


def wants_json() -> bool:
    """The API's requests, found by path so that an unknown /api/ URL answers JSON too."""
    return request.path.startswith("/api/")


# The error page's heading: what kind of refusal it is, in words.
HEADINGS = {400: _l("This cannot be done as asked"), 403: _l("Not allowed"), 404: _l("Not found"),
            405: _l("Not allowed"), 409: _l("Not possible now"), 413: _l("Too large"),
            429: _l("Too many attempts")}


def _way_back() -> str:
    """Where the error page's "Back" leads: the page the request came from when it is one
    of ours (not the refused URL itself), else Outgoing."""
    ref = request.referrer or ""
    own = request.host_url
    if ref.startswith(own) and ref.split("#")[0] != request.url:
        return ref
    return url_for("outgoing.index")


def error(status: int, code: str, message: str) -> Any:
    """The answer to a refused request, in the form its client reads."""
    if wants_json():
        return jsonify(error=code, message=message), status
    if request.htmx:
        return render_template("_flash_error.html", message=message), status
    heading = HEADINGS.get(status) or (_("Something went wrong") if status >= 500 else _("Not possible"))
    return render_template("error.html", status=status, message=message, heading=heading,
                           back=_way_back()), status


def forbidden() -> Any:
    return error(403, "forbidden", _("Your role does not allow this."))


def _answer(to: Callable[[Any], tuple[int, str, str]]) -> Callable[[Exception], Any]:
    def handle(exc: Exception) -> Any:
        # The refused use case may have written part of its work, and on PostgreSQL a failed
        # statement leaves the transaction unusable: none of it is kept, and the error page's
        # own queries (the navigation) start clean.
        db.session.rollback()
        return error(*to(exc))

    return handle


def _not_found(exc: NotFound) -> Any:
    # A view that says what is missing (abort(404, "No such ...")) is quoted; Werkzeug's
    # own description speaks of URLs typed by hand.
    given = exc.description if exc.description != NotFound.description else None
    return error(404, "not_found", given or _("There is no such page here."))


def _http_error(exc: HTTPException) -> Any:
    """Werkzeug's own refusals (405, 400 for a malformed body, ...) in the app's shape.
    Handlers registered for one code or class (404, 403, 413, CSRF) take precedence."""
    if exc.code is None or exc.code < 400:
        return exc
    resp = make_response(error(exc.code, re.sub(r"\W+", "_", (exc.name or "error").lower()),
                               exc.description or exc.name or ""))
    for header in ("Allow", "Retry-After", "WWW-Authenticate"):
        value = exc.get_response().headers.get(header)
        if value:
            resp.headers[header] = value
    return resp


def init_app(app: Flask) -> None:
    """Register the app's error handlers."""
    for cls, to in DOMAIN_ERRORS.items():
        app.register_error_handler(cls, _answer(to))
    app.register_error_handler(CSRFError, lambda exc: error(400, "csrf", exc.description))
    app.register_error_handler(NotFound, _not_found)
    app.register_error_handler(Forbidden, lambda _exc: forbidden())
    app.register_error_handler(RequestEntityTooLarge,
                               lambda _exc: error(413, "too_large", uploads.too_large_message()))
    app.register_error_handler(HTTPException, _http_error)
