"""A refusal is answered in the form its client reads: JSON under /api/, the bare flash
fragment for htmx, the error page for a plain request (mailing/errors.py)."""

from markupsafe import escape

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
    assert htmx.data.decode().strip() == f'<p class="flash error">{message}</p>', "the fragment, no page around it"
    assert "HX-Request" in htmx.headers.get("Vary", "")

    page = client.post(url, headers={"X-CSRFToken": token})
    assert page.status_code == 409 and page.mimetype == "text/html"
    html = page.data.decode()
    assert html.lstrip().startswith("<!doctype html>") and "<h1>409</h1>" in html and message in html

    assert issue_status(issue_id) == "draft", "nothing changed"


def test_a_missing_stoplist_is_named_in_the_api_and_a_missing_page_is_not(client, login, api_client):
    r = api_client("support").get("/stoplists/999999/entries")
    assert r.status_code == 404 and r.json == {"error": "not_found", "message": "No such stop-list."}
    login("editor")
    page = client.get("/stoplists/999999")
    assert page.status_code == 404 and "Nothing here." in page.data.decode()
