"""The JSON API: tokens, roles, errors and the OpenAPI document."""

import hashlib

from mailing.extensions import db
from mailing.models import ApiToken

from .support import csrf_from, issue_row


def test_tokens_are_required_and_checked(client, ctx, api_client, make_issue):
    issue_id = make_issue(1)
    r = client.get("/api/v1/issues")
    assert r.status_code == 401 and r.json["error"] == "unauthorized" and r.json["message"]
    r = client.get("/api/v1/issues", headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401
    support = api_client("support")
    listing = support.get("/issues")
    assert listing.status_code == 200 and listing.json["issues"][0]["id"] == issue_id
    one = support.get(f"/issues/{issue_id}").json
    assert one["status"] == "draft" and one["progress"]["total"] == 0 and "launch" not in one["actions"]
    r = support.post(f"/issues/{issue_id}/pause")
    assert r.status_code == 403 and r.json["error"] == "forbidden"
    assert support.get("/issues/9999").status_code == 404
    assert support.get("/issues?status=nope").status_code == 400
    assert support.get("/issues?page=0").status_code == 400


def test_illegal_action_is_409_and_changes_nothing(ctx, api_client, make_issue):
    issue_id = make_issue(1)
    api = api_client("editor")
    r = api.post(f"/issues/{issue_id}/resume")
    assert r.status_code == 409 and r.json["message"] == "a draft issue cannot be resumed"
    assert issue_row(issue_id).status == "draft"
    assert api.post(f"/issues/{issue_id}/explode").status_code == 404
    assert api.post(f"/issues/{issue_id}/launch", data="[1]", content_type="application/json").status_code == 400


def test_api_ignores_session_cookies(client, login, make_issue, ctx):
    """A logged-in browser cannot be tricked into API calls: only tokens count."""
    make_issue(1)
    login("admin")
    assert client.get("/api/v1/issues").status_code == 401


def test_openapi_document(client):
    spec = client.get("/api/v1/openapi.json").json
    assert spec["openapi"].startswith("3.")
    for path in ("/issues", "/issues/{issue_id}", "/issues/{issue_id}/launch", "/issues/{issue_id}/pause",
                 "/issues/{issue_id}/resume", "/issues/{issue_id}/send-whole", "/issues/{issue_id}/cancel"):
        assert path in spec["paths"]
    assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


def test_profile_creates_shows_once_and_revokes_tokens(client, ctx, login):
    user = login("editor")
    page = client.get("/profile")
    r = client.post("/profile/tokens", data={"name": "ci", "csrf_token": csrf_from(page.data)})
    assert r.status_code == 201
    token = r.data.decode().split('id="new-token">')[1].split("<")[0]
    row = db.session.query(ApiToken).filter_by(user_id=user.id).one()
    assert row.token_hash == hashlib.sha256(token.encode()).hexdigest() and token not in row.token_hash
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/v1/issues", headers=headers).status_code == 200
    assert token not in client.get("/profile").data.decode(), "shown once only"
    r = client.post(f"/profile/tokens/{row.id}/revoke", data={"csrf_token": csrf_from(page.data)})
    assert r.status_code == 302
    assert client.get("/api/v1/issues", headers=headers).status_code == 401
    bad = client.post("/profile/tokens", data={"name": "", "csrf_token": csrf_from(page.data)})
    assert bad.status_code == 400
