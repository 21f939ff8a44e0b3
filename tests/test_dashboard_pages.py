"""What the dashboard says to people, checked page by page: settings saved exactly and
only when changed, journal rows and launch settings as sentences, Outgoing's search and
sort, and the launcher's note about demo logins."""

from __future__ import annotations

import sqlalchemy as sa

from mailing import lifecycle, settings
from mailing.extensions import db
from mailing.models import JournalEvent

from .support import csrf_from


def _settings_form(html: str) -> dict[str, str]:
    """The settings form as a browser would post it untouched."""
    import re

    data = {m[0]: m[1] for m in re.findall(r'<input[^>]*name="([a-z_]+)"[^>]*value="([^"]*)"', html)}
    data.update({m[0]: m[1] for m in re.findall(r'<input[^>]*value="([^"]*)"[^>]*name="([a-z_]+)"', html)[::-1]})
    for name, text in re.findall(r'<textarea[^>]*name="([a-z_]+)"[^>]*>\n?([^<]*)</textarea>', html):
        data[name] = text
    if 'name="per_sender_unsubscribe"' in html and "checked" not in html.split('name="per_sender_unsubscribe"')[0][-200:]:
        data.pop("per_sender_unsubscribe", None)
    data["csrf_token"] = csrf_from(html)
    return data


def test_settings_round_trip_exactly_and_journal_only_what_changed(client, login):
    login("admin")
    html = client.get("/admin/settings").data.decode()
    assert 'value="0.003"' in html, "the complaint threshold as stored, not 0.00"
    form = _settings_form(html)
    assert form["moderation_complaint_rate"] == "0.003"
    r = client.post("/admin/settings", data=form)
    assert r.status_code == 302
    assert settings.get("moderation_complaint_rate") == 0.003
    journal = db.session.scalars(sa.select(JournalEvent).where(JournalEvent.event == "settings")).all()
    assert journal == [], "an untouched save changes and journals nothing"
    form["moderation_bounce_rate"] = "0.0125"
    client.post("/admin/settings", data=form)
    [row] = db.session.scalars(sa.select(JournalEvent).where(JournalEvent.event == "settings")).all()
    assert row.details["changed"] == {"moderation_bounce_rate": 0.0125}
    assert row.details["before"] == {"moderation_bounce_rate": 0.05}
    assert settings.get("moderation_complaint_rate") == 0.003 and settings.get("moderation_bounce_rate") == 0.0125
    journal = client.get("/journal").data.decode()
    assert "Settings changed" in journal and "Hold when the bounce rate exceeds: 1.25 % (was 5 %)" in journal
    assert "{" not in journal.split("<tbody>")[1], "no JSON in the journal"


def test_journal_and_launch_settings_read_as_sentences(client, login, make_issue, make_user):
    user, _pw = make_user("editor")
    issue_id = make_issue(3, subject="Sentence news")
    lifecycle.launch(issue_id, user)
    login("support")
    html = client.get(f"/issues/{issue_id}").data.decode()
    settings_html = html.split('class="launch-settings"')[1].split("</dd>")[0]
    assert "Launch delay: 0 seconds" in settings_html and "Audience at launch: 3 recipients" in settings_html
    assert "{" not in settings_html and "launch_delay_seconds" not in html, settings_html
    journal = html.split("<h3>Journal</h3>")[1]
    assert "Launched" in journal and "Draft → Accepted" in journal
    assert "{" not in journal and '"total"' not in journal, "details as words, not JSON"


def test_outgoing_search_sort_and_the_finished_tabs(client, login, make_issue, make_user):
    user, _pw = make_user("editor")
    a = make_issue(1, subject="Spring sale")
    b = make_issue(1, subject="Autumn digest")
    lifecycle.launch(b, user)
    login("support")
    html = client.get("/?q=spring").data.decode()
    assert "Spring sale" in html and "Autumn digest" not in html
    html = client.get("/?status=all&sort=status").data.decode()
    assert "Spring sale" in html and "Autumn digest" in html
    for tab in ("status=finished", "status=sent", "status=cancelled", "status=all"):
        assert f"?{tab}" in html or f"&{tab}" in html or tab.split("=")[1] in html, tab
    assert client.get("/?sort=nonsense").status_code == 400
    assert str(a) in client.get("/?status=draft").data.decode()


def test_demo_logins_note_names_only_a_file_that_exists(tmp_path):
    from mailing.devtools.launcher import demo_logins_note

    assert "none kept" in demo_logins_note(tmp_path) and "demo-logins.txt" not in demo_logins_note(tmp_path)
    (tmp_path / "demo-logins.txt").write_text("a\tb\tc\n")
    assert demo_logins_note(tmp_path) == f"Demo logins: {tmp_path / 'demo-logins.txt'}"


def test_an_interrupted_issue_keeps_the_error_that_interrupted_it(ctx, make_issue, make_user):
    """A second runner still flushing its successes after the interrupt must not put "250 Ok"
    back as the issue's last server response; an interrupt without a reply clears the last
    success rather than showing it as the cause."""
    from mailing.sending.transport import Reply
    from mailing.store import deliveries

    from .support import issue_row

    user, _pw = make_user("editor")
    issue_id = make_issue(4)
    lifecycle.launch(issue_id, user)
    claimed = deliveries.claim(issue_id, "runner-b", 2, 30)
    db.session.commit()
    lifecycle.interrupt(issue_id, "relay unreachable", "421 4.3.2 Service shutting down")
    db.session.commit()
    deliveries.record(issue_id, "runner-b", [deliveries.Result(c.id, "sent", Reply(250, "2.0.0", "Ok: queued"))
                                             for c in claimed])
    db.session.commit()
    row = issue_row(issue_id)
    assert row.sent_count == 2, "the letters themselves are counted"
    assert row.last_reply == "421 4.3.2 Service shutting down"

    other = make_issue(2)
    lifecycle.launch(other, user)
    db.session.execute(sa.text("UPDATE issues SET last_reply = '250 2.0.0 Ok' WHERE id = :i"), {"i": other})
    db.session.commit()
    lifecycle.interrupt(other, "started too late")
    db.session.commit()
    assert issue_row(other).last_reply is None, "no success shown as the cause"
