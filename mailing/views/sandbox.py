"""Sandbox mailbox: read the letters the development SMTP catch-all caught."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, current_app, render_template

from ..sandbox import list_letters, read_letter
from .access import READERS, roles
from .params import page_arg

bp = Blueprint("sandbox", __name__, url_prefix="/sandbox")
PAGE = 50


@bp.get("/")
@roles(*READERS)
def index() -> Any:
    page = page_arg()
    total, letters = list_letters(current_app.config["MAILDIR"], (page - 1) * PAGE, PAGE)
    return render_template("sandbox/index.html", letters=letters, total=total, page=page,
                           has_next=page * PAGE < total)


@bp.get("/<key>")
@roles(*READERS)
def show(key: str) -> Any:
    letter = read_letter(current_app.config["MAILDIR"], key)
    if letter is None:
        abort(404)
    return render_template("sandbox/show.html", letter=letter)


@bp.get("/<key>/html")
@roles(*READERS)
def html(key: str) -> Any:
    """The letter's HTML for a sandboxed iframe: no scripts, no requests out."""
    letter = read_letter(current_app.config["MAILDIR"], key)
    if letter is None:
        abort(404)
    resp = current_app.response_class(letter.html or "<pre>(no HTML part)</pre>", mimetype="text/html")
    resp.headers["Content-Security-Policy"] = "sandbox; default-src 'none'; img-src data:; style-src 'unsafe-inline'"
    return resp
