"""Personalisation: render once, substitute per recipient, encode correctly, never inject headers."""

import email
import email.policy

import pytest

from mailing.sending.letter import Letter, LetterError, Recipient, clean_header_value, html_to_text


def make(subject="News", body='<p>Hi {{ name }}</p><p>{{email}}</p><a href="{{ unsubscribe_url }}">u</a>',
         from_name="Outbox News"):
    return Letter(issue_id=7, subject=subject, body_html=body, from_name=from_name,
                  from_email="news@outbox.test", secret=b"k")


def parse(raw: bytes):
    return email.message_from_bytes(raw, policy=email.policy.default)


def test_personalised_letter_carries_name_email_and_unsubscribe():
    mid, raw = make().build(Recipient(1, 11, "ann@example.org", "Ann", "http://x/u/1.abc"))
    msg = parse(raw)
    html = msg.get_body(("html",)).get_content()
    assert "Hi Ann" in html and "ann@example.org" in html and 'href="http://x/u/1.abc"' in html
    assert msg["List-Unsubscribe"] == "<http://x/u/1.abc>"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg["Message-ID"] == mid
    assert "Hi Ann" in msg.get_body(("plain",)).get_content()


def test_non_ascii_names_and_subject_are_encoded():
    letter = make(subject="Новости месяца", from_name="Отдел новостей")
    _mid, raw = letter.build(Recipient(1, 11, "anna@example.org", "Анна Иванова", "http://x/u"))
    assert raw.isascii(), "the wire form must be 7-bit"
    msg = parse(raw)
    assert str(msg["Subject"]) == "Новости месяца"
    assert msg["To"].addresses[0].display_name == "Анна Иванова"
    assert msg["From"].addresses[0].display_name == "Отдел новостей"
    assert "Hi Анна Иванова" in msg.get_body(("html",)).get_content()


@pytest.mark.parametrize("evil", ["Eve\r\nBcc: victim@example.org", "Eve\nBcc: victim@example.org",
                                  "Eve\rX-Injected: 1", "Eve\x00Bcc: v@example.org"])
def test_header_injection_in_name_and_subject_is_neutralised(evil):
    letter = make(subject="Hello " + evil, from_name=evil)
    _mid, raw = letter.build(Recipient(1, 11, "eve@example.org", evil, "http://x/u"))
    msg = parse(raw)
    assert msg["Bcc"] is None and msg["X-Injected"] is None
    assert "\n" not in str(msg["Subject"]) and "\r" not in str(msg["Subject"])
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert all(not line.startswith((b"Bcc", b"X-Injected")) for line in head.split(b"\r\n"))


def test_names_are_html_escaped_in_the_body():
    _mid, raw = make().build(Recipient(1, 11, "x@example.org", "<script>alert(1)</script>", "http://x/u"))
    html = parse(raw).get_body(("html",)).get_content()
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_message_id_is_deterministic_per_issue_and_recipient():
    a = make().build(Recipient(1, 11, "a@example.org", "A", "u"))[0]
    b = make().build(Recipient(99, 11, "a@example.org", "A", "u"))[0]
    c = make().build(Recipient(1, 12, "b@example.org", "B", "u"))[0]
    assert a == b != c
    assert a.startswith("<outbox.7.11.") and a.endswith("@outbox.test>")


def test_empty_subject_is_refused_and_clean_header_value():
    with pytest.raises(LetterError):
        make(subject="  ")
    assert clean_header_value("a\r\nb\nc") == "a b c"


def test_html_to_text_keeps_links():
    assert "Unsubscribe (http://x)" in html_to_text('<a href="http://x">Unsubscribe</a>')


BODIES = [
    "<p>{{ name }}</p>",
    "{{name}}{{email}}",
    "Hello {{ name }} \n.dot line\r\nTrailing space \n" + "x" * 300 + "{{ name }}" + "y" * 200,
    "<p>" + "Длинная строка без переносов " * 20 + "{{ name }}, " + "ёжик " * 40 + "</p>\n\n<p>{{ unsubscribe_url }}</p>",
    "=3D literal equals = sign and tabs\t\there {{ email }} end\t",
]
NAMES = ["", "Ann", "Анна Иванова-Петрова " * 6, "Zoë = \"quoted\" <b>", "a" * 150]


@pytest.mark.parametrize("body", BODIES)
@pytest.mark.parametrize("name", NAMES)
def test_piecewise_quoted_printable_decodes_to_the_filled_letter(body, name):
    """The body is encoded once in pieces and joined with soft line breaks: decoding
    must give exactly the letter filled in one go, and no line may exceed 76 octets."""
    letter = make(body=body)
    url = "http://x/u/1.abc?a=1&b=2"
    _mid, raw = letter.build(Recipient(1, 11, "ann@example.org", name, url))
    html = parse(raw).get_body(("html",)).get_content().replace("\r\n", "\n")
    expected = letter.sample_html(name.strip(), "ann@example.org", url).replace("\r\n", "\n")
    assert html.rstrip("\n") == expected.rstrip("\n")
    body = raw.split(b"\r\n\r\n", 1)[1]
    assert max(len(line) for line in body.split(b"\r\n")) <= 76
    assert b"\n" not in raw.replace(b"\r\n", b"")
