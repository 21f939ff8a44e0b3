"""A refusal is answered in the form its client reads: JSON under /api/, the bare flash
fragment for htmx, the error page for a plain request (mailing/errors.py)."""

import re

import sqlalchemy as sa
from markupsafe import escape

from mailing.extensions import db
from mailing.models import Issue, User

from .support import csrf_from, issue_status


def test_an_illegal_transition_answers_json_fragment_or_page(client, login, make_issue, api_client):
    issue_id = make_issue(1)  # a draft: there is nothing to pause

    r = api_client("editor").post(f"/issues/{issue_id}/pause")
    assert r.status_code == 409 and r.is_json
    assert r.json["error"] == "illegal_transition" and r.json["message"]
    message = str(escape(r.json["message"]))

    login("editor")
    token = csrf_from(client.get(f"/issues/{issue_id}").data)
    url = f"/issues/{issue_id}/actions/pause"
    htmx = client.post(url, headers={"X-CSRFToken": token, "HX-Request": "true"})
    assert htmx.status_code == 409 and htmx.mimetype == "text/html"
    assert htmx.data.decode().strip() == f'<p class="flash error" role="alert">{message}</p>', \
        "the fragment, no page around it"
    assert "HX-Request" in htmx.headers.get("Vary", "")

    page = client.post(url, headers={"X-CSRFToken": token, "Referer": f"http://localhost/issues/{issue_id}"})
    assert page.status_code == 409 and page.mimetype == "text/html"
    html = page.data.decode()
    assert html.lstrip().startswith("<!doctype html>") and message in html
    assert "<h1>Not possible now</h1>" in html, "a heading in words, not a bare status code"
    assert 'id="nav-links"' in html, "inside the layout, with the navigation"
    assert f'class="button back" href="http://localhost/issues/{issue_id}"' in html, "a way back to where it came from"

    assert issue_status(issue_id) == "draft", "nothing changed"


def test_a_missing_stoplist_is_named_in_the_api_and_a_missing_page_is_not(client, login, api_client):
    r = api_client("support").get("/stoplists/999999/entries")
    assert r.status_code == 404 and r.json == {"error": "not_found", "message": "No such stop-list."}
    login("editor")
    page = client.get("/stoplists/999999")
    html = page.data.decode()
    assert page.status_code == 404 and "There is no such page here." in html
    assert 'class="button back" href="/"' in html, "without a page to go back to: Outgoing"


def test_error_pages_speak_the_users_language(client, login):
    user = login("support")
    db.session.execute(sa.update(User).where(User.id == user.id).values(locale="ru"))
    db.session.commit()
    html = client.get("/issues/999999").data.decode()
    assert '<html lang="ru">' in html and "Исходящие" in html, "the Russian layout around the error"


def test_new_issue_spread_without_its_numbers_is_refused_beside_the_fields(client, login, make_issue):
    """Portions with empty N and M were a 500; each missing number is now named at its field."""
    make_issue(1)
    login("editor")
    page = client.get("/issues/new")
    html = page.data.decode()
    ids = re.findall(r'<option[^>]*value="(\d+)"', html)
    base = {"subject": "Spread", "body_html": "<p>x</p>", "sender_id": ids[0], "list_id": ids[-1],
            "csrf_token": csrf_from(page.data)}
    for spread, fields in (("portions", ("portion_size", "portion_minutes")), ("hours", ("spread_hours",))):
        r = client.post("/issues/new", data={**base, "spread": spread, "portion_size": "", "portion_minutes": "",
                                             "spread_hours": ""})
        assert r.status_code == 400, spread
        html = r.data.decode()
        assert "<!doctype html>" in html.lower() and 'id="nav-links"' in html
        for name in fields:
            label = html[html.index(f'id="{name}"'):]
            assert label.index('class="error"') < label.index("</label>"), f"{name}: the error beside its field"
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Issue)) == 1, "nothing saved"


def test_launch_at_a_time_without_one_is_refused_beside_the_picker(client, login, make_issue):
    issue_id = make_issue(2)
    login("editor")
    token = csrf_from(client.get(f"/issues/{issue_id}").data)
    r = client.post(f"/issues/{issue_id}/launch", data={"mode": "at", "send_at": "", "csrf_token": token})
    html = r.data.decode()
    assert r.status_code == 400 and 'id="nav-links"' in html, "the issue page, not a bare error page"
    picker = html[html.index('id="send_at"'):]
    assert picker.index("Give the date and time to send at.") < picker.index("</label>")
    assert 'aria-invalid="true"' in html[html.index('<input'):][:2000] or 'aria-describedby="send_at-error"' in html
    assert issue_status(issue_id) == "draft"


def test_chain_step_at_a_time_without_one_is_refused_beside_the_picker(client, login, make_issue):
    issue_id = make_issue(2)
    login("editor")
    token = csrf_from(client.get(f"/issues/{issue_id}").data)
    r = client.post(f"/issues/{issue_id}/steps", data={"audience": "all", "when": "at", "at": "",
                                                        "csrf_token": token})
    assert r.status_code == 400 and "Give the date and time." in r.data.decode()
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Issue)) == 1, "no step made"
