"""Issue 16, findings 4 and 5: odd ids, tokens and page numbers answer 400 or 404 (never
500), and a mistyped SMTP_URL's password never reaches a page, the issue's status reason,
the journal or a log line."""

from __future__ import annotations

import json
import logging
import re
from urllib.parse import quote

import pytest
import sqlalchemy as sa

from .support import csrf_from, issue_row, journal_of, wait_status

HUGE = str(10**20)  # past a 64-bit integer: an OFFSET or an id this large overflows


# --- finding 4: strict parsing ------------------------------------------------------

@pytest.mark.parametrize("path", ["/u/².x", "/u/1.é", "/u/¹²³.abcdef0123456789abcd", "/u/1.ABCDEF0123456789ABCD",
                                  "/u/٣.abcdef0123456789abcd", "/u/99999999999999999999.0", "/u/."])
def test_forged_unsubscribe_links_are_refused_not_crashed(client, path):
    assert client.get(path).status_code == 400
    assert client.post(path, data={"confirm": "yes"}).status_code == 400
    assert client.post(path + "/one-click", data={"List-Unsubscribe": "One-Click"}).status_code == 400


def test_a_genuine_unsubscribe_token_still_works(ctx, client, make_issue, make_user):
    from mailing import lifecycle
    from mailing.extensions import db
    from mailing.models import Delivery
    from mailing.unsubscribe import make_token

    issue_id = make_issue(1)
    lifecycle.launch(issue_id, make_user("editor")[0])
    delivery_id = db.session.scalar(sa.select(Delivery.id).where(Delivery.issue_id == issue_id))
    db.session.commit()
    token = make_token(ctx.config["SECRET_KEY"].encode(), delivery_id)
    assert client.get(f"/u/{token}").status_code == 200
    assert client.post(f"/u/{token}", data={"confirm": "yes"}).status_code == 200


def _paged_pages(ctx, make_issue):
    """Every page with a `page` (or keyset `before`) query parameter, and its id."""
    from mailing.extensions import db
    from mailing.models import ContactList, StopList

    issue_id = make_issue(3)
    stop_id = db.session.scalar(sa.select(StopList.id).order_by(StopList.id).limit(1))
    list_id = db.session.scalar(sa.select(ContactList.id).limit(1))
    db.session.commit()
    return [("/", "page"), (f"/issues/{issue_id}?tab=responses&code=250", "page"), ("/journal", "page"),
            ("/sandbox/", "page"), (f"/stoplists/{stop_id}", "page"), ("/contacts", "before"),
            (f"/lists/{list_id}", "before")], stop_id


@pytest.mark.parametrize("value", [HUGE, "10^20", "1e20", "²", "١", "-1", "0", "abc", " 1", "1.5", "+2"])
def test_bad_page_numbers_are_400_on_every_paged_page(ctx, client, login, make_issue, value):
    pages, _stop = _paged_pages(ctx, make_issue)
    login("support")
    for path, name in pages:
        sep = "&" if "?" in path else "?"
        r = client.get(f"{path}{sep}{name}={quote(value)}")
        assert r.status_code == 400, (path, name, value, r.status_code)
        assert name.encode() in r.data, "the message names the parameter"
        assert client.get(f"{path}{sep}{name}=2").status_code == 200, "a sane value still works"


@pytest.mark.parametrize("value", [HUGE, "²", "0", "x", "201"])
def test_bad_page_limits_are_400_in_the_api(ctx, api_client, make_issue, value):
    """The API pages by cursor: a limit outside 1..200 in ASCII digits, or a cursor it did
    not give, is a 400 naming it."""
    _pages, stop_id = _paged_pages(ctx, make_issue)
    support = api_client("support")
    for path in ("/issues", f"/stoplists/{stop_id}/entries", "/contacts", "/journal"):
        r = support.get(f"{path}?limit={value}")
        assert r.status_code == 400, (path, value, r.status_code)
        assert r.get_json()["error"] == "limit" and r.get_json()["message"]
        assert support.get(f"{path}?cursor={value}").get_json()["error"] == "cursor"
        assert support.get(f"{path}?limit=3").status_code == 200


def test_the_largest_page_answers_without_an_overflow(ctx, client, login, api_client, make_issue):
    """MAX_PAGE itself runs its query (OFFSET ~10^8): an empty page, not a database error."""
    from mailing.views.params import MAX_PAGE

    pages, stop_id = _paged_pages(ctx, make_issue)
    login("support")
    for path, name in pages:
        if name == "page":
            sep = "&" if "?" in path else "?"
            assert client.get(f"{path}{sep}page={MAX_PAGE}").status_code == 200, path
            assert client.get(f"{path}{sep}page={MAX_PAGE + 1}").status_code == 400, path


@pytest.mark.parametrize("value", ["²", "¹²", "٣", HUGE, "-3", "abc"])
def test_journal_issue_filter_shows_its_error_next_to_the_field(client, login, value):
    login("support")
    r = client.get(f"/journal?issue={value}")
    assert r.status_code == 400
    html = r.data.decode()
    field = html.index('name="issue"')
    error = html.index('class="error" id="issue-error"')
    assert field < error < html.index('name="actor"'), "the message sits beside the issue field"
    assert 'aria-describedby="issue-error"' in html


def test_journal_issue_filter_still_filters(ctx, client, login, make_issue):
    from mailing import states
    from mailing.extensions import db

    a, b = make_issue(1), make_issue(1)
    states.record(a, "test_letter", actor="someone@a")
    states.record(b, "test_letter", actor="someone@b")
    db.session.commit()
    login("support")
    html = client.get(f"/journal?issue={a}").data.decode()
    assert "someone@a" in html and "someone@b" not in html


@pytest.mark.parametrize("path", [f"/issues/{HUGE}", f"/issues/{HUGE}/row", f"/contacts/{HUGE}",
                                  f"/lists/{HUGE}", f"/stoplists/{HUGE}", f"/imports/{HUGE}",
                                  f"/issues/{2**31}", f"/issues/{2**31 - 1}", "/issues/１", "/issues/١"])
def test_overlong_or_non_ascii_ids_in_paths_are_404(client, login, api_client, path):
    login("admin")
    assert client.get(path).status_code == 404
    api = api_client("admin")
    for api_path in (f"/issues/{HUGE}", f"/stoplists/{HUGE}/entries", "/issues/１"):
        r = api.get(api_path)
        assert r.status_code == 404 and r.get_json()["error"] == "not_found", api_path


def test_bad_ids_in_forms_and_json_are_400_and_change_nothing(ctx, client, login, api_client, make_issue):
    from mailing import stoplists
    from mailing.extensions import db
    from mailing.models import Contact, StopEntry, StopList

    make_issue(1)
    contact_id = db.session.scalar(sa.select(Contact.id).limit(1))
    stop = db.session.scalar(sa.select(StopList).where(StopList.code == "blocked"))
    stoplists.add_pasted(stop, "keep@example.org", actor=None, source="test", region="RU")
    stop_id = stop.id
    db.session.commit()
    login("editor")
    token = csrf_from(client.get(f"/stoplists/{stop_id}").data)
    for value in ("²", HUGE, str(2**31), "-1", "1 2"):
        r = client.post(f"/stoplists/{stop_id}/remove", data={"entry": value, "confirm": "yes", "csrf_token": token})
        assert r.status_code == 400, value
        r = client.post(f"/contacts/{contact_id}/stoplists", data={"list_id": value, "csrf_token": token})
        assert r.status_code == 400, value
    editor = api_client("editor")
    for ids in ([10**20], [2**31], [True], [-1], ["1"], [1.0]):
        r = editor.post(f"/stoplists/{stop_id}/remove", json={"ids": ids})
        assert r.status_code == 400 and r.get_json()["error"] == "ids", ids
    assert db.session.scalar(sa.select(sa.func.count()).select_from(StopEntry)) == 1
    db.session.commit()


def test_overlong_search_text_is_cut_not_a_database_error(ctx, client, login, api_client, make_issue):
    """SQLite refuses a LIKE pattern over 50,000 characters: every search box stops at 254."""
    _pages, stop_id = _paged_pages(ctx, make_issue)
    long = "x" * 100_000
    login("support")
    for path in (f"/journal?actor={long}", f"/contacts?q={long}", f"/stoplists/{stop_id}?q={long}",
                 f"/lookup?q={long}"):
        assert client.get(path).status_code == 200, path[:40]
    # The API says so instead of cutting: a program can shorten its own query.
    r = api_client("support").get(f"/stoplists/{stop_id}/entries?q={long}")
    assert r.status_code == 400 and r.get_json()["error"] == "q"


def test_nul_characters_are_refused_with_400(ctx, client, login, api_client):
    from mailing.extensions import db
    from mailing.models import StopList

    login("editor")
    token = csrf_from(client.get("/stoplists/").data)
    r = client.post("/stoplists/", data={"name": "bad\x00name", "csrf_token": token})
    assert r.status_code == 400 and b"NUL" in r.data
    assert client.get("/contacts?q=a%00b").status_code == 400
    r = api_client("editor").post("/stoplists", json={"name": "x\x00y"})
    assert r.status_code == 400 and r.get_json()["error"] == "body"
    assert db.session.scalar(sa.select(sa.func.count()).select_from(StopList).where(
        StopList.name.contains("name"))) == 0
    db.session.commit()


# --- form errors beside their fields --------------------------------------------------

def _error_after(html: str, field_marker: str) -> str:
    """The first inline error that follows the field, before the form ends."""
    start = html.index(field_marker)
    end = html.index("</form>", start)
    found = re.search(r'<small class="error"[^>]*>([^<]+)</small>', html[start:end])
    assert found, f"no error beside {field_marker!r}"
    return found.group(1)


def test_list_name_errors_render_beside_the_field(ctx, client, login):
    from mailing.extensions import db
    from mailing.models import ContactList

    db.session.add_all([ContactList(name="Readers"), ContactList(name="Clients")])
    db.session.commit()
    clients_id = db.session.scalar(sa.select(ContactList.id).where(ContactList.name == "Clients"))
    db.session.commit()
    login("editor")
    token = csrf_from(client.get("/lists").data)
    r = client.post("/lists", data={"name": "  ", "csrf_token": token})
    assert r.status_code == 400 and _error_after(r.data.decode(), 'name="name"')
    r = client.post("/lists", data={"name": "Readers", "csrf_token": token})
    assert r.status_code == 409 and "exists" in _error_after(r.data.decode(), 'name="name"')
    # Renaming onto another list's name was an IntegrityError (500): now the same message.
    r = client.post(f"/lists/{clients_id}/rename", data={"name": "Readers", "csrf_token": token})
    assert r.status_code == 409 and "exists" in _error_after(r.data.decode(), f'action="/lists/{clients_id}/rename"')
    assert db.session.get(ContactList, clients_id, populate_existing=True).name == "Clients"
    db.session.commit()


def test_stoplist_name_errors_render_beside_the_field(ctx, client, login):
    from mailing.extensions import db
    from mailing.models import StopList

    stop = StopList(name="Partners")
    db.session.add(stop)
    db.session.commit()
    stop_id = stop.id
    login("editor")
    token = csrf_from(client.get("/stoplists/").data)
    r = client.post("/stoplists/", data={"name": "", "csrf_token": token})
    assert r.status_code == 400 and _error_after(r.data.decode(), 'name="name"')
    r = client.post(f"/stoplists/{stop_id}/rename", data={"name": "x" * 201, "csrf_token": token})
    html = r.data.decode()
    assert r.status_code == 400 and _error_after(html, f'action="/stoplists/{stop_id}/rename"')


def test_launch_form_errors_render_beside_the_field(ctx, client, login, make_issue):
    issue_id = make_issue(2)
    login("editor")
    token = csrf_from(client.get(f"/issues/{issue_id}").data)
    r = client.post(f"/issues/{issue_id}/launch", data={"mode": "at", "send_at": "", "csrf_token": token})
    assert r.status_code == 400
    assert "date and time" in _error_after(r.data.decode(), 'name="send_at"')
    r = client.post(f"/issues/{issue_id}/launch", data={"mode": "at", "send_at": "2001-01-01T10:00",
                                                        "csrf_token": token})
    assert r.status_code == 400 and "past" in _error_after(r.data.decode(), 'name="send_at"')
    r = client.post(f"/issues/{issue_id}/launch", data={"mode": "soon", "csrf_token": token})
    assert r.status_code == 400 and _error_after(r.data.decode(), 'name="mode"')
    assert issue_row(issue_id).status == "draft", "a refused launch changes nothing"


# --- finding 5: no secret in messages -------------------------------------------------

PASSWORD = "S3cret-Relay-Pa55"
BAD_URLS = {
    # A typo in the scheme: today's message quotes the whole URL.
    "scheme": f"smpt://relay-user:{PASSWORD}@relay.invalid:587",
    # An unencoded "#" in the password: urlsplit takes the rest for a fragment and the
    # first half of the password for a port, which the port error quotes.
    "fragment": f"smtp://relay-user:{PASSWORD.replace('-', '#', 1)}@relay.invalid:587",
    # Well formed but unreachable: the connection error must not quote it either.
    "unreachable": f"smtp://relay-user:{PASSWORD}@no-such-host.invalid:25",
}


def _secret_parts(url: str) -> list[str]:
    password = url.split("relay-user:", 1)[1].rsplit("@", 1)[0]
    return [password] + [p for p in password.split("#") if len(p) >= 4]


@pytest.fixture
def bad_relay(request, env, monkeypatch):
    """The app, its workers and this test all see a mistyped SMTP_URL with a password."""
    url = BAD_URLS[request.param]
    monkeypatch.setenv("SMTP_URL", url)
    env["SMTP_URL"] = url
    return url


def _assert_nowhere(secrets: list[str], *texts: str) -> None:
    for text in texts:
        for secret in secrets:
            assert secret not in text, f"{secret!r} leaked into: {text[:300]!r}"


@pytest.mark.parametrize("bad_relay", list(BAD_URLS), indirect=True)
def test_test_letter_with_a_bad_smtp_url_shows_no_password(bad_relay, ctx, client, login, make_issue, caplog):
    caplog.set_level(logging.DEBUG)
    issue_id = make_issue(1)
    login("editor")
    page = client.get(f"/issues/{issue_id}")
    r = client.post(f"/issues/{issue_id}/test", data={"email": "me@example.org"},
                    headers={"X-CSRFToken": csrf_from(page.data), "HX-Request": "true"})
    assert r.status_code == 502
    body = r.data.decode()
    assert "relay-user" in body or "no-such-host" in body, "the error still says what is wrong"
    _assert_nowhere(_secret_parts(bad_relay), body, caplog.text,
                    json.dumps([dict(e._mapping) for e in journal_of(issue_id)], default=str))


@pytest.mark.parametrize("bad_relay", ["scheme", "unreachable"], indirect=True)
def test_interrupted_issue_with_a_bad_smtp_url_shows_no_password(bad_relay, ctx, client, login, make_issue,
                                                                 workers, api_client, caplog, capfd):
    from mailing import lifecycle

    caplog.set_level(logging.DEBUG)
    issue_id = make_issue(3)
    user = login("editor")
    # A short retry window: the unreachable relay interrupts in seconds, not minutes.
    workers.start(1, RELAY_RETRY_WINDOW="1")
    lifecycle.launch(issue_id, user)
    wait_status(issue_id, "interrupted", 90)
    issue = issue_row(issue_id)
    assert issue.status_reason, "the reason is still given"
    pages = [client.get(f"/issues/{issue_id}").data.decode(), client.get("/journal").data.decode(),
             client.get(f"/issues/{issue_id}/row").data.decode(),
             api_client("support").get(f"/issues/{issue_id}").data.decode()]
    journal = json.dumps([dict(e._mapping) for e in journal_of(issue_id)], default=str)
    workers.stop_all()
    out, err = capfd.readouterr()
    _assert_nowhere(_secret_parts(bad_relay), issue.status_reason, issue.last_reply or "", journal,
                    *pages, caplog.text, out, err)


# --- the redaction itself -----------------------------------------------------------

def test_redact_masks_url_passwords_and_configured_secrets_in_text_and_logs(caplog):
    from mailing import redact

    redact.remember({"SMTP_URL": "smtp://u%40x.org:p%2Fw0rd-1@relay:587",
                     "SQLALCHEMY_DATABASE_URI": "postgresql+psycopg://outbox:Db-Pa55word@db/outbox",
                     "REDIS_URL": "redis://:R3dis-Secret@cache:6379/0"})
    text = redact.redact("failed: postgresql+psycopg://outbox:Db-Pa55word@db/outbox and p/w0rd-1 "
                         "and redis://:R3dis-Secret@cache and netloc 'u:R3dis-Secret@h'")
    for secret in ("Db-Pa55word", "p/w0rd-1", "p%2Fw0rd-1", "R3dis-Secret"):
        assert secret not in text
    assert "postgresql+psycopg://outbox:***@db/outbox" in text, "what is not secret stays readable"
    assert redact.redact("smtp://user@relay:25") == "smtp://user@relay:25"
    assert redact.redact_value({"a": ["x Db-Pa55word"], "n": 3}) == {"a": ["x ***"], "n": 3}

    redact.install_log_redaction()
    caplog.set_level(logging.INFO)
    log = logging.getLogger("outbox.test")
    log.info("connecting to %s", "smtp://user:Other-Pa55@relay:25")
    try:
        raise ValueError("bad URL postgresql://outbox:Db-Pa55word@db/x")
    except ValueError:
        log.exception("it failed")
    assert "Other-Pa55" not in caplog.text and "Db-Pa55word" not in caplog.text
    assert "smtp://user:***@relay:25" in caplog.text and "ValueError" in caplog.text
