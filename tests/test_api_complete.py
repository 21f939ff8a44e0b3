"""The API does what the pages do: drafts from creation to launch, contacts and lists,
imports, deliveries and the journal, with the pages' role rules, and cursor paging."""

import email
import io
from email.policy import default as default_policy

import pytest
import sqlalchemy as sa

from mailing.extensions import db
from mailing.models import Contact, Issue, JournalEvent, Sender

from .support import issue_row, wait_for, wait_status

ROLES = ("admin", "editor", "moderator", "support")


def _concrete(rule: str) -> str:
    """A route with every id an id nothing has."""
    import re

    return re.sub(r"<int:\w+>", "2000000000", rule)


def test_every_operation_checks_the_role_and_answers_json(app, ctx, api_client):
    """Each role, on every operation: refused with 403 exactly when the pages refuse it,
    else answered (404 for the unknown ids, 400 for the empty body) and never a 5xx."""
    clients = {role: api_client(role) for role in ROLES}
    checked = 0
    for rule in app.url_map.iter_rules():
        if not rule.endpoint.startswith("api.") or rule.endpoint == "api.openapi":
            continue
        allowed = app.view_functions[rule.endpoint].allowed_roles
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            for role, api in clients.items():
                if "imports" in rule.rule and method == "POST":
                    body = {"data": {"file": (io.BytesIO(b"email\n"), "a.csv")}, "content_type": "multipart/form-data"}
                else:
                    body = {"json": {}} if method in ("POST", "PATCH") else {}
                r = api.client.open(_concrete(rule.rule), method=method, headers=api.headers, **body)
                assert r.is_json and r.status_code < 500, (method, rule.rule, role, r.status_code)
                if role in allowed:
                    # An unknown id is a 404, unless the empty body is refused first (naming a field).
                    expected = (400, 404) if "<int:" in rule.rule else (200, 201, 400)
                    assert r.status_code in expected, (method, rule.rule, role, r.status_code, r.json)
                    if r.status_code == 400:
                        assert r.json["error"] not in ("forbidden", "unauthorized"), r.json
                else:
                    assert r.status_code == 403 and r.json["error"] == "forbidden", (method, rule.rule, role)
                checked += 1
    assert checked > 250


@pytest.fixture
def sender(ctx):
    s = Sender(name="Outbox News", email="news@outbox.test")
    db.session.add(s)
    db.session.commit()
    return s.id


def test_a_draft_made_changed_proved_and_sent_through_the_api(ctx, api_client, smtp, workers, sender):
    api, reader = api_client("editor"), api_client("support")
    lst = api.post("/lists", json={"name": "Readers"}).json
    assert api.post("/lists", json={"name": "Readers"}).status_code == 409
    for i, (name, city) in enumerate((("Anna", "Riga"), ("Boris", "Tartu"), ("Vera", "Pärnu"))):
        r = api.post("/contacts", json={"email": f"Reader{i}@Example.org", "name": name, "fields": {"city": city},
                                        "lists": [lst["id"]]})
        assert r.status_code == 201 and r.json["lists"] == [lst["id"]], r.json
    draft = {"subject": "News for {{ name }}", "sender_id": sender, "list_id": lst["id"],
             "body_html": '<p>Hello {{ name }} in {{ city }}</p><a href="{{ unsubscribe_url }}">u</a>'}
    # What the editor's form refuses, the API refuses, naming the field; nothing is made.
    for bad, field in (({**draft, "body_html": "<p>{{ nmae }}</p>"}, "body_html"),
                       ({**draft, "sender_id": 999999}, "sender_id"),
                       ({**draft, "spread": "portions"}, "portion_size"),
                       ({**draft, "colour": "red"}, "colour"),
                       ({**draft, "list_id": "1"}, "list_id")):
        r = api.post("/issues", json=bad)
        assert r.status_code == 400 and r.json["error"] == field, (field, r.json)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Issue)) == 0
    assert reader.post("/issues", json=draft).status_code == 403
    made = api.post("/issues", json=draft)
    assert made.status_code == 201 and made.json["status"] == "draft", made.json
    issue_id = made.json["id"]
    changed = api.patch(f"/issues/{issue_id}", json={"subject": "{{ city }} news for {{ name }}"})
    assert changed.status_code == 200 and changed.json["body_html"] == draft["body_html"]
    assert api.patch(f"/issues/{issue_id}", json={"subject": ""}).json["error"] == "subject"

    proof = reader.get(f"/issues/{issue_id}/preview?as=reader1@example.org").json
    assert proof["subject"] == "Tartu news for Boris" and "Hello Boris in Tartu" in proof["html"]
    tested = api.post(f"/issues/{issue_id}/test", json={"email": "proof@example.net", "contact": "reader2@example.org"})
    assert tested.status_code == 200 and tested.json["ok"], tested.json
    rcpt, raw, _t = smtp.handler.letters[-1]
    assert rcpt == "proof@example.net"
    assert email.message_from_bytes(raw, policy=default_policy)["Subject"] == "Pärnu news for Vera"
    assert api.post(f"/issues/{issue_id}/test", json={"email": "not an address"}).json["error"] == "email"

    workers.start(1, SEND_JOBS="1")
    assert api.post(f"/issues/{issue_id}/launch", json={"mode": "at", "send_at": 5}).json["error"] == "send_at"
    launched = api.post(f"/issues/{issue_id}/launch", json={"mode": "now"})
    assert launched.status_code == 202
    wait_status(issue_id, "sent", 60)
    locked = api.patch(f"/issues/{issue_id}", json={"subject": "late"})
    assert locked.status_code == 409 and locked.json["error"] == "locked"
    assert issue_row(issue_id).subject == "{{ city }} news for {{ name }}"

    first = reader.get(f"/issues/{issue_id}/deliveries?limit=2").json
    rest = reader.get(f"/issues/{issue_id}/deliveries?limit=2&cursor={first['next_cursor']}").json
    assert rest["next_cursor"] is None
    seen = [d["email"] for d in first["deliveries"] + rest["deliveries"]]
    assert sorted(seen) == ["Reader0@example.org", "Reader1@example.org", "Reader2@example.org"]
    assert all(d["state"] == "sent" and d["reply"].startswith("250") and d["message_id"]
               for d in first["deliveries"] + rest["deliveries"])
    assert reader.get(f"/issues/{issue_id}/deliveries?state=bounced").json["deliveries"] == []
    assert reader.get(f"/issues/{issue_id}/deliveries?state=gone").json["error"] == "state"
    events = [e["event"] for e in reader.get(f"/issues/{issue_id}/journal?limit=200").json["events"]]
    assert {"created", "edited", "test_letter"} <= set(events) and events == sorted(events, key=events.index)
    everywhere = reader.get(f"/journal?issue={issue_id}&event=test_letter").json["events"]
    assert [e["details"]["to"] for e in everywhere] == ["proof@example.net"]


def test_contacts_upsert_by_address_and_carry_fields_lists_stoplists_and_their_timeline(ctx, api_client, make_issue):
    api, reader = api_client("editor"), api_client("support")
    made = api.post("/contacts", json={"email": "Olga@Example.org", "name": "Olga", "phone": "+371 2000 0000",
                                       "fields": {"city": "Riga"}})
    assert made.status_code == 201, made.json
    again = api.post("/contacts", json={"email": "olga@EXAMPLE.org", "fields": {"plan": "gold"}})
    assert again.status_code == 200 and again.json["id"] == made.json["id"], "the same person, updated"
    assert again.json["email"] == "Olga@example.org", "the address stays as first given"
    assert again.json["fields"] == {"city": "Riga", "plan": "gold"}, "fields given are set, the rest kept"
    cid = made.json["id"]
    found = reader.get("/contacts?email=OLGA@example.org").json["contacts"]
    assert [c["id"] for c in found] == [cid]
    assert reader.get("/contacts?q=olg").json["contacts"][0]["id"] == cid
    assert api.patch(f"/contacts/{cid}", json={"fields": {"plan": None, "city": "Jūrmala"}}).json["fields"] == \
        {"city": "Jūrmala"}
    for body, field, status in (({"phone": "not a phone"}, "phone", 400), ({"email": "@@"}, "email", 400),
                                ({"fields": {"Name": "x"}}, "fields.Name", 400), ({"fields": {"x": 1}}, "fields", 400)):
        r = api.patch(f"/contacts/{cid}", json=body)
        assert r.status_code == status and r.json["error"] == field, (body, r.json)
    other = api.post("/contacts", json={"email": "ivan@example.org"}).json
    clash = api.patch(f"/contacts/{other['id']}", json={"email": "OLGA@example.org"})
    assert clash.status_code == 409 and clash.json["error"] == "email"
    assert reader.patch(f"/contacts/{cid}", json={"name": "x"}).status_code == 403

    stop = api.post("/stoplists", json={"name": "Partners"}).json
    stops = api.post(f"/contacts/{cid}/stoplists", json={"list_id": stop["id"]}).json["stoplists"]
    assert {s["value"] for s in stops} == {"olga@example.org", "+37120000000"}
    assert reader.get(f"/contacts/{cid}/stoplists").json["stoplists"] == stops
    timeline = reader.get(f"/contacts/{cid}/timeline").json
    assert timeline["deliveries"] == [] and len(timeline["stoplists"]) == 2
    assert api.delete(f"/contacts/{cid}/stoplists/{stops[0]['entry_id']}").status_code == 204
    assert len(reader.get(f"/contacts/{cid}/stoplists").json["stoplists"]) == 1
    assert api.delete(f"/contacts/{cid}").status_code == 204
    assert reader.get(f"/contacts/{cid}").status_code == 404
    assert reader.get("/contacts?email=olga@example.org").json["contacts"] == []


def test_lists_members_and_a_csv_import_with_its_per_line_report(ctx, api_client, workers):
    api, reader = api_client("editor"), api_client("moderator")
    lst = api.post("/lists", json={"name": "Imported"}).json
    added = api.post(f"/lists/{lst['id']}/members", json={"emails": ["a@example.org", "broken", "B@example.org"]}).json
    assert added["added"] == 2 and added["new"] == 2 and [r["line"] for r in added["rejected"]] == [2]
    members = reader.get(f"/lists/{lst['id']}/members").json["contacts"]
    assert {m["email"] for m in members} == {"a@example.org", "B@example.org"}
    removed = api.post(f"/lists/{lst['id']}/members/remove", json={"contact_ids": [members[0]["id"]]}).json
    assert removed == {"removed": 1} and reader.get(f"/lists/{lst['id']}").json["size"] == 1

    workers.start(1)
    csv = "email,name,city\nc@example.org,Carl,Oslo\nnot-an-address,X,Y\nd@example.org,Dana,Bergen\n"
    started = api.post(f"/lists/{lst['id']}/imports",
                       data={"file": (io.BytesIO(csv.encode()), "people.csv")}, content_type="multipart/form-data")
    assert started.status_code == 202 and started.json["state"] == "queued", started.json
    assert api.post(f"/lists/{lst['id']}/imports", json={"file": "x"}).status_code == 415
    done = wait_for(lambda: (r := reader.get(f"/imports/{started.json['id']}").json)["state"] == "done" and r,
                    60, 0.2, "the import")
    assert done["imported"] == 2 and done["percent"] == 100 and done["rejected_count"] == 1
    assert done["rejected"][0]["line"] == 3 and "not-an-address" in done["rejected"][0]["text"]
    assert reader.get(f"/lists/{lst['id']}").json["size"] == 3
    city = db.session.scalar(sa.select(Contact.attributes).where(Contact.email == "d@example.org"))
    assert city == {"city": "Bergen"}

    renamed = api.patch(f"/lists/{lst['id']}", json={"name": "Northern readers"})
    assert renamed.status_code == 200 and renamed.json["name"] == "Northern readers"
    assert api.delete(f"/lists/{lst['id']}").status_code == 204
    assert reader.get(f"/lists/{lst['id']}").status_code == 404


def test_cursor_pages_give_every_row_once_newest_first(ctx, api_client, make_issue):
    ids = [make_issue(0) for _ in range(7)]
    api = api_client("support")
    seen, cursor, pages = [], "", 0
    while cursor is not None:
        page = api.get(f"/issues?status=all&limit=3{'&cursor=' + cursor if cursor else ''}").json
        seen += [i["id"] for i in page["issues"]]
        cursor, pages = page["next_cursor"], pages + 1
    assert seen == sorted(ids, reverse=True) and pages == 3
    assert api.get("/issues?cursor=aWQ6LTE").json["error"] == "cursor", "a cursor we did not make"


def test_bodies_that_do_not_fit_are_refused_naming_the_field_and_change_nothing(ctx, api_client, make_issue):
    api = api_client("editor")
    before = db.session.scalar(sa.select(sa.func.count()).select_from(JournalEvent))
    for send, field, status in (
            ({"json": [1]}, "body", 400),
            ({"data": "{nope", "content_type": "application/json"}, "body", 400),
            ({"data": "name=x", "content_type": "application/x-www-form-urlencoded"}, "content_type", 415),
            ({"json": {"name": ""}}, "name", 400),
            ({"json": {"name": "ok", "extra": 1}}, "extra", 400),
            ({"json": {"name": 5}}, "name", 400)):
        r = api.post("/lists", **send)
        assert r.status_code == status and r.json["error"] == field and r.json["message"], (send, r.json)
    assert api.get("/lists").json["lists"] == []
    issue_id = make_issue(1)
    assert api.post(f"/issues/{issue_id}/steps", json={"delay_seconds": "soon"}).json["error"] == "delay_seconds"
    assert api.post(f"/issues/{issue_id}/resume").status_code == 409
    assert db.session.scalar(sa.select(sa.func.count()).select_from(JournalEvent)) == before


def test_sections_are_renamed_and_deleted_only_when_empty(ctx, api_client):
    api, reader = api_client("editor"), api_client("support")
    news = api.post("/sections", json={"name": "News"}).json
    other = api.post("/sections", json={"name": "Events"}).json
    assert api.patch(f"/sections/{other['id']}", json={"name": "news"}).json["error"] == "name", "taken, any case"
    assert api.patch(f"/sections/{news['id']}", json={"name": "Announcements"}).json["name"] == "Announcements"
    assert reader.patch(f"/sections/{news['id']}", json={"name": "x"}).status_code == 403
    api.post("/materials", json={"section_id": news["id"], "title": "Launch day"})
    kept = api.delete(f"/sections/{news['id']}")
    assert kept.status_code == 409 and kept.json["error"] == "name"
    assert api.delete(f"/sections/{other['id']}").status_code == 204
    assert [x["name"] for x in reader.get("/sections").json["sections"]] == ["Announcements"]
