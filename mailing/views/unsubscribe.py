"""Unsubscribe: the personal link (asks for confirmation) and RFC 8058 one-click POST."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, render_template, request

from ..extensions import csrf, db
from ..models import Delivery
from ..stoplists import unsubscribe_delivery
from ..unsubscribe import read_test_token, read_token

bp = Blueprint("unsubscribe", __name__)


def _delivery(token: str) -> Delivery | None:
    delivery_id = read_token(current_app.config["SECRET_KEY"].encode(), token)
    return db.session.get(Delivery, delivery_id) if delivery_id else None


@bp.route("/u/<token>", methods=["GET", "POST"])
@csrf.exempt  # the token itself is the proof; the page has no session to protect
def page(token: str) -> Any:
    if read_test_token(current_app.config["SECRET_KEY"].encode(), token) is not None:
        # A test letter's link works and says so; nobody is unsubscribed.
        return render_template("unsubscribe/test.html"), 200
    delivery = _delivery(token)
    if delivery is None:
        return render_template("unsubscribe/invalid.html"), 400
    if request.method == "POST":
        if "List-Unsubscribe" in request.form:  # a mail client's one-click request
            unsubscribe_delivery(delivery, source="one-click")
            return "", 200
        if request.form.get("confirm") != "yes":
            return render_template("unsubscribe/confirm.html", delivery=delivery, token=token), 400
        unsubscribe_delivery(delivery, source="link")
        return render_template("unsubscribe/done.html", delivery=delivery)
    return render_template("unsubscribe/confirm.html", delivery=delivery, token=token)


@bp.post("/u/<token>/one-click")
@csrf.exempt
def one_click(token: str) -> Any:
    if read_test_token(current_app.config["SECRET_KEY"].encode(), token) is not None:
        return "", 200  # a test letter's one-click: accepted, nothing changed
    delivery = _delivery(token)
    if delivery is None:
        return "invalid token", 400
    unsubscribe_delivery(delivery, source="one-click")
    return "", 200
