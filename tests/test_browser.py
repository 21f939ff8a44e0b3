"""The pages in a real browser: launch an issue and watch it go out without reloading."""

import pytest

from .browser import browser, log_in, screenshot, web  # noqa: F401  (fixtures)
from .conftest import deliveries_of

pytestmark = pytest.mark.browser


def test_launch_and_watch_progress_reach_sent(ctx, make_user, make_issue, smtp, workers, browser, web):  # noqa: F811
    issue_id = make_issue(300, subject="Browser news")
    user, pw = make_user("editor")
    smtp.handler.delay = 0.05  # slow enough to watch the bar move (≈4 s in all)
    workers.start(1)
    page = browser.new_page()
    log_in(page, web, user.email, pw)
    page.goto(f"{web}/issues/{issue_id}")
    page.check("input[value=now]")
    page.click("#launch")
    page.wait_for_url(web + "/")
    row = page.locator(f"#issue-{issue_id}")
    # The row replaces itself about once a second: seen sending, then at 100 % and Sent.
    page.wait_for_selector(f"#issue-{issue_id}[data-status=sending]", timeout=30000)
    seen_partial = False
    for _ in range(200):
        now = int(row.locator(".progress").get_attribute("aria-valuenow") or 0)
        if 0 < now < 100:
            seen_partial = True
        if row.get_attribute("data-status") == "sent":
            break
        page.wait_for_timeout(100)
    page.wait_for_selector(f"#issue-{issue_id}[data-status=sent]", timeout=60000)
    assert row.locator(".progress").get_attribute("aria-valuenow") == "100"
    assert row.locator(".badge").inner_text().strip() == "Sent"
    assert seen_partial, "the bar should be seen between 0 and 100 %"
    assert row.get_attribute("hx-trigger") is None, "a finished row stops polling"
    assert "sent 300" in row.locator(".counts").inner_text()
    screenshot(page, "outgoing-sent")
    assert {d.state for d in deliveries_of(issue_id)} == {"sent"}
