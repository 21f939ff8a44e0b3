"""What every /api/v1/ endpoint shares: the blueprint, Bearer-token authentication with the
pages' role rules, the per-token rate limit, and the schema machinery.

Requests and responses are pydantic models (schemas.py). spectree checks each request body
and query against its model before the view runs and each answer against its response
model after, and builds the OpenAPI 3.1 document from the same models, so the document
cannot drift from what the API accepts and returns. A request that does not fit answers
400 {"error": <field>, "message": ...} like every other refusal (mailing/errors.py)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import time
from collections.abc import Callable, Sequence
from functools import wraps
from typing import Any

import sqlalchemy as sa
from flask import Blueprint, g, request
from spectree import Response, SecurityScheme, SecuritySchemeData, SpecTree

from ... import queueing, settings
from ...errors import BadParameter, error
from ...extensions import csrf, db
from ...models import ApiToken, utcnow
from . import schemas as s

bp = Blueprint("api", __name__, url_prefix="/api/v1")
csrf.exempt(bp)  # tokens, never cookies: nothing for a forged cross-site request to ride on


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


LAST_USED_EVERY = 60  # seconds between writes of a token's last_used_at


def _over_rate(token_id: int) -> int:
    """Seconds to wait when the token has used up this minute's `api_requests_per_minute`
    (a fixed window in Redis, shared by every web process), else 0."""
    limit = int(settings.get("api_requests_per_minute"))
    if limit <= 0:
        return 0
    now = time.time()
    key = f"outbox:api:{token_id}:{int(now // 60)}"
    pipe = queueing.redis_connection().pipeline(transaction=False)
    pipe.incr(key)
    pipe.expire(key, 120)
    used = pipe.execute()[0]
    return 0 if used <= limit else max(int(60 - now % 60) + 1, 1)


def _authenticate(roles: Sequence[str]) -> Any:
    """None when the Bearer token may do this (g.api_user is then its user), else the refusal."""
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer "):
        return error(401, "unauthorized", "Send an API token: Authorization: Bearer <token>.")
    token = db.session.scalar(sa.select(ApiToken).where(
        ApiToken.token_hash == token_hash(header[7:].strip()), ApiToken.revoked_at.is_(None)))
    if token is None:
        return error(401, "unauthorized", "The API token is unknown or revoked.")
    if token.expired:
        return error(401, "token_expired", "The API token has expired; create a new one on your profile page.")
    if token.user.disabled_at is not None:
        return error(401, "unauthorized", "The API token's user is disabled.")
    if token.read_only and request.method not in ("GET", "HEAD", "OPTIONS"):
        return error(403, "read_only", "This API token is read-only: it may only read (GET).")
    if token.user.role not in roles:
        return error(403, "forbidden", f"The role {token.user.role} may not do this.")
    user, last_used, token_id = token.user, token.last_used_at, token.id
    db.session.commit()  # end the read before writing (see create_app's SQLite setup)
    wait = _over_rate(token_id)
    if wait:
        resp = error(429, "rate_limited", f"Too many requests for this token; retry in {wait} s.")
        resp[0].headers["Retry-After"] = str(wait)
        return resp
    now = utcnow()
    if last_used is None or (now - last_used).total_seconds() >= LAST_USED_EVERY:
        # At most once a minute: a client polling the API must not make every GET a
        # write transaction (on SQLite each takes the database's write lock).
        db.session.execute(sa.update(ApiToken).where(ApiToken.id == token_id).values(last_used_at=now))
        db.session.commit()
    g.api_user = user
    return None


def _field_of(loc: Sequence[Any]) -> str:
    # pydantic names the member of a union it tried ("str", "int"): not part of the path.
    return ".".join(str(p) for p in loc if p not in _UNION_MEMBERS)


_UNION_MEMBERS = {"str", "int", "float", "bool", "none", "list[...]", "dict[...]"}


def _refuse_invalid(_req: Any, _resp: Any, err: Any, _instance: Any, _adapter: Any) -> None:
    """spectree's hook after checking a request: a body or query that does not fit its model
    is a BadParameter naming the first field at fault, answered 400 like any other."""
    if err is None:
        return
    first = err.errors(include_url=False)[0]
    if not first.get("loc"):  # the body as a whole: a list, a number, a string
        raise BadParameter("body", "The body must be a JSON object.")
    # `error` names the top-level field, as every other refusal does; the message gives
    # the whole path (fields.city, emails.3) to the value at fault.
    raise BadParameter(str(first["loc"][0]), f"{_field_of(first['loc'])}: {first.get('msg', 'invalid')}.")


spec = SpecTree(
    "flask", before=_refuse_invalid, validation_error_status=400, validation_error_model=s.ErrorOut,
    mode="strict", title="Outbox API",
    naming_strategy=lambda model: model.__name__, nested_naming_strategy=lambda _parent, child: child, version="1", annotations=False,
    description="Everything the dashboard does, for programs. Authenticate with a personal API token "
                "from your profile page: `Authorization: Bearer <token>`. A token may expire "
                "(401 token_expired) and may be read-only (403 read_only on anything but GET). "
                "Every refusal is JSON {\"error\": code or field, \"message\": sentence}. Lists are "
                "paged by cursor: pass the answer's next_cursor back as ?cursor= until it is null.",
    security_schemes=[SecurityScheme(name="bearer", data=SecuritySchemeData(type="http", scheme="bearer"))],
    security={"bearer": []},
)

# Every endpoint may answer these, whatever it does: no or a bad token, a role or a
# read-only token that may not, a token over its rate, a body or query that does not fit.
COMMON = {"HTTP_400": s.ErrorOut, "HTTP_401": s.ErrorOut, "HTTP_403": s.ErrorOut, "HTTP_429": s.ErrorOut,
          # A request line over the web server's limit (gunicorn's 4 KB): refused by it, as HTML.
          "HTTP_414": None}
EXTRA = {404: "HTTP_404", 409: "HTTP_409", 413: "HTTP_413", 502: "HTTP_502"}


def endpoint(rule: str, method: str, roles: Sequence[str], *, ok: int = 200, out: Any = None,
             query: Any = None, json: Any = None, form: Any = None, errors: Sequence[int] = (404,),
             more: dict[int, Any] | None = None, tag: str) -> Callable:
    """Route, authenticate, check and document one API operation.

    `out` is the model of the `ok` answer (None: no body, as for 204); `errors` the statuses
    besides the common ones this operation may answer; `more` other successful answers. The token is checked before the body,
    so a caller without the right learns nothing from a validation message."""
    codes: dict[str, Any] = {**COMMON, f"HTTP_{ok}": out}
    if json is not None or form is not None:  # a body in another form, or over the size limit
        codes["HTTP_413"] = codes["HTTP_415"] = s.ErrorOut
    for status in errors:
        codes[EXTRA[status]] = s.ErrorOut
    for status, model in (more or {}).items():
        codes[f"HTTP_{status}"] = model

    def deco(view: Callable) -> Callable:
        checked = spec.validate(query=query, json=json, form=form, resp=Response(**codes), tags=[tag],
                                operation_id=view.__name__)(view)

        @wraps(checked)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            refused = _authenticate(roles) or _refuse_body(json, form)
            if refused is not None:
                return refused
            return checked(*args, **kwargs)

        wrapper.allowed_roles = tuple(roles)  # type: ignore[attr-defined]
        bp.add_url_rule(rule, view_func=wrapper, methods=[method])
        return wrapper

    return deco


FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")


def _refuse_body(json: Any, form: Any) -> Any:
    """A body in a form the operation does not read is refused before anything else looks
    at it: spectree would quietly skip a JSON model for a form post (and the view would
    then find no body at all), and a body that is not JSON would read as no body."""
    has_body = bool(request.content_length) or "chunked" in request.headers.get("Transfer-Encoding", "")
    if json is not None:
        if request.mimetype in FORM_TYPES or has_body and not request.is_json:
            return error(415, "content_type", "Send the body as JSON (Content-Type: application/json).")
        if has_body and not isinstance(request.get_json(silent=True), dict):
            return error(400, "body", "The body must be a JSON object.")
    if form is not None and request.mimetype != "multipart/form-data":
        return error(415, "content_type", "Send the file as multipart/form-data, in the field `file`.")
    return None


def document() -> dict[str, Any]:
    """The OpenAPI document, with one correction to spectree's: a body whose every field is
    optional may be left out (launch now, a PATCH that changes nothing)."""
    doc = spec.spec
    schemas = doc["components"]["schemas"]
    for operations in doc["paths"].values():
        for operation in operations.values():
            body = operation.get("requestBody")
            if body and "application/json" in body["content"]:
                ref = body["content"]["application/json"]["schema"].get("$ref", "")
                if not schemas.get(ref.rsplit("/", 1)[-1], {}).get("required"):
                    body["required"] = False
    return doc


def ctx(name: str) -> Any:
    """The checked query, json or form model of this request."""
    return getattr(request.context, name)  # type: ignore[attr-defined]


# --- cursor paging ------------------------------------------------------------------

def encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(f"id:{last_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int | None:
    """The id the previous page ended on; a cursor we did not make is a 400."""
    if not cursor:
        return None
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        text = ""
    kind, _, value = text.partition(":")
    if kind != "id" or not value.isascii() or not value.isdigit() or not 0 < int(value) < 2**31:
        raise BadParameter("cursor", "cursor: pass back a next_cursor this API gave, unchanged.")
    return int(value)


def keyset(query: sa.Select, id_column: Any, cursor: str | None, limit: int,
           *, scalars: bool = True) -> tuple[list[Any], str | None]:
    """One page of `query` newest first by `id_column`, after the cursor's id, and the
    cursor of the next page (None on the last). Keyset, not OFFSET: a page deep in a large
    list costs what the first one does, and rows added meanwhile do not shift it."""
    after = decode_cursor(cursor)
    if after is not None:
        query = query.where(id_column < after)
    query = query.order_by(None).order_by(id_column.desc()).limit(limit + 1)
    rows = list(db.session.scalars(query) if scalars else db.session.execute(query))
    more = len(rows) > limit
    rows = rows[:limit]
    if not more or not rows:
        return rows, None
    last = rows[-1]
    # Rows of several columns are keyed by their first, the entity `id_column` belongs to.
    return rows, encode_cursor(last.id if scalars else last[0].id)


def iso(moment: Any) -> str | None:
    return moment.isoformat() + "Z" if moment else None
