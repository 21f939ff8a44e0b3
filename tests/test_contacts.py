"""Contacts, lists and CSV import (a real RQ job), and the contact card's stop-lists."""

import io

import sqlalchemy as sa

from mailing.extensions import db
from mailing.models import Contact, ContactImport, ContactList, StopEntry, StopList, list_members

from .support import csrf_from, wait_for


def test_csv_import_updates_instead_of_duplicating_and_reports_lines(ctx, client, login, workers):
    lst = ContactList(name="Imported")
    db.session.add(lst)
    db.session.add(Contact(email="old@example.org", name="Old Name", attributes={}))
    db.session.commit()
    login("editor")
    workers.start(1)
    csv_text = ("email,name,phone,city\n"
                "ann@Example.org,Анна,+7 912 345-67-89,Moscow\n"
                "old@example.org,New Name,,Paris\n"
                "not-an-address,Bad,,\n"
                "ann@example.org,Dup,,\n"
                "bob@example.org,Bob,12,\n")
    token = csrf_from(client.get(f"/lists/{lst.id}").data)
    r = client.post(f"/lists/{lst.id}/import", data={"file": (io.BytesIO(csv_text.encode()), "people.csv"),
                                                      "csrf_token": token}, content_type="multipart/form-data")
    assert r.status_code == 302
    imp_id = int(r.headers["Location"].rsplit("/", 1)[1])

    def done():
        db.session.commit()
        imp = db.session.get(ContactImport, imp_id, populate_existing=True)
        db.session.commit()
        return imp if imp.state == "done" else None

    imp = wait_for(done, 30, what="the import job")
    # Bob's bad phone is reported on its line, and Bob is imported without it.
    assert (imp.imported, imp.updated, imp.skipped, imp.rejected_count) == (2, 1, 1, 1)
    assert [(r[0], r[2].split(":")[0]) for r in imp.rejected] == [(4, "email"), (6, "phone")]
    assert "imported without the phone" in imp.rejected[1][2]
    bob = db.session.scalar(sa.select(Contact).where(Contact.email_key == "bob@example.org"))
    assert (bob.name, bob.phone) == ("Bob", None)
    ann = db.session.scalar(sa.select(Contact).where(Contact.email == "ann@example.org"))
    assert (ann.name, ann.phone, ann.attributes) == ("Анна", "+79123456789", {"city": "Moscow"})
    old = db.session.scalar(sa.select(Contact).where(Contact.email == "old@example.org"))
    assert old.name == "New Name" and db.session.scalar(sa.select(sa.func.count()).select_from(Contact)) == 3
    members = db.session.scalar(sa.select(sa.func.count()).select_from(list_members)
                                .where(list_members.c.list_id == lst.id))
    assert members == 3
    page = client.get(f"/imports/{imp_id}", headers={"HX-Request": "true"}).data.decode()
    assert 'data-state="done"' in page and "hx-trigger" not in page and "not-an-address" in page


def test_contacts_search_keyset_paging_and_card(ctx, client, login):
    db.session.execute(sa.insert(Contact), [{"email": f"p{i:03d}@example.org", "name": f"Person {i}",
                                             "attributes": {}} for i in range(120)])
    db.session.commit()
    login("support")
    first = client.get("/contacts").data.decode()
    assert "p119@example.org" in first and "p069@example.org" not in first and "before=" in first
    before = first.split("before=")[1].split('"')[0]
    second = client.get(f"/contacts?before={before}").data.decode()
    assert "p069@example.org" in second and "p119@example.org" not in second
    assert "p007@example.org" in client.get("/contacts?q=p007").data.decode()
    assert client.post("/contacts", data={"email": "x@example.org"}).status_code in (400, 403)


def test_card_stoplists_and_deleting_a_contact_keeps_entries(ctx, client, login):
    c = Contact(email="card@example.org", name="Card", phone="+79123456789", attributes={})
    db.session.add(c)
    db.session.commit()
    login("editor")
    page = client.get(f"/contacts/{c.id}")
    token = csrf_from(page.data)
    blocked = db.session.scalar(sa.select(StopList).where(StopList.code == "blocked"))
    client.post(f"/contacts/{c.id}/stoplists", data={"list_id": blocked.id, "csrf_token": token})
    card = client.get(f"/contacts/{c.id}").data.decode()
    assert "Blocked manually: card@example.org" in card and "Blocked manually: +79123456789" in card
    entry = db.session.scalar(sa.select(StopEntry).where(StopEntry.value == "+79123456789"))
    client.post(f"/contacts/{c.id}/stoplists/{entry.id}/remove", data={"csrf_token": token})
    assert "Blocked manually: +79123456789" not in client.get(f"/contacts/{c.id}").data.decode()
    bad = client.post(f"/contacts/{c.id}", data={"email": "card@example.org", "phone": "12", "csrf_token": token})
    assert bad.status_code == 400 and b"phone" in bad.data
    assert client.post(f"/contacts/{c.id}/delete", data={"csrf_token": token}).status_code == 302
    assert db.session.get(Contact, c.id) is None
    assert db.session.scalar(sa.select(StopEntry.value).where(StopEntry.value == "card@example.org"))
    listing = client.get(f"/stoplists/{blocked.id}").data.decode()
    assert "not-in-base" in listing, "an entry whose contact is gone is marked"


def test_deleting_a_contact_keeps_its_deliveries_without_the_link(ctx, client, login, make_issue):
    """Deliveries carry no foreign key (launches write them from the list); the use case
    clears the link itself, and the history keeps the address."""
    from mailing import lifecycle
    from mailing.models import Delivery

    user = login("editor")
    issue_id = make_issue(2, emails=["gone@example.org", "stays@example.org"], names=["G"])
    lifecycle.launch(issue_id, user)
    gone = db.session.scalar(sa.select(Contact).where(Contact.email == "gone@example.org"))
    token = csrf_from(client.get(f"/contacts/{gone.id}").data)
    assert client.post(f"/contacts/{gone.id}/delete", data={"csrf_token": token}).status_code == 302
    rows = dict(db.session.execute(sa.select(Delivery.email, Delivery.contact_id)
                                   .where(Delivery.issue_id == issue_id)).all())
    assert rows["gone@example.org"] is None and rows["stays@example.org"] is not None
