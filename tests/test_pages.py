"""Pages render for the right people, in English and Russian, and the editor validates per field."""

from mailing.extensions import db
from mailing.models import User

from .support import csrf_from


def test_russian_interface_follows_the_profile(client, login):
    user = login("editor")
    page = client.get("/profile")
    r = client.post("/profile", data={"locale": "ru", "csrf_token": csrf_from(page.data)})
    assert r.status_code == 302
    assert db.session.get(User, user.id, populate_existing=True).locale == "ru"
    html = client.get("/").data.decode()
    assert "Исходящие" in html and "Журнал заданий" in html


def test_browser_language_is_the_default(client, login):
    login("support")
    assert "Исходящие" in client.get("/", headers={"Accept-Language": "ru-RU,ru;q=0.9"}).data.decode()
    assert "Outgoing" in client.get("/", headers={"Accept-Language": "en-US"}).data.decode()


def test_new_issue_form_reports_each_bad_field_and_saves_nothing(client, login):
    from mailing.models import Issue

    login("editor")
    page = client.get("/issues/new")
    r = client.post("/issues/new", data={"subject": "", "body_html": "", "sender_id": "999",
                                         "list_id": "x", "csrf_token": csrf_from(page.data)})
    assert r.status_code == 400
    html = r.data.decode()
    assert html.count('class="error"') >= 3
    assert db.session.query(Issue).count() == 0


def test_issue_created_edited_previewed_and_escaped(client, login, make_issue):
    issue_id = make_issue(3, subject="<b>bold</b> & co")
    login("editor")
    html = client.get(f"/issues/{issue_id}").data.decode()
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; co" in html and "<b>bold</b>" not in html
    preview = client.get(f"/issues/{issue_id}/preview")
    assert preview.status_code == 200 and b"Hello, Reader 0 (r" in preview.data, "the list's first contact"
    assert "sandbox" in preview.headers["Content-Security-Policy"]
    page = client.get(f"/issues/{issue_id}/edit")
    form = {"subject": "New\r\nBcc: x@example.org", "body_html": "<p>{{ name }}</p>",
            "csrf_token": csrf_from(page.data)}
    import re

    form["sender_id"] = re.search(r'<option selected value="(\d+)"', page.data.decode()).group(1)
    form["list_id"] = re.findall(r'<option selected value="(\d+)"', page.data.decode())[1]
    r = client.post(f"/issues/{issue_id}/edit", data=form)
    assert r.status_code == 302
    from mailing.models import Issue

    issue = db.session.get(Issue, issue_id, populate_existing=True)
    assert issue.subject == "New Bcc: x@example.org", "CR/LF never reach a header"


def test_test_letter_goes_to_one_address(client, login, make_issue, smtp):
    issue_id = make_issue(3)
    login("editor")
    page = client.get(f"/issues/{issue_id}")
    r = client.post(f"/issues/{issue_id}/test", data={"email": "me@example.org"},
                    headers={"X-CSRFToken": csrf_from(page.data), "HX-Request": "true"})
    assert r.status_code == 200 and b"250" in r.data
    assert list(smtp.handler.counts()) == ["me@example.org"]
    bad = client.post(f"/issues/{issue_id}/test", data={"email": "not an address"},
                      headers={"X-CSRFToken": csrf_from(page.data), "HX-Request": "true"})
    assert bad.status_code == 400 and b"error" in bad.data


def test_sandbox_mailbox_lists_and_shows_caught_letters(client, login, env, tmp_path):
    import mailbox

    box = mailbox.Maildir(env["MAILDIR"], create=True)
    raw = (b"X-Envelope-To: ann@example.org\r\nFrom: News <n@outbox.test>\r\nTo: ann@example.org\r\n"
           b"Subject: Hello Ann\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>Hi <b>Ann</b></p>\r\n")
    key = box.add(mailbox.MaildirMessage(raw))
    login("support")
    listing = client.get("/sandbox/").data.decode()
    assert "Hello Ann" in listing and "ann@example.org" in listing
    assert b"Hello Ann" in client.get(f"/sandbox/{key}").data
    body = client.get(f"/sandbox/{key}/html")
    assert b"<b>Ann</b>" in body.data and "sandbox" in body.headers["Content-Security-Policy"]
    assert client.get("/sandbox/nope").status_code == 404


def test_polled_row_is_shared_for_a_second_and_dropped_on_a_status_change(client, login, make_issue, make_user):
    """Many pages polling one live issue cost one render a second; a status change shows
    at once; the cached row of one role never reaches another."""
    import time

    import sqlalchemy as sa

    from mailing import lifecycle, queueing
    from mailing.models import Issue

    issue_id = make_issue(5)
    db.session.execute(sa.update(Issue).where(Issue.id == issue_id).values(status="sending", total=5,
                                                                            sent_count=1))
    db.session.commit()
    editor = login("editor")
    first = client.get(f"/issues/{issue_id}/row").data.decode()
    assert "sent 1" in first and "action-pause" in first
    db.session.execute(sa.update(Issue).where(Issue.id == issue_id).values(sent_count=3))
    db.session.commit()
    assert "sent 1" in client.get(f"/issues/{issue_id}/row").data.decode(), "served from the shared render"
    time.sleep(queueing.ROW_TTL + 0.1)
    assert "sent 3" in client.get(f"/issues/{issue_id}/row").data.decode(), "renders again after a second"

    lifecycle.pause(issue_id, editor)
    paused = client.get(f"/issues/{issue_id}/row").data.decode()
    assert 'data-status="paused"' in paused and "action-resume" in paused, "the transition dropped the cache"

    client.post("/logout", data={"csrf_token": csrf_from(client.get("/profile").data)})
    login("support")
    for_support = client.get(f"/issues/{issue_id}/row").data.decode()
    assert 'data-status="paused"' in for_support
    assert "action-resume" not in for_support, "a support user never gets the editor's cached row"
