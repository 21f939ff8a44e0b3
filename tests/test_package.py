"""The letter package: the balance is never negative and never double-spent, with many
workers and after a crash; an exhausted package interrupts, a top-up and Resume go on."""

import sqlalchemy as sa

from mailing import lifecycle, package, settings
from mailing.extensions import db
from mailing.models import Delivery, JournalEvent, LetterPackage

from .support import csrf_from, deliveries_of, issue_row, journal_of, wait_for, wait_status


def _metered(balance: int) -> None:
    settings.put("package_unlimited", False)
    db.session.commit()
    if balance:
        package.top_up(balance, "test")


def _books() -> tuple[int, int, int]:
    """(balance, recipients in sending, letters spent), read in one statement so that the
    three are one moment's figures even while runners commit."""
    db.session.commit()
    d = Delivery.__table__.c
    row = db.session.execute(sa.select(
        sa.select(LetterPackage.balance).where(LetterPackage.id == 1).scalar_subquery(),
        sa.select(sa.func.count()).where(d.state == "sending").scalar_subquery(),
        sa.select(sa.func.count()).where(d.state.in_(["sent", "bounced"])).scalar_subquery(),
    )).one()
    db.session.commit()
    return tuple(row)


def test_four_workers_stop_at_exactly_the_balance_and_resume_after_top_up(ctx, make_issue, smtp, workers,
                                                                         make_user):
    _metered(1000)
    issue_id = make_issue(2500)
    user, _ = make_user("editor")
    admin, _ = make_user("admin")
    workers.start(4, SEND_JOBS="4")
    lifecycle.launch(issue_id, user)
    wait_status(issue_id, "interrupted", 120)
    row = issue_row(issue_id)
    assert row.status_reason == package.EXHAUSTED and row.interrupt_kind == "package"
    assert row.sent_count == 1000 and len(smtp.handler.counts()) == 1000
    assert set(smtp.handler.counts().values()) == {1}
    assert _books() == (0, 0, 1000)
    assert package.top_up(2000, admin) == 2000
    lifecycle.resume(issue_id, user)
    wait_status(issue_id, "sent", 120)
    assert issue_row(issue_id).sent_count == 2500 and len(smtp.handler.counts()) == 2500
    assert _books() == (500, 0, 2500)
    top_ups = db.session.scalars(sa.select(JournalEvent).where(JournalEvent.event == "package_topped_up")).all()
    assert [(e.details["amount"], e.actor_label) for e in top_ups][-1] == (2000, admin.email)
    assert any(e.event == "interrupt" and e.reason == package.EXHAUSTED for e in journal_of(issue_id))


def test_a_killed_worker_leaves_the_books_balanced(ctx, make_issue, smtp, workers, make_user):
    _metered(3000)
    issue_id = make_issue(2500)
    smtp.handler.delay = 0.005
    user, _ = make_user("editor")
    victim, _other = workers.start(2, SEND_JOBS="2")
    lifecycle.launch(issue_id, user)
    wait_for(lambda: sum(smtp.handler.counts().values()) >= 400, 60, what="sending to begin")
    workers.kill(victim)
    balance, in_flight, spent = _books()
    assert balance + in_flight + spent == 3000, "units held by the dead runner's rows are not lost"
    wait_status(issue_id, "sent", 180)
    assert len(smtp.handler.counts()) == 2500
    assert _books() == (500, 0, 2500), "a resent letter is paid once, the crash's units came back"


def test_launch_needs_a_balance_and_warns_when_it_is_short(ctx, client, login, make_issue):
    _metered(0)
    issue_id = make_issue(30)
    user = login("editor")
    try:
        lifecycle.launch(issue_id, user)
        raise AssertionError("launch with an empty package")
    except lifecycle.LaunchError as exc:
        assert exc.field == "package"
    db.session.rollback()
    assert issue_row(issue_id).status == "draft"
    page = client.get(f"/issues/{issue_id}")
    assert "0 letters left" in page.text
    r = client.post(f"/issues/{issue_id}/launch", data={"mode": "now", "csrf_token": csrf_from(page.data)})
    assert r.status_code == 400 and "The letter package is empty" in r.text
    assert issue_row(issue_id).status == "draft" and not deliveries_of(issue_id)
    package.top_up(10, "test")
    page = client.get(f"/issues/{issue_id}")
    assert "package-short" in page.text and "larger than the letters left" in page.text
    r = client.post(f"/issues/{issue_id}/launch", data={"mode": "now", "csrf_token": csrf_from(page.data)})
    assert r.status_code in (200, 302, 303) and issue_row(issue_id).status in ("accepted", "sending", "moderation")


def test_only_admins_top_up_and_bad_amounts_change_nothing(ctx, client, login, api_client):
    _metered(5)
    editor = api_client("editor")
    assert editor.get("/package").json == {"unlimited": False, "balance": 5}
    r = editor.post("/package/top-up", json={"amount": 10})
    assert r.status_code == 403
    admin = api_client("admin")
    for bad in ({"amount": "ten"}, {"amount": 0}, {"amount": -5}, {"amount": True}, {}, {"amount": 10**12}):
        r = admin.post("/package/top-up", json=bad)
        assert r.status_code == 400 and r.json["error"] == "amount", bad
    assert admin.post("/package/top-up", json={"amount": 7}).json == {"unlimited": False, "balance": 12}
    login("admin")
    page = client.get("/admin/package")
    assert page.status_code == 200 and "Balance: 12 letters." in page.text
    r = client.post("/admin/package/top-up", data={"amount": "-3", "csrf_token": csrf_from(page.data)})
    assert r.status_code == 400 and 'class="error"' in r.text
    assert package.balance() == 12
    r = client.post("/admin/package/top-up", data={"amount": "3"})
    assert r.status_code == 400, "no CSRF token, nothing added"
    r = client.post("/admin/package/top-up", data={"amount": "3", "csrf_token": csrf_from(page.data)})
    assert r.status_code == 303 and package.balance() == 15
    r = client.post("/admin/package/mode", data={"unlimited": "y", "csrf_token": csrf_from(page.data)})
    assert r.status_code == 303 and package.balance() is None
    login("editor")
    assert client.get("/admin/package").status_code == 403
