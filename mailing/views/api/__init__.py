"""JSON API under /api/v1/, authenticated by personal API tokens (Bearer), never by cookies,
so it needs no CSRF token. base.py holds what every endpoint shares; each module below adds
the endpoints of one part of the product. Errors are {"error": ..., "message": ...}."""

from __future__ import annotations

from typing import Any

from flask import jsonify

from . import hooks, issues, library, lists, people  # noqa: F401  (each registers its endpoints on bp)
from .base import bp, document, token_hash

__all__ = ["bp", "token_hash"]


@bp.get("/openapi.json")
def openapi() -> Any:
    """The API described in OpenAPI 3.1, built from the models that check every request
    and answer (public: it holds no data)."""
    return jsonify(document())
