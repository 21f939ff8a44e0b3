"""Test clients: the app's pages as a signed-in browser sees them, and the API with a token."""

from __future__ import annotations

from flask import g, has_app_context
from flask.testing import FlaskClient

from mailing.extensions import db


class PageClient(FlaskClient):
    """Each request loads its user afresh, as it would in its own app context."""

    def open(self, *args, **kwargs):
        if has_app_context():
            g.__dict__.clear()  # user and locale are cached per context
        try:
            return super().open(*args, **kwargs)
        finally:
            if has_app_context():
                # As at the end of a real request: no transaction stays open
                # (on SQLite it would hold the write lock).
                db.session.remove()


class ApiClient:
    """Requests to /api/v1/ with a bearer token."""

    def __init__(self, client: FlaskClient, token: str):
        self.client = client
        self.headers = {"Authorization": f"Bearer {token}"}

    def get(self, path, **kw):
        return self.client.get("/api/v1" + path, headers=self.headers, **kw)

    def post(self, path, **kw):
        return self.client.post("/api/v1" + path, headers=self.headers, **kw)

    def patch(self, path, **kw):
        return self.client.patch("/api/v1" + path, headers=self.headers, **kw)

    def delete(self, path, **kw):
        return self.client.delete("/api/v1" + path, headers=self.headers, **kw)
