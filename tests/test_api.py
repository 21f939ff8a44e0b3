"""The JSON API: tokens, roles, errors and the OpenAPI document."""

import hashlib
from datetime import timedelta

import sqlalchemy as sa

from mailing.extensions import db
from mailing.models import ApiToken

from .support import csrf_from, deliveries_of, issue_row, wait_status


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
    assert support.get("/issues?cursor=nope").json["error"] == "cursor"
    assert support.get("/issues?limit=0").json["error"] == "limit"


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
    assert spec["openapi"] == "3.1.0"
    for path in ("/issues", "/issues/{issue_id}", "/issues/{issue_id}/launch", "/issues/{issue_id}/pause",
                 "/issues/{issue_id}/resume", "/issues/{issue_id}/send-whole", "/issues/{issue_id}/cancel"):
        assert "/api/v1" + path in spec["paths"]
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


def test_a_token_over_its_rate_gets_429_with_retry_after(ctx, api_client, make_issue):
    from mailing import settings

    settings.put("api_requests_per_minute", 5)
    db.session.commit()
    api = api_client("support")
    other = api_client("support")
    answers = [api.get("/issues") for _ in range(6)]
    assert [r.status_code for r in answers[:5]] == [200] * 5
    limited = answers[5]
    assert limited.status_code == 429 and limited.json["error"] == "rate_limited"
    assert 1 <= int(limited.headers["Retry-After"]) <= 61
    assert other.get("/issues").status_code == 200, "the limit is per token"


def test_reading_writes_last_used_at_at_most_once_a_minute(ctx, api_client):
    api = api_client("support")
    api.get("/issues")
    token = db.session.scalars(sa.select(ApiToken).order_by(ApiToken.id.desc())).first()
    first = token.last_used_at
    assert first is not None
    db.session.commit()
    api.get("/issues")
    db.session.expire_all()
    assert db.session.get(ApiToken, token.id).last_used_at == first, "a second read a moment later wrote nothing"
    db.session.execute(sa.update(ApiToken).where(ApiToken.id == token.id)
                       .values(last_used_at=first - timedelta(minutes=2)))
    db.session.commit()
    api.get("/issues")
    db.session.expire_all()
    assert db.session.get(ApiToken, token.id).last_used_at > first - timedelta(minutes=1)


def test_progress_counts_each_delivery_state(ctx, api_client, make_issue, smtp, workers, make_user):
    from mailing import lifecycle

    issue_id = make_issue(6)
    from mailing.models import Contact

    addresses = db.session.scalars(sa.select(Contact.email).order_by(Contact.id)).all()[-6:]
    smtp.handler.scripted[addresses[0]] = ["550 5.1.1 no such user"]
    workers.start(1, SEND_JOBS="1")
    lifecycle.launch(issue_id, make_user("editor")[0])
    wait_status(issue_id, "sent", 60)
    states = api_client("support").get(f"/issues/{issue_id}").json["progress"]["states"]
    assert states == {"sent": 5, "bounced": 1, "failed": 0, "suppressed": 0, "stopped_manually": 0,
                      "deferred": 0}, states
    assert deliveries_of(issue_id)[0].state == "bounced"
