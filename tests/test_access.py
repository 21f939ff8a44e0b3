"""Every route but login, static files and unsubscribe links needs a login; every POST needs CSRF."""

import re

import pytest

from .support import csrf_from

PUBLIC = {"auth.login", "auth.language", "static", "unsubscribe.page", "unsubscribe.one_click"}


def concrete(rule) -> str:
    return re.sub(r"<(?:int:)?(\w+)>", lambda m: "1" if "int:" in m.group(0) else "x", rule.rule)


def routes(app, method):
    return [r for r in app.url_map.iter_rules()
            if method in r.methods and r.endpoint not in PUBLIC and not r.rule.startswith("/api/")]


def test_every_page_refuses_anonymous(app, client):
    rules = routes(app, "GET") + routes(app, "POST")
    assert len(rules) > 10
    # A valid CSRF token, so that what refuses a POST is the missing login.
    token = csrf_from(client.get("/login").data)
    for rule in rules:
        method = "GET" if "GET" in rule.methods else "POST"
        r = client.open(concrete(rule), method=method, headers={"X-CSRFToken": token})
        assert r.status_code in (302, 401), (rule.rule, r.status_code)
        if r.status_code == 302:
            assert "/login" in r.headers["Location"], rule.rule


def test_every_post_refuses_missing_csrf(app, client, login, make_issue):
    make_issue(1)
    login("admin")
    posts = [r for r in app.url_map.iter_rules() if "POST" in r.methods and r.endpoint != "static"
             and not r.rule.startswith("/api/") and not r.endpoint.startswith("unsubscribe.")]
    assert len(posts) >= 5
    for rule in posts:
        r = client.post(concrete(rule), data={"x": "1"})
        assert r.status_code == 400, (rule.rule, r.status_code)
        assert b"CSRF" in r.data or b"csrf" in r.data
        r = client.post(concrete(rule), data={"x": "1"}, headers={"HX-Request": "true"})
        assert r.status_code == 400, rule.rule


def test_login_with_wrong_password_shows_field_error(client, make_user):
    user, _pw = make_user("editor")
    page = client.get("/login")
    r = client.post("/login", data={"email": user.email, "password": "nope", "csrf_token": csrf_from(page.data)})
    assert r.status_code == 200 and b"Wrong email or password" in r.data


def test_login_next_is_not_an_open_redirect(client, make_user):
    user, pw = make_user("editor")
    page = client.get("/login")
    r = client.post("/login?next=//evil.example/x", data={"email": user.email, "password": pw,
                                                           "csrf_token": csrf_from(page.data)})
    assert r.headers["Location"] == "/"


@pytest.mark.parametrize("role", ["moderator", "support"])
def test_readers_cannot_change_issues(client, login, make_issue, role):
    issue_id = make_issue(1)
    login(role)
    page = client.get(f"/issues/{issue_id}")
    assert page.status_code == 200
    token = csrf_from(page.data)
    assert client.post(f"/issues/{issue_id}/launch", data={"mode": "now", "csrf_token": token}).status_code == 403
    assert client.get("/issues/new").status_code == 403
    assert client.post(f"/issues/{issue_id}/actions/pause", headers={"X-CSRFToken": token}).status_code == 403
