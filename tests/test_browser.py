"""The pages in a real browser: launch an issue and watch it go out without reloading."""

import pytest

from .support import deliveries_of
from .support.browser import log_in, screenshot

pytestmark = pytest.mark.browser


def test_launch_and_watch_progress_reach_sent(ctx, make_user, make_issue, smtp, workers, browser, web):
    issue_id = make_issue(300, subject="Browser news")
    user, pw = make_user("editor")
    smtp.handler.delay = 0.08  # slow enough to watch the bar move (≈6 s in all)
    workers.start(1)
    page = browser.new_page()
    log_in(page, web, user.email, pw)
    page.goto(f"{web}/issues/{issue_id}")
    page.check("input[value=now]")
    asked = []
    page.once("dialog", lambda d: (asked.append(d.message), d.accept()))
    page.click("#launch")
    page.wait_for_url(web + "/")
    assert asked == ["Send “Browser news” to 300 people now?"], "the launch names its consequence first"
    assert "is launched to 300 recipients" in page.locator("p.flash[role=status]").inner_text()
    row = page.locator(f"#issue-{issue_id}")
    # The row replaces itself about once a second: seen sending, between 0 and 100 %, then Sent.
    page.wait_for_selector(f"#issue-{issue_id}[data-status=sending]", timeout=30000)
    page.wait_for_function(
        """id => { const bar = document.querySelector(`#issue-${id} .progress`);
                   const v = bar ? Number(bar.getAttribute('aria-valuenow')) : 0;
                   return v > 0 && v < 100; }""", arg=issue_id, timeout=30000)
    page.wait_for_selector(f"#issue-{issue_id}[data-status=sent]", timeout=60000)
    assert row.locator(".progress").get_attribute("aria-valuenow") == "100"
    assert row.locator(".badge").inner_text().strip() == "Sent"
    assert row.get_attribute("hx-trigger") is None, "a finished row stops polling"
    assert "sent 300" in row.locator(".counts").inner_text()
    screenshot(page, "outgoing-sent")
    assert {d.state for d in deliveries_of(issue_id)} == {"sent"}


def test_dropdown_pause_then_resume_to_sent(ctx, make_user, make_issue, smtp, workers, browser, web):
    issue_id = make_issue(400, subject="Pausable news")
    user, pw = make_user("editor")
    smtp.handler.delay = 0.03
    workers.start(1)
    from mailing import lifecycle

    lifecycle.launch(issue_id, user)
    page = browser.new_page()
    log_in(page, web, user.email, pw)
    row = page.locator(f"#issue-{issue_id}")
    page.wait_for_function(
        """id => { const bar = document.querySelector(`#issue-${id} .progress`);
                   const v = bar ? Number(bar.getAttribute('aria-valuenow')) : 0;
                   return v >= 5; }""", arg=issue_id, timeout=30000)
    row.locator(".menu-button").click()
    row.locator("button.action-pause").click()
    page.wait_for_selector(f"#issue-{issue_id}[data-status=paused]", timeout=10000)
    badge = row.locator(".badge").inner_text().strip()
    assert badge.startswith("Paused ") and badge.endswith("%"), badge
    assert 0 < int(badge.split()[1].rstrip("%")) < 100
    screenshot(page, "outgoing-paused")
    row.locator(".menu-button").click()
    assert row.locator("button.action-pause").count() == 0, "only legal actions are offered"
    row.locator("button.action-resume").click()
    page.wait_for_selector(f"#issue-{issue_id}[data-status=sent]", timeout=90000)
    assert row.locator(".badge").inner_text().strip() == "Sent"
    assert len(smtp.handler.counts()) == 400 and set(smtp.handler.counts().values()) == {1}


def test_cancel_asks_for_confirmation(ctx, make_user, make_issue, smtp, workers, browser, web):
    issue_id = make_issue(300)
    user, pw = make_user("editor")
    smtp.handler.delay = 0.03
    workers.start(1)
    from mailing import lifecycle

    lifecycle.launch(issue_id, user)
    page = browser.new_page()
    log_in(page, web, user.email, pw)
    row = page.locator(f"#issue-{issue_id}")
    page.wait_for_selector(f"#issue-{issue_id}[data-status=sending]", timeout=30000)
    dialogs = []

    def answer(dialog):
        dialogs.append(dialog.message)
        dialog.dismiss() if len(dialogs) == 1 else dialog.accept()

    page.on("dialog", answer)
    row.locator(".menu-button").click()
    row.locator("button.action-cancel").click()
    page.wait_for_timeout(500)
    assert row.get_attribute("data-status") == "sending", "dismissing the confirmation changes nothing"
    if row.locator(".menu-button").get_attribute("aria-expanded") != "true":
        row.locator(".menu-button").click()
    row.locator("button.action-cancel").click()
    page.wait_for_selector(f"#issue-{issue_id}[data-status=cancelled]", timeout=30000)
    assert len(dialogs) == 2 and "cannot be resumed" in dialogs[0] and "recipients not yet sent" in dialogs[0]


def test_held_issue_is_approved_by_a_moderator_and_sent(ctx, make_user, make_issue, smtp, workers, browser, web):
    issue_id = make_issue(20, subject="Casino night")  # a spam word: the pre-send check holds it
    editor, epw = make_user("editor")
    moderator, mpw = make_user("moderator")
    workers.start(1)
    page = browser.new_page()
    log_in(page, web, editor.email, epw)
    page.goto(f"{web}/issues/{issue_id}")
    page.check("input[value=now]")
    page.once("dialog", lambda d: d.accept())
    page.click("#launch")
    page.wait_for_url(web + "/")
    row = page.locator(f"#issue-{issue_id}")
    assert row.get_attribute("data-status") == "moderation"
    assert "casino" in row.inner_text()
    assert page.locator(".held-count").inner_text() == "1"
    page.context.clear_cookies()
    log_in(page, web, moderator.email, mpw)
    page.goto(f"{web}/moderation")
    held = page.locator(f"#held-{issue_id}")
    assert "Words that spam filters dislike" in held.inner_text() and editor.email in held.inner_text()
    assert "spam_words" not in held.inner_text(), "rule names in words, not keys"
    screenshot(page, "moderation-queue")
    held.locator("button.approve").click()
    page.goto(web + "/")
    page.wait_for_selector(f"#issue-{issue_id}[data-status=sent]", timeout=60000)
    assert len(smtp.handler.counts()) == 20


def test_paste_into_a_stop_list_shows_the_report(ctx, make_user, browser, web):
    import sqlalchemy as sa

    from mailing.extensions import db
    from mailing.models import StopList

    blocked = db.session.scalar(sa.select(StopList.id).where(StopList.code == "blocked"))
    db.session.commit()
    user, pw = make_user("editor")
    page = browser.new_page()
    log_in(page, web, user.email, pw)
    page.goto(f"{web}/stoplists/{blocked}")
    page.fill("textarea[name=items]", "ann@example.org\nnot an address\nbob@example.org; +7 912 345-67-89\nann@example.org")
    page.click("form.add button.primary")
    assert "Tick the box" in page.content(), "confirmation is required"
    page.fill("textarea[name=items]", "ann@example.org\nnot an address\nbob@example.org; +7 912 345-67-89\nann@example.org")
    page.check("input[name=confirm]")
    page.click("form.add button.primary")
    report = page.locator("section.report")
    assert "Added: 3" in report.inner_text() and "rejected: 2" in report.inner_text()
    rows = page.locator("table.rejected tbody tr")
    assert rows.count() == 2 and "not an address" in rows.nth(0).inner_text()
    entries = page.locator("table.entries").inner_text()
    assert "ann@example.org" in entries and "+79123456789" in entries
    screenshot(page, "stoplist-report")
