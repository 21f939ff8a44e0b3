"""One address is one person: case and IDN variants share a contact, a stop-list entry,
an unsubscribe and a lookup; internationalised addresses reach the relay correctly."""

import email
import email.policy
from pathlib import Path

import sqlalchemy as sa
from aiosmtpd.controller import Controller

from mailing import contacts, lifecycle, stoplists
from mailing.addresses import email_key, wire_address
from mailing.extensions import db
from mailing.models import Contact, ContactImport, ContactList, Issue, StopList, list_members
from mailing.sending.loop import NO_SMTPUTF8
from mailing.store.stoplists import suppressed_among

from .support import csrf_from, deliveries_of, wait_status

VARIANTS = ["User0002@Example.COM", "user0002@example.com", "USER0002@EXAMPLE.com"]
IDN = ["ivan@пример.рф", "IVAN@ПРИМЕР.РФ", "ivan@xn--e1afmkfd.xn--p1ai"]


def _import(tmp_path: Path, text: str, list_id: int) -> ContactImport:
    path = tmp_path / "people.csv"
    path.write_text(text, encoding="utf-8")
    imp = ContactImport(list_id=list_id, path=str(path), filename="people.csv", size_bytes=path.stat().st_size,
                        rejected=[])
    db.session.add(imp)
    db.session.commit()
    return contacts.run_import(imp.id, "RU", processes=1)


def test_case_and_idn_variants_import_as_one_contact(ctx, tmp_path):
    lst = ContactList(name="Variants")
    db.session.add(lst)
    db.session.commit()
    rows = "email,name,city\n" + "".join(f"{e},Name {i},Town{i}\n" for i, e in enumerate(VARIANTS + IDN))
    imp = _import(tmp_path, rows, lst.id)
    assert imp.state == "done" and imp.rejected_count == 0
    people = db.session.execute(sa.select(Contact.email, Contact.email_key).order_by(Contact.id)).all()
    assert people == [("User0002@example.com", "user0002@example.com"),
                      ("ivan@пример.рф", "ivan@xn--e1afmkfd.xn--p1ai")], "the first address as given is kept"
    assert imp.imported + imp.updated + imp.skipped == 6 and imp.imported == 2

    # A second import in another case updates the same person, never adds one.
    imp2 = _import(tmp_path, "email,name\nUSER0002@example.COM,Renamed\n", lst.id)
    assert (imp2.imported, imp2.updated) == (0, 1)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Contact)) == 2
    assert db.session.scalar(sa.select(Contact.name).where(Contact.email_key == "user0002@example.com")) == "Renamed"
    assert db.session.scalar(sa.select(sa.func.count()).select_from(list_members)) == 2


def test_contact_form_and_list_paste_refuse_a_variant(ctx, client, login):
    login("editor")
    db.session.add(Contact(email="Ann@Example.org", name="Ann", attributes={}))
    lst = ContactList(name="Pasted")
    db.session.add(lst)
    db.session.commit()
    page = client.get("/contacts")
    r = client.post("/contacts", data={"email": "ANN@example.ORG", "name": "Twin", "csrf_token": csrf_from(page.data)})
    assert r.status_code == 400 and "Another contact has this address" in r.data.decode()
    r = client.post(f"/lists/{lst.id}/add", data={"emails": "ann@EXAMPLE.org\nANN@example.org\n",
                                                   "csrf_token": csrf_from(page.data)})
    assert r.status_code == 302
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Contact)) == 1
    assert db.session.scalar(sa.select(sa.func.count()).select_from(list_members)) == 1
    # Search finds the person by any variant.
    assert "Ann@Example.org" in client.get("/contacts?q=ANN@EXAMPLE.ORG").data.decode()


def test_a_stop_entry_in_any_case_stops_every_variant_at_launch_and_at_send_time(
        ctx, client, login, make_issue, smtp, workers):
    user = login("editor")
    emails = ["User0011@Example.com", "Ivan@Пример.РФ", "keep@example.org"]
    issue_id = make_issue(3, emails=emails, names=["A"])
    blocked = db.session.scalar(sa.select(StopList).where(StopList.code == "blocked"))
    stoplists.add_pasted(blocked, "USER0011@example.COM", actor=user, source="ui", region="RU")
    card_id = db.session.scalar(sa.select(Contact.id).where(Contact.email == "User0011@Example.com"))
    assert "Blocked manually" in client.get(f"/contacts/{card_id}").data.decode(), "the card names the list"
    preview = client.get(f"/issues/{issue_id}").data.decode()
    assert "2 of 3" in preview, "who will get it counts the variant as stopped"

    lifecycle.launch(issue_id, user)  # materialised now; the runners start when a worker is up
    stoplists.add_pasted(blocked, "ivan@xn--e1afmkfd.xn--p1ai", actor=user, source="ui", region="RU")
    workers.start(1)
    wait_status(issue_id, "sent", 60)
    states = {d.email: (d.state, d.reason) for d in deliveries_of(issue_id)}
    assert states["User0011@Example.com"] == ("suppressed", "Blocked manually")
    assert states["Ivan@Пример.РФ"] == ("suppressed", "Blocked manually"), "added after launch, stopped at send"
    assert states["keep@example.org"][0] == "sent"
    assert set(smtp.handler.counts()) == {"keep@example.org"}


def test_lookup_and_unsubscribe_cover_every_variant(ctx, client, login, make_issue, smtp, workers):
    user = login("support")
    issue_id = make_issue(1, emails=["User0020@Autumn.example.com"], names=["Autumn"])
    workers.start(1)
    lifecycle.launch(issue_id, user)
    wait_status(issue_id, "sent", 60)
    page = client.get("/lookup?q=user0020@AUTUMN.EXAMPLE.COM").data.decode()
    assert "delivered to the relay" in page and "Monthly news" in page

    # Unsubscribing through the letter's link (one variant) stops the person in any case.
    delivery = deliveries_of(issue_id)[0]
    from mailing.unsubscribe import make_token

    r = client.post(f"/u/{make_token(b'test-secret-key-not-for-production', delivery.id)}",
                    data={"confirm": "yes"})
    assert r.status_code == 200
    assert suppressed_among([email_key("USER0020@autumn.example.com")], None) == \
        {"user0020@autumn.example.com": "Unsubscribed from all"}
    assert "Unsubscribed from all" in client.get("/lookup?q=User0020@Autumn.Example.Com").data.decode()


def _restart(smtp, **kwargs) -> None:
    smtp.stop()
    smtp.controller = Controller(smtp.handler, hostname="127.0.0.1", port=smtp.port, decode_data=False,
                                 ready_timeout=10, **kwargs)
    smtp.controller.start()


def test_idn_domain_goes_as_a_label_and_utf8_local_part_needs_smtputf8(
        ctx, client, login, make_issue, smtp, workers):
    user = login("editor")
    emails = ["ivan@пример.рф", "иван@пример.рф"]
    issue_id = make_issue(2, emails=emails, names=["Иван"])
    _restart(smtp, enable_SMTPUTF8=False)  # a relay that does not offer it
    assert "1 recipients have a non-Latin local part" in client.get(f"/issues/{issue_id}").data.decode(), \
        "who will get it warns before launch"
    workers.start(1)
    lifecycle.launch(issue_id, user)
    wait_status(issue_id, "sent", 60)
    rows = {d.email: d for d in deliveries_of(issue_id)}
    assert rows["ivan@пример.рф"].state == "sent"
    assert rows["иван@пример.рф"].state == "failed" and rows["иван@пример.рф"].reason == NO_SMTPUTF8
    assert rows["иван@пример.рф"].reply_code is None, "no relay reply is invented"
    (rcpt, raw, _t), = smtp.handler.letters
    assert rcpt == "ivan@xn--e1afmkfd.xn--p1ai"
    assert raw.isascii()
    assert email.message_from_bytes(raw, policy=email.policy.default)["To"].addresses[0].domain == \
        "xn--e1afmkfd.xn--p1ai"
    page = client.get("/lookup?q=ИВАН@пример.рф").data.decode()
    assert "does not accept internationalised addresses" in page

    # A relay that offers SMTPUTF8 takes the Unicode local part (RFC 6531).
    _restart(smtp, enable_SMTPUTF8=True)
    first = db.session.get(Issue, issue_id)
    again = Issue(subject="Again", sender_id=first.sender_id, list_id=first.list_id, body_html=first.body_html)
    db.session.add(again)
    db.session.commit()
    other = again.id
    lifecycle.launch(other, user)
    wait_status(other, "sent", 60)
    assert {d.email: d.state for d in deliveries_of(other)} == {"ivan@пример.рф": "sent", "иван@пример.рф": "sent"}
    rcpt, raw, _t = next(x for x in smtp.handler.letters[1:] if not x[0].isascii())
    assert rcpt == wire_address("иван@пример.рф") == "иван@xn--e1afmkfd.xn--p1ai"
    msg = email.message_from_string(raw.decode("utf-8"), policy=email.policy.SMTPUTF8)  # RFC 6532 headers
    assert msg["To"].addresses[0].username == "иван"
