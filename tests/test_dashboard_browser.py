"""The dashboard as people use it, in Chromium: one database, web server, worker and browser
for the whole module (each test makes its own issues and users), so the many page checks
stay fast. Rows that tell the truth while they poll, refusals where they happen, the menu
by keyboard, a phone's width, the language switch, the time zone of the date picker, and
axe-core on every page in both languages."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest
import redis
import sqlalchemy as sa

from mailing import create_app, lifecycle, settings
from mailing.cli import create_user
from mailing.extensions import db
from mailing.models import JournalEvent, StopList, User
from mailing.stoplists import ensure_system_lists

from .support import ROOT, SmtpServer, counter, create_issue, issue_row, wait_for, wait_status
from .support.browser import chromium, log_in, screenshot
from .support.servers import WebServer, Workers, environment

pytestmark = pytest.mark.browser

AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"


class Site:
    """What the module's tests share: the app (its context is open), the served URL, the
    SMTP server, the browser, and one user per role."""

    def __init__(self, app, url, smtp, browser):
        self.app, self.url, self.smtp, self.browser = app, url, smtp, browser
        self.users: dict[str, tuple[str, str]] = {}

    def user(self, role: str) -> tuple[str, str]:
        if role not in self.users:
            user, pw = create_user(f"{role}-{next(counter)}@dash.test", role, "pw-" + role)
            self.users[role] = (user.email, pw)
        return self.users[role]

    def page(self, role: str | None = "editor", width: int = 1280, **context):
        """A new browser context (its own cookies) with one page, signed in as `role`."""
        ctx = self.browser.new_context(viewport={"width": width, "height": 900}, **context)
        page = ctx.new_page()
        if role:
            email, pw = self.user(role)
            log_in(page, self.url, email, pw)
        return page

    def actor(self, role: str) -> User:
        return db.session.scalar(sa.select(User).where(User.email == self.user(role)[0]))


@pytest.fixture(scope="module")
def site(db_template, redis_url, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dashboard")
    smtp = SmtpServer()
    smtp.start()
    env = environment(db_template.fresh(tmp), redis_url, smtp.url, tmp)
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        redis.Redis.from_url(env["REDIS_URL"]).flushdb()
        app = create_app({"TESTING": True})
        with app.app_context():
            ensure_system_lists()
            settings.put("launch_delay_seconds", 0)
            db.session.commit()
            web, workers = WebServer(env), Workers(env)
            workers.start(1)
            try:
                with chromium() as browser:
                    yield Site(app, web.url, smtp, browser)
            finally:
                workers.stop_all()
                web.stop()
                smtp.stop()
                db.session.remove()
                db.engine.dispose()
                db_template.drop(env["DATABASE_URL"])


@pytest.fixture(autouse=True)
def _clean_session(site):
    yield
    db.session.remove()
    site.smtp.handler.delay = 0


def sending(site, n: int, subject: str, delay: float = 0.03) -> int:
    """An issue launched now and seen Sending, its letters slowed so there is time to look."""
    site.smtp.handler.delay = delay
    issue_id = create_issue(n, subject=subject)
    lifecycle.launch(issue_id, site.actor("editor"))
    wait_status(issue_id, "sending", 30)
    return issue_id


def fresh(query):
    """One value as committed now: no read transaction stays open between polls (on SQLite
    it would keep showing the snapshot it started with)."""
    db.session.remove()
    try:
        return db.session.scalar(query)
    finally:
        db.session.remove()


def percent_of(page, issue_id: int) -> int:
    return int(page.locator(f"#issue-{issue_id}").get_attribute("data-percent") or 0)


# --- rows that tell the truth -----------------------------------------------------------

def test_an_open_menu_keeps_its_row_fresh_and_a_paused_row_reaches_its_final_counts(site):
    issue_id = sending(site, 300, "Open menu news")
    page = site.page("editor")
    row = page.locator(f"#issue-{issue_id}")
    button = row.locator(".menu-button")
    button.click()
    widths = page.evaluate(f"() => [...document.querySelectorAll('#issue-{issue_id} > td')].map(td => td.offsetWidth)")
    seen = {percent_of(page, issue_id)}
    # The numbers move under the open menu, the menu stays open, and no column moves.
    page.wait_for_function(f"() => Number(document.querySelector('#issue-{issue_id}').dataset.percent) > {max(seen)}",
                           timeout=20000)
    assert button.get_attribute("aria-expanded") == "true" and row.locator(".menu .action-pause").is_visible()
    again = page.evaluate(f"() => [...document.querySelectorAll('#issue-{issue_id} > td')].map(td => td.offsetWidth)")
    assert again == widths, "fixed column widths while the numbers change"
    assert page.evaluate("getComputedStyle(document.querySelector('table.issues')).fontVariantNumeric") == "tabular-nums"
    row.locator(".action-pause").click()
    page.wait_for_selector(f"#issue-{issue_id}[data-status=paused]")
    page.wait_for_selector("#live-status[role=status]:has-text('paused at')")  # says what happened
    # Letters in flight settle after the click: the paused row keeps polling until it shows them.
    wait_for(lambda: fresh(sa.select(sa.func.count()).select_from(JournalEvent).where(
        JournalEvent.issue_id == issue_id, JournalEvent.event == "pause_settled")), 20, what="pause settled")
    sent = issue_row(issue_id).sent_count
    page.wait_for_function(
        f"() => document.querySelector('#issue-{issue_id} .sent').textContent.includes('sent {sent} of')",
        timeout=5000)
    show = site.page("editor")
    show.goto(f"{site.url}/issues/{issue_id}")
    assert f"sent {sent} of" in show.locator(f"#issue-{issue_id} .sent").inner_text(), "the row agrees with the issue page"
    lifecycle.cancel(issue_id, site.actor("editor"))
    page.wait_for_selector(f"#issue-{issue_id}[data-status=cancelled]", timeout=20000)
    assert row.get_attribute("hx-trigger") is None, "a final row stops polling"


def test_a_row_on_moderation_changes_when_a_moderator_decides(site):
    issue_id = create_issue(5, subject="Casino weekend")  # a spam word: the check holds it
    lifecycle.launch(issue_id, site.actor("editor"))
    assert issue_row(issue_id).status == "moderation"
    page = site.page("editor")
    row = page.locator(f"#issue-{issue_id}")
    assert row.get_attribute("data-status") == "moderation" and row.get_attribute("hx-trigger")
    badge = page.locator(".held-count")
    colors = badge.evaluate("e => [getComputedStyle(e).color, getComputedStyle(e).backgroundColor]")
    assert colors == ["rgb(17, 24, 39)", "rgb(250, 204, 21)"], "dark on bright yellow, readable"
    lifecycle.reject(issue_id, site.actor("moderator"), "not this week")
    page.wait_for_selector(f"#issue-{issue_id}[data-status=draft]", timeout=5000)
    assert "not this week" in row.inner_text(), "without a reload"


def test_progress_leaves_stop_listed_recipients_out(site):
    issue_id = create_issue(20, subject="Stop-listed news")
    blocked = db.session.scalar(sa.select(StopList).where(StopList.code == "blocked"))
    emails = [d for d in db.session.scalars(sa.text(
        "SELECT email FROM contacts c JOIN list_members m ON m.contact_id = c.id "
        "JOIN issues i ON i.list_id = m.list_id WHERE i.id = :i ORDER BY c.id LIMIT 5"), {"i": issue_id})]
    from mailing import stoplists

    stoplists.add_pasted(blocked, "\n".join(emails), actor=site.actor("editor"), source="ui", region="RU")
    db.session.commit()
    settings.put("launch_delay_seconds", 4)  # Accepted for a while: nothing sent yet
    db.session.commit()
    try:
        lifecycle.launch(issue_id, site.actor("editor"))
    finally:
        settings.put("launch_delay_seconds", 0)
        db.session.commit()
    page = site.page("editor")
    page.wait_for_selector(f"#issue-{issue_id}[data-status=accepted] .suppressed")
    text = page.locator(f"#issue-{issue_id} .counts").inner_text()
    assert "5 stop-listed, not sent" in text and "sent 0 of 15" in text, text
    assert percent_of(page, issue_id) == 0, "stop-listed recipients are not progress (it said 25 %)"
    wait_status(issue_id, "sent", 30)
    page.wait_for_selector(f"#issue-{issue_id}[data-status=sent]", timeout=5000)
    assert percent_of(page, issue_id) == 100


# --- refusals where they happen -----------------------------------------------------------

def test_a_refused_row_action_is_shown_in_its_row_and_the_row_corrects_itself(site):
    issue_id = sending(site, 300, "Stale menu news")
    lifecycle.pause(issue_id, site.actor("editor"))
    page = site.page("editor")
    row = page.locator(f"#issue-{issue_id}")
    page.wait_for_selector(f"#issue-{issue_id}[data-status=paused]")
    page.route("**/row", lambda route: route.abort())  # the row falls behind, as on a slow network
    row.locator(".menu-button").click()
    lifecycle.cancel(issue_id, site.actor("editor"))  # someone else cancels it meanwhile
    row.locator(".action-resume").click()
    alert = row.locator(".row-error[role=alert]")
    alert.wait_for()
    assert "cannot be resumed" in alert.inner_text()
    assert page.locator("#errors").inner_text() == "", "in the row, not at the top of the page"
    page.unroute("**/row")
    page.wait_for_selector(f"#issue-{issue_id}[data-status=stopping], #issue-{issue_id}[data-status=cancelled]")


def test_form_errors_are_beside_their_fields_and_error_pages_keep_the_layout(site):
    page = site.page("editor")
    create_issue(1)  # a sender and a list to choose
    page.goto(f"{site.url}/issues/new")
    page.fill("#subject", "Spread news")
    page.check("input[name=spread][value=portions]")
    page.fill("#portion_size", "")
    page.fill("#portion_minutes", "")
    page.click("form.editor button[type=submit]")
    assert page.locator("label:has(#portion_size) .error").inner_text() == "Give the number of recipients per portion."
    assert page.locator("label:has(#portion_minutes) .error").inner_text() == "Give the minutes between portions."
    issue_id = create_issue(2, subject="Dated news")
    page.goto(f"{site.url}/issues/{issue_id}")
    page.check("input[name=mode][value=at]")
    page.click("#launch")
    assert page.locator("label:has(#send_at) .error").inner_text() == "Give the date and time to send at."
    assert page.locator("nav#nav-links").count() == 1
    page.goto(f"{site.url}/issues/999999", referer=f"{site.url}/issues/{issue_id}")
    assert page.locator("h1").inner_text() == "Not found" and page.locator("nav#nav-links").count() == 1
    page.click("a.back")
    page.wait_for_url(f"{site.url}/issues/{issue_id}")


# --- keyboard, phone, language, time zone -------------------------------------------------

def test_the_row_menu_by_keyboard(site):
    issue_id = create_issue(3, subject="Keyboard news")
    lifecycle.launch(issue_id, site.actor("editor"), at=datetime.utcnow() + timedelta(days=3))
    assert issue_row(issue_id).status == "scheduled"
    page = site.page("editor")
    button = page.locator(f"#issue-{issue_id} .menu-button")
    button.focus()
    page.keyboard.press("Enter")
    assert button.get_attribute("aria-expanded") == "true"
    active = "() => document.activeElement.className"
    assert "action-cancel" in page.evaluate(active), "Enter opens the menu on its first item"
    page.keyboard.press("ArrowDown")
    assert "action-copy" in page.evaluate(active)
    page.keyboard.press("ArrowDown")
    assert "action-cancel" in page.evaluate(active), "the arrows wrap around"
    page.keyboard.press("Escape")
    assert button.get_attribute("aria-expanded") == "false" and "menu-button" in page.evaluate(active)
    page.keyboard.press("ArrowDown")
    asked = []
    page.once("dialog", lambda d: (asked.append(d.message), d.accept()))
    page.keyboard.press("Enter")
    page.wait_for_selector(f"#issue-{issue_id}[data-status=cancelled]")
    assert asked == ["Cancel “Keyboard news”? It will not be sent, and it cannot be resumed."]
    page.wait_for_selector("#live-status[role=status]:has-text('is cancelled')")
    assert page.evaluate("() => document.activeElement.closest('tr') && document.activeElement.closest('tr').id") \
        == f"issue-{issue_id}", "the focus is back on the row after the action"


def test_phone_width_keeps_every_page_inside_the_screen(site):
    issue_id = create_issue(3, subject="A rather long subject line for a phone screen, with more words")
    page = site.page("editor", width=390)
    for path in ("/", f"/issues/{issue_id}"):
        page.goto(site.url + path)
        assert page.evaluate("document.documentElement.scrollWidth") <= 390, path
    toggle = page.locator(".nav-toggle")
    assert toggle.is_visible() and not page.locator("#nav-links").is_visible(), "the navigation folds away"
    toggle.click()
    assert page.locator("#nav-links").is_visible() and toggle.get_attribute("aria-expanded") == "true"
    assert page.locator("iframe.preview").evaluate("e => e.offsetWidth") >= 330, "the preview takes the width"


def test_language_switch_in_the_header(site):
    page = site.page(None)
    page.goto(site.url + "/login")
    page.click("button[name=locale][value=ru]")
    assert page.locator("html").get_attribute("lang") == "ru", "before signing in too"
    email, pw = site.user("support")
    log_in(page, site.url, email, pw)
    page.click("button[name=locale][value=ru]")
    page.wait_for_selector("html[lang=ru]")
    assert "Исходящие" in page.locator("h1").inner_text() and page.url == site.url + "/"
    page.goto(site.url + "/journal")
    assert page.locator("html").get_attribute("lang") == "ru", "kept in the profile"
    page.click("button[name=locale][value=en]")
    page.wait_for_selector("html[lang=en]")
    assert page.url == site.url + "/journal", "back on the page it was clicked on"


def test_time_zone_from_the_browser_is_used_by_the_date_picker(site):
    create_user(email := f"tz-{next(counter)}@dash.test", "editor", "pw-tz-editor")
    db.session.commit()
    ctx = site.browser.new_context(timezone_id="Asia/Tokyo")
    page = ctx.new_page()
    log_in(page, site.url, email, "pw-tz-editor")
    wait_for(lambda: fresh(sa.select(User.time_zone).where(User.email == email)) == "Asia/Tokyo",
             10, what="the browser's zone stored")
    issue_id = create_issue(2, subject="Tokyo news")
    page.goto(f"{site.url}/issues/{issue_id}")
    assert "Asia/Tokyo" in page.locator("label:has(#send_at)").inner_text()
    page.check("input[name=mode][value=at]")
    page.fill("#send_at", "2031-03-10T12:00")
    page.click("#launch")
    page.wait_for_url(site.url + "/")
    assert issue_row(issue_id).send_at == datetime(2031, 3, 10, 3, 0), "12:00 in Tokyo is stored as 03:00 UTC"
    when = page.locator(f"#issue-{issue_id} .when").inner_text()
    assert "10 Mar 2031, 12:00" in when and "Asia/Tokyo" in when
    page.goto(site.url + "/profile")
    page.select_option("#time_zone", "Europe/Moscow")
    page.click("form[action='/profile'] button.primary")
    page.goto(site.url + "/")
    assert "06:00" in page.locator(f"#issue-{issue_id} .when").inner_text(), "edited in Profile, shown in it"
    ctx.close()


# --- axe-core on every page, in both languages, with screenshots --------------------------

def _pages(issue_id: int, list_id: int, stop_id: int) -> dict[str, str]:
    return {
        "outgoing": "/", "issue": f"/issues/{issue_id}", "issue-responses": f"/issues/{issue_id}?tab=responses",
        "issue-report": f"/issues/{issue_id}?tab=report", "new-issue": "/issues/new", "contacts": "/contacts",
        "lists": "/lists", "list": f"/lists/{list_id}", "stoplists": "/stoplists/", "stoplist": f"/stoplists/{stop_id}",
        "moderation": "/moderation", "lookup": "/lookup?q=r", "journal": "/journal", "settings": "/admin/settings",
        "users": "/admin/users", "senders": "/admin/senders", "pacing": "/admin/pacing", "dkim": "/admin/dkim",
        "profile": "/profile", "package": "/admin/package", "bounces": "/admin/bounces", "materials": "/materials",
        "templates": "/templates", "webhooks": "/admin/webhooks",
    }


def _axe(page) -> list[dict]:
    page.add_script_tag(path=str(AXE))
    found = page.evaluate("async () => (await axe.run(document, {resultTypes: ['violations']})).violations")
    return [{"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]][:5]}
            for v in found if v["impact"] in ("serious", "critical")]


@pytest.mark.parametrize("lang", ["en", "ru"])
def test_every_page_passes_axe_in_both_languages_with_screenshots(site, lang):
    assert AXE.exists(), "make install brings axe-core (npm ci)"
    issue_id = create_issue(12, subject="Axe news")
    site.smtp.handler.delay = 0
    lifecycle.launch(issue_id, site.actor("editor"))
    wait_status(issue_id, "sent", 30)
    list_id = issue_row(issue_id).list_id
    stop_id = db.session.scalar(sa.select(StopList.id).where(StopList.code == "blocked"))
    from mailing import webhooks  # an endpoint, so that its card and log table are checked too

    webhooks.create_endpoint("https://hooks.example.com/outbox", [webhooks.STATUS_CHANGED], "test")
    db.session.commit()
    db.session.remove()
    problems: dict[str, list] = {}
    for width in (1280, 390):
        # The page's own Content-Security-Policy would refuse the injected axe script.
        page = site.page(None, width=width, bypass_csp=True, locale=lang,
                         extra_http_headers={"Accept-Language": lang})
        page.goto(site.url + "/login")
        problems[f"login@{width}"] = _axe(page)
        screenshot(page, f"dashboard-{lang}-{width}-login")
        email, pw = site.user("admin")
        log_in(page, site.url, email, pw)
        for name, path in _pages(issue_id, list_id, stop_id).items():
            page.goto(site.url + path)
            assert page.locator("html").get_attribute("lang") == lang, name
            if width == 1280:
                problems[f"{name}@{width}"] = _axe(page)
            elif page.evaluate("document.documentElement.scrollWidth") > 390:
                problems[f"{name}@{width}"] = ["wider than the phone's screen"]
            screenshot(page, f"dashboard-{lang}-{width}-{name}")
        page.context.close()
    bad = {k: v for k, v in problems.items() if v}
    assert not bad, json.dumps(bad, ensure_ascii=False, indent=1)
