"""Personalisation in every position, placeholder checks, and letters a strict relay accepts."""

import email
import email.policy
import re
from email.header import decode_header, make_header

import pytest
import sqlalchemy as sa

from mailing import lifecycle
from mailing.extensions import db
from mailing.models import Contact, ContactField, Issue
from mailing.sending.letter import (
    Letter,
    LetterError,
    Recipient,
    check_letter,
    parse_custom_headers,
)

from .support import csrf_from, deliveries_of, journal_of, wait_status

KNOWN = ["name", "email", "phone", "unsubscribe_url", "city", "plan"]
PEOPLE = [  # name, email, fields
    ("Ann", "ann@example.org", {"city": "Paris", "plan": "gold", "phone": "+79123456789"}),
    ("Борис Петров", "boris@example.org", {"city": "Москва"}),
    ("", "nobody@example.org", {}),
]


def make(**kw) -> Letter:
    base = dict(issue_id=9, subject='{{ name | default("Friend") }}, news for {{ city | default("you") }}',
                body_html='<p>Hi {{ name|default("reader") }} from {{ city | default("somewhere") }}, plan '
                          '{{ plan }}, phone {{ phone }}</p><a href="{{ unsubscribe_url }}">u</a>',
                from_name="{{ city | default('Outbox') }} desk", from_email="news@example.net", secret=b"k",
                preheader="Only for {{ name | default('you') }}", reply_to="{{ plan | default('help') }}@example.net",
                custom_headers="X-City: {{ city }}\nX-Campaign: spring")
    base.update(kw)
    return Letter(**base)


def parse(raw: bytes):
    return email.message_from_bytes(raw, policy=email.policy.default)


@pytest.mark.parametrize(("name", "address", "fields"), PEOPLE)
def test_every_position_is_personalised_with_defaults(name, address, fields):
    letter = make()
    _mid, raw = letter.build(Recipient(1, 11, address, name, "http://x/u/1.abc", fields))
    msg = parse(raw)
    shown = name or "Friend"
    city = fields.get("city")
    assert str(msg["Subject"]) == f"{shown}, news for {city or 'you'}"
    assert msg["From"].addresses[0].display_name == f"{city or 'Outbox'} desk"
    assert str(msg["Reply-To"]) == f"{fields.get('plan') or 'help'}@example.net"
    assert str(msg["X-City"]) == (city or "")
    assert str(msg["X-Campaign"]) == "spring"
    html = msg.get_body(("html",)).get_content()
    text = msg.get_body(("plain",)).get_content()
    expected = (f"Hi {name or 'reader'} from {city or 'somewhere'}, plan {fields.get('plan', '')}, "
                f"phone {fields.get('phone', '')}")
    assert expected in html and expected in text, "HTML and the generated text part"
    assert f"Only for {name or 'you'}" in html and "display:none" in html
    assert "Only for" not in text, "the preheader is hidden text of the HTML part only"


def test_an_editors_text_part_is_sent_as_written():
    letter = make(body_text="Plain {{ name }} in {{ city | default('?') }}\nBye")
    _mid, raw = letter.build(Recipient(1, 11, "a@example.org", "Ann", "u", {"city": "Oslo"}))
    assert parse(raw).get_body(("plain",)).get_content().replace("\r\n", "\n").startswith("Plain Ann in Oslo\nBye")


def test_unknown_and_malformed_placeholders_are_named_per_field():
    problems = check_letter({"subject": "Hi {{ nmae }}", "body_html": "{{ city }} {{ x y }}",
                             "from_name": "{{ name }}", "reply_to": "not an address",
                             "custom_headers": "From: me"}, ["name", "email"])
    assert set(problems) == {"subject", "body_html", "reply_to", "custom_headers"}
    assert "unknown field “nmae”" in problems["subject"][0]
    assert any("unknown field “city”" in p for p in problems["body_html"])
    assert any("is not a placeholder" in p for p in problems["body_html"])
    assert problems["reply_to"] == ["not an email address"]
    assert "set by Outbox itself" in problems["custom_headers"][0]
    assert check_letter({"subject": "{{ name | default('x') }}", "reply_to": "{{ email }}"}, KNOWN) == {}
    with pytest.raises(LetterError):
        parse_custom_headers("no colon here")


LONG_RU = "Длинная тема письма с подробностями о весенней распродаже и новых поступлениях в каталог " * 3


@pytest.mark.parametrize("subject", [LONG_RU, "A" * 120 + " " + "b" * 950, "Ёж " * 200, "=?utf-8?q?not_a_word?= plain",
                                     "x" * 2000])
def test_headers_are_crlf_folded_short_and_parse_strictly(subject):
    headers = "\n".join(f"X-Note-{i}: {LONG_RU[:40 + i]} {{{{ city }}}}" for i in range(30))
    letter = make(subject=subject + " {{ name }}", from_name="Отдел новостей и специальных предложений " * 3,
                  custom_headers=headers)
    _mid, raw = letter.build(Recipient(1, 11, "ann@example.org", "Анна Иванова-Петрова " * 4, "http://x/u",
                                       {"city": "Санкт-Петербург"}))
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert b"\r" not in head.replace(b"\r\n", b"") and b"\n" not in head.replace(b"\r\n", b""), "bare CR or LF"
    assert max(len(line) for line in head.split(b"\r\n")) <= 998
    assert raw.isascii()
    msg = email.message_from_bytes(raw, policy=email.policy.strict)
    assert not msg.defects and all(not msg[h].defects for h in msg.keys())
    assert " ".join(str(msg["Subject"]).split()) == " ".join((subject + " " + "Анна Иванова-Петрова " * 4).split())
    # RFC 2047 6.2: the space between adjacent encoded words is not part of the text
    # (Python's address parser keeps it, so decode the raw header the standard way).
    from_raw = re.search(rb"^From: (.*?) <", head, re.S).group(1).decode()
    assert str(make_header(decode_header(from_raw))) == ("Отдел новостей и специальных предложений " * 3).strip()
    assert str(msg["X-Note-29"]).endswith("Санкт-Петербург")


def _field(name):
    db.session.add(ContactField(name=name))
    db.session.commit()


def test_the_editor_refuses_unknown_placeholders_next_to_the_field(ctx, client, login, make_issue):
    login("editor")
    issue_id = make_issue(1)
    issue = db.session.get(Issue, issue_id)
    page = client.get(f"/issues/{issue_id}/edit")
    form = {"subject": "Hi {{ nmae }}", "sender_id": issue.sender_id, "list_id": issue.list_id,
            "body_html": "<p>{{ city }}</p>", "spread": "none", "csrf_token": csrf_from(page.data)}
    r = client.post(f"/issues/{issue_id}/edit", data=form)
    html = r.data.decode()
    assert r.status_code == 400
    assert re.search(r'name="subject".*?unknown field “nmae”', html, re.S), "the message sits by the subject"
    assert re.search(r'name="body_html".*?unknown field “city”', html, re.S)
    assert db.session.get(Issue, issue_id, populate_existing=True).subject == "Monthly news", "nothing saved"

    _field("city")  # a custom field now exists (as after an import with a city column)
    form.update(subject="Hi {{ name }}", reply_to="{{ email }}", preheader="Hello from {{ city }}")
    r = client.post(f"/issues/{issue_id}/edit", data=form)
    assert r.status_code == 302
    saved = db.session.get(Issue, issue_id, populate_existing=True)
    assert (saved.subject, saved.reply_to, saved.preheader) == ("Hi {{ name }}", "{{ email }}", "Hello from {{ city }}")

    # The field went away before launch: the launch says which placeholder is wrong.
    db.session.execute(sa.delete(ContactField))
    db.session.commit()
    with pytest.raises(lifecycle.LaunchError) as err:
        lifecycle.launch(issue_id, None)
    assert err.value.field == "preheader" and "city" in err.value.message
    assert db.session.get(Issue, issue_id, populate_existing=True).status == "draft"


def test_three_contacts_get_their_own_letter_end_to_end(ctx, client, login, make_issue, smtp, workers):
    user = login("editor")
    issue_id = make_issue(3, emails=[p[1] for p in PEOPLE], names=["x"])
    for name, address, fields in PEOPLE:
        contact = db.session.scalar(sa.select(Contact).where(Contact.email == address))
        contact.name, contact.phone = name, fields.get("phone")
        contact.attributes = {k: v for k, v in fields.items() if k != "phone"}
    _field("city")
    _field("plan")
    issue = db.session.get(Issue, issue_id)
    issue.subject, issue.body_html, issue.preheader = (
        '{{ name | default("Friend") }}, news for {{ city | default("you") }}',
        '<p>Hi {{ name|default("reader") }} from {{ city | default("somewhere") }}, plan {{ plan }}</p>'
        '<a href="{{ unsubscribe_url }}">Unsubscribe</a>',
        "Only for {{ name | default('you') }}")
    issue.from_name, issue.reply_to = "{{ city | default('Outbox') }} desk", "{{ plan | default('help') }}@example.net"
    db.session.commit()
    workers.start(1)
    lifecycle.launch(issue_id, user)
    wait_status(issue_id, "sent", 60)
    got = {rcpt: parse(raw) for rcpt, raw, _t in smtp.handler.letters}
    for name, address, fields in PEOPLE:
        msg = got[address]
        city = fields.get("city")
        assert str(msg["Subject"]) == f"{name or 'Friend'}, news for {city or 'you'}"
        assert msg["From"].addresses[0].display_name == f"{city or 'Outbox'} desk"
        assert str(msg["Reply-To"]) == f"{fields.get('plan') or 'help'}@example.net"
        assert f"from {city or 'somewhere'}, plan {fields.get('plan', '')}" in msg.get_body(("html",)).get_content()
    assert {d.state for d in deliveries_of(issue_id)} == {"sent"}


def test_preview_and_test_letter_use_a_real_contact_and_a_harmless_link(ctx, client, login, make_issue, smtp):
    login("editor")
    issue_id = make_issue(2, emails=["first@example.org", "Reader@Example.org"], names=["First One", "Real Reader"])
    db.session.execute(sa.update(Contact).where(Contact.email == "Reader@Example.org")
                       .values(attributes={"city": "Kazan"}))
    _field("city")
    issue = db.session.get(Issue, issue_id)
    issue.body_html = '<p>Hello {{ name }} of {{ city | default("nowhere") }}</p><a href="{{ unsubscribe_url }}">u</a>'
    db.session.commit()
    assert "Hello First One of nowhere" in client.get(f"/issues/{issue_id}/preview").data.decode(), \
        "by default the list's first contact"
    assert "Hello Real Reader of Kazan" in client.get(f"/issues/{issue_id}/preview?as=READER@example.org").data.decode()

    page = client.get(f"/issues/{issue_id}")
    r = client.post(f"/issues/{issue_id}/test", data={"email": "reader@EXAMPLE.org", "csrf_token": csrf_from(page.data)})
    assert r.status_code == 200, r.data
    (rcpt, raw, _t), = smtp.handler.letters
    msg = parse(raw)
    assert rcpt == "reader@EXAMPLE.org"
    html = msg.get_body(("html",)).get_content()
    assert "Hello Real Reader of Kazan" in html, "the test address's own contact"
    link = re.search(r'href="http://127.0.0.1:5999(/u/[^"]+)"', html).group(1)
    assert msg["List-Unsubscribe"] == f"<http://127.0.0.1:5999{link}>"
    answer = client.get(link)
    assert answer.status_code == 200 and "nothing was changed" in answer.data.decode()
    assert client.post(link, data={"List-Unsubscribe": "One-Click"}).status_code == 200
    from mailing.models import StopEntry

    assert db.session.scalar(sa.select(sa.func.count()).select_from(StopEntry)) == 0, "a test link changes nothing"
    assert journal_of(issue_id)[-1].details["as"] == "Reader@Example.org"

    # Choosing another contact sends that contact's letter to the test address.
    client.post(f"/issues/{issue_id}/test", data={"email": "me@example.net", "contact": "first@example.org",
                                                   "csrf_token": csrf_from(page.data)})
    assert "Hello First One of nowhere" in parse(smtp.handler.letters[-1][1]).get_body(("html",)).get_content()
