"""Stop-lists: normalisation, the paste report, quota, system lists, enforcement, unsubscribe."""

from datetime import datetime

import pytest
import sqlalchemy as sa

from mailing import lifecycle, stoplists
from mailing.extensions import db
from mailing.models import Contact, StopEntry, StopEvent, StopList

from .support import csrf_from, deliveries_of, wait_for, wait_status


def system(code):
    return db.session.scalar(sa.select(StopList).where(StopList.code == code))


@pytest.mark.parametrize(("text", "kind", "value"), [
    ("Ann@Example.ORG", "email", "ann@example.org"),  # entries hold the address's match key
    ("Иван@Пример.РФ", "email", "иван@xn--e1afmkfd.xn--p1ai"),
    ("  bob@example.org ", "email", "bob@example.org"),
    ("+7 912 345-67-89", "phone", "+79123456789"),
    ("8 (912) 345-67-89", "phone", "+79123456789"),
    ("+44 20 7946 0958", "phone", "+442079460958"),
])
def test_items_are_normalised(text, kind, value):
    assert stoplists.parse_item(text.strip(), "RU") == (kind, value)


@pytest.mark.parametrize("text", ["rubbish", "ann@", "@example.org", "a b@example.org", "12", "+7 000",
                                  "x" * 300 + "@example.org", "ann@exa mple.org"])
def test_rubbish_is_rejected_with_a_reason(text):
    with pytest.raises(ValueError) as err:
        stoplists.parse_item(text, "RU")
    assert str(err.value)


def test_paste_with_mixed_separators_duplicates_and_long_lines():
    text = "a@example.org, b@example.org; +79123456789\na@EXAMPLE.org\n\nnope\n" + "y" * 5000
    items, rejected = stoplists.parse_paste(text, "RU")
    assert items == [("email", "a@example.org"), ("email", "b@example.org"), ("phone", "+79123456789")]
    reasons = {(r.line, r.reason.split(" (")[0]) for r in rejected}
    assert (2, "repeated") in reasons
    assert any(r.line == 4 for r in rejected) and any(r.line == 5 and "longer" in r.reason for r in rejected)


def test_page_adds_with_a_per_line_report_and_needs_confirmation(client, login, ctx):
    login("editor")
    blocked = system("blocked")
    page = client.get(f"/stoplists/{blocked.id}")
    token = csrf_from(page.data)
    r = client.post(f"/stoplists/{blocked.id}/add", data={"items": "a@example.org", "csrf_token": token})
    assert r.status_code == 400 and b"Tick the box" in r.data
    assert db.session.scalar(sa.select(sa.func.count()).select_from(StopEntry)) == 0
    import io

    upload = client.post(f"/stoplists/{blocked.id}/add", data={
        "upload": (io.BytesIO(b"email,name\nz@example.org,Zed\nbroken,Nobody\n"), "old.csv"), "confirm": "y",
        "csrf_token": token}, content_type="multipart/form-data", follow_redirects=True).data.decode()
    assert "Added: 1" in upload and "rejected: 2" in upload, "the header and the broken line"
    db.session.execute(sa.delete(StopEntry))
    db.session.execute(sa.delete(StopEvent))
    db.session.commit()
    r = client.post(f"/stoplists/{blocked.id}/add", data={
        "items": "a@example.org\nbad line\nb@example.org; a@example.org\n+7 912 345 67 89",
        "confirm": "y", "csrf_token": token})
    assert r.status_code == 303, "Post/Redirect/Get: a refresh shows the report, it does not paste again"
    r = client.get(r.headers["Location"])
    html = r.data.decode()
    assert r.status_code == 200 and "Added: 3" in html and "rejected: 2" in html
    assert "bad line" in html and "repeated" in html
    again = client.post(f"/stoplists/{blocked.id}/add", data={"items": "a@example.org", "confirm": "y",
                                                               "csrf_token": token}, follow_redirects=True)
    assert "already there: 1" in again.data.decode()
    events = db.session.scalars(sa.select(StopEvent).where(StopEvent.list_id == blocked.id)).all()
    assert len(events) == 3 and {e.source for e in events} == {"ui"} and events[0].actor_label.startswith("editor")
    listing = client.get(f"/stoplists/{blocked.id}").data.decode()
    assert "a@example.org" in listing and "not-in-base" in listing, "entries outside the base are marked"


def test_unsubscribed_removal_quota(ctx, make_user):
    user, _ = make_user("editor")
    db.session.execute(sa.insert(Contact), [{"email": f"c{i}@example.org", "name": "", "attributes": {}}
                                            for i in range(3000)])  # quota: 3 a month
    db.session.commit()
    unsub = system("unsubscribed")
    stoplists.add_pasted(unsub, "\n".join(f"u{i}@example.org" for i in range(10)), actor=user, source="import",
                         region="RU")
    ids = db.session.scalars(sa.select(StopEntry.id).where(StopEntry.list_id == unsub.id).order_by(StopEntry.id)).all()
    november = datetime(2026, 11, 20)
    assert stoplists.remove_entries(unsub, ids[:2], actor=user, source="ui", now=november) == 2
    with pytest.raises(stoplists.QuotaExceeded) as err:
        stoplists.remove_entries(unsub, ids[2:4], actor=user, source="ui", now=november)
    assert err.value.allowed == 1
    assert db.session.scalar(sa.select(sa.func.count()).select_from(StopEntry).where(
        StopEntry.list_id == unsub.id)) == 8, "refused whole"
    assert stoplists.remove_entries(unsub, ids[2:3], actor=user, source="ui", now=november) == 1  # exactly at the limit
    december = datetime(2026, 12, 1, 0, 0, 1)
    assert stoplists.removal_quota(december) == (3, 0), "the month boundary resets it"


def test_system_lists_cannot_be_renamed_deleted_or_cleared_except_blocked(client, login, ctx, api_client):
    login("editor")
    unsub = system("unsubscribed")
    token = csrf_from(client.get(f"/stoplists/{unsub.id}").data)
    assert client.post(f"/stoplists/{unsub.id}/rename", data={"name": "x", "csrf_token": token}).status_code == 409
    assert client.post(f"/stoplists/{unsub.id}/delete", data={"csrf_token": token}).status_code == 409
    assert client.post(f"/stoplists/{unsub.id}/clear", data={"confirm": "yes", "csrf_token": token}).status_code == 409
    assert system("unsubscribed").name == "Unsubscribed from all"
    api = api_client("editor")
    assert api.post(f"/stoplists/{unsub.id}/clear").status_code == 409
    headers = api.headers
    assert client.patch(f"/api/v1/stoplists/{unsub.id}", json={"name": "x"}, headers=headers).status_code == 409
    assert client.delete(f"/api/v1/stoplists/{unsub.id}", headers=headers).status_code == 409
    own = client.post("/api/v1/stoplists", json={"name": "Partners"}, headers=headers).json
    assert client.patch(f"/api/v1/stoplists/{own['id']}", json={"name": "Old partners"},
                        headers=headers).json["name"] == "Old partners"
    assert client.delete(f"/api/v1/stoplists/{own['id']}", headers=headers).status_code == 204
    # Own lists can be created, renamed and deleted.
    r = client.post("/stoplists/", data={"name": "Old customers", "csrf_token": token})
    own = db.session.scalar(sa.select(StopList).where(StopList.name == "Old customers"))
    assert r.status_code == 302 and own is not None
    client.post(f"/stoplists/{own.id}/rename", data={"name": "Former customers", "csrf_token": token})
    assert db.session.get(StopList, own.id, populate_existing=True).name == "Former customers"
    assert client.post(f"/stoplists/{own.id}/delete", data={"csrf_token": token}).status_code == 302


def test_clear_blocked_and_api(ctx, api_client):
    api = api_client("editor")
    blocked = system("blocked")
    r = api.post(f"/stoplists/{blocked.id}/entries", json={"entries": ["a@example.org", "junk", "+79123456789"]})
    assert r.status_code == 200 and r.json["added"] == 2 and r.json["rejected"][0]["text"] == "junk"
    assert api.post(f"/stoplists/{blocked.id}/entries", json={"entries": "a@example.org"}).status_code == 400
    listing = api.get(f"/stoplists/{blocked.id}/entries?q=example").json
    assert [e["value"] for e in listing["entries"]] == ["a@example.org"]
    lists = api.get("/stoplists").json["stoplists"]
    assert {s["code"] for s in lists} >= {"unsubscribed", "blocked", "sender_unsubscribed"}
    assert api.post(f"/stoplists/{blocked.id}/clear").json["removed"] == 2
    assert api.get("/stoplists/999/entries").status_code == 404
    support = api_client("support")
    assert support.post(f"/stoplists/{blocked.id}/entries", json={"entries": ["x@example.org"]}).status_code == 403


def test_blocked_mid_send_gets_nothing(ctx, make_issue, smtp, workers, make_user):
    emails = [f"r{i:03d}@example.org" for i in range(300)]
    issue_id = make_issue(300, emails=emails)
    smtp.handler.delay = 0.01
    user, _ = make_user("editor")
    workers.start(1)
    lifecycle.launch(issue_id, user)
    wait_for(lambda: sum(smtp.handler.counts().values()) >= 20, 60, what="sending to begin")
    late = "r299@example.org"
    report = stoplists.add_pasted(system("blocked"), late, actor=user, source="ui", region="RU")
    assert report.added == 1
    wait_status(issue_id, "sent", 60)
    assert late not in smtp.handler.counts()
    row = {d.email: d for d in deliveries_of(issue_id)}[late]
    assert (row.state, row.reason) == ("suppressed", "Blocked manually")


def test_launch_excludes_stopped_addresses_by_list(ctx, make_issue, make_user):
    emails = ["a@example.org", "b@example.org", "c@example.org"]
    issue_id = make_issue(3, emails=emails)
    user, _ = make_user("editor")
    stoplists.add_pasted(system("blocked"), "b@example.org", actor=user, source="ui", region="RU")
    lifecycle.launch(issue_id, user)
    rows = {d.email: d for d in deliveries_of(issue_id)}
    assert rows["b@example.org"].state == "suppressed" and rows["b@example.org"].reason == "Blocked manually"
    assert rows["a@example.org"].state == "pending"


def test_who_will_get_it_before_launch(ctx, client, login, make_issue, make_user):
    issue_id = make_issue(3, emails=["a@example.org", "b@example.org", "c@example.org"])
    user, _ = make_user("editor")
    stoplists.add_pasted(system("blocked"), "b@example.org", actor=user, source="ui", region="RU")
    stoplists.add_pasted(system("unsubscribed"), "c@example.org\nb@example.org", actor=user, source="ui", region="RU")
    login("support")
    html = client.get(f"/issues/{issue_id}").data.decode()
    assert "1 of 3" in html and "“Blocked manually”: 1" in html and "“Unsubscribed from all”: 2" in html


@pytest.mark.parametrize("address", ["Ann@Example.ORG", "a.b+c@sub.example.org", "x@EXAMPLE.org", "анна@пример.рф",
                                     "a..b@example.org", ".a@example.org", "a@b", "a@-bad.example",
                                     "a@exa_mple.org", "a@1.2.3.4", "o'brien@example.org", "a" * 65 + "@example.org"])
def test_fast_normalisation_agrees_with_email_validator(address):
    from email_validator import EmailNotValidError, validate_email

    from mailing.addresses import normalise_email

    try:
        expected = validate_email(address, check_deliverability=False).normalized
    except EmailNotValidError:
        with pytest.raises(EmailNotValidError):
            normalise_email(address)
        return
    assert normalise_email(address) == expected
