"""DKIM: letters a real relay receives verify with dkimpy against the published key, an
altered one does not; keys are sealed at rest; the admin page (generate, TXT record,
DNS check against a real DNS server on loopback, rotation, delete) is the admin's only."""

from __future__ import annotations

import re
import socket
import threading

import dkim as dkimpy
import dns.message
import dns.rcode
import dns.rrset
import pytest
import sqlalchemy as sa

from mailing import dkim, lifecycle
from mailing.extensions import db
from mailing.models import DkimKey, Issue, JournalEvent, Sender
from mailing.secretbox import seal, unseal

from .support import csrf_from, free_port, wait_status


class DnsServer:
    """A DNS server on loopback answering TXT questions from `records` (name → value),
    NXDOMAIN for any other name: the check talks real DNS over UDP, and nothing leaves
    the machine."""

    def __init__(self):
        self.records: dict[str, str] = {}
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                data, peer = self.sock.recvfrom(4096)
            except OSError:
                return  # closed
            query = dns.message.from_wire(data)
            reply = dns.message.make_response(query)
            name = query.question[0].name
            value = self.records.get(name.to_text().rstrip(".").lower())
            if value is None:
                reply.set_rcode(dns.rcode.NXDOMAIN)
            else:
                strings = " ".join(f'"{value[i:i + 200]}"' for i in range(0, len(value), 200))
                reply.answer.append(dns.rrset.from_text(name, 300, "IN", "TXT", strings))
            self.sock.sendto(reply.to_wire(), peer)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def dns_server():
    server = DnsServer()
    yield server
    server.close()


def dnsfunc_for(*keys: DkimKey):
    """What the verifier's DNS lookups answer: the keys' records, nothing else."""
    published = {(dkim.record_name(k) + ".").encode(): dkim.record_value(k).encode() for k in keys}

    def lookup(name: bytes, timeout: int = 5) -> bytes:
        return published.get(name, b"")

    return lookup


def verifies(raw: bytes, idx: int, lookup) -> bool:
    """Whether dkimpy verifies the letter's signature number `idx` (a mismatch raises there)."""
    try:
        return bool(dkimpy.DKIM(raw).verify(idx=idx, dnsfunc=lookup))
    except dkimpy.DKIMException:
        return False


def sender_of(issue_id: int) -> Sender:
    issue = db.session.get(Issue, issue_id)
    return db.session.get(Sender, issue.sender_id)


def signatures(raw: bytes) -> list[str]:
    return re.findall(r"(?m)^DKIM-Signature:([^\r\n]*(?:\r\n[ \t][^\r\n]*)*)", raw.decode("utf-8"))


# --- every letter sent verifies --------------------------------------------------------

def test_every_letter_a_relay_receives_verifies_and_an_altered_one_fails(
        ctx, make_issue, smtp, workers, make_user):
    issue_id = make_issue(30, names=["Анна Иванова", "Reader \"Q\" Smith", "Zoë"])
    issue = db.session.get(Issue, issue_id)
    issue.subject = "Новости {{ name }}: Pause, resume and more"
    issue.reply_to = "replies@example.org"
    domain = dkim.domain_of(sender_of(issue_id).email)
    rsa_key = dkim.generate(domain, dkim.RSA)
    ed_key = dkim.generate(domain, dkim.ED25519)
    db.session.commit()
    assert rsa_key.active and ed_key.active, "a domain's first key of each algorithm signs at once"
    user, _ = make_user("editor")
    workers.start(1, SEND_JOBS="1")
    lifecycle.launch(issue_id, user)
    wait_status(issue_id, "sent", 60)

    letters = smtp.handler.letters
    assert len(letters) == 30
    lookup = dnsfunc_for(rsa_key, ed_key)
    for _rcpt, raw, _t in letters:
        found = signatures(raw)
        assert len(found) == 2, "RSA and Ed25519 sign side by side"
        rsa_tags, ed_tags = (dict(t.strip().split("=", 1) for t in re.sub(r"\s+", " ", s).split(";") if "=" in t)
                             for s in found)
        assert rsa_tags["a"] == "rsa-sha256" and ed_tags["a"] == "ed25519-sha256"
        assert rsa_tags["c"] == "relaxed/relaxed" and rsa_tags["d"] == domain
        assert rsa_tags["s"] == rsa_key.selector
        signed = set(re.sub(r"\s", "", rsa_tags["h"]).split(":"))
        assert {"from", "to", "subject", "date", "message-id", "reply-to", "list-unsubscribe",
                "list-unsubscribe-post", "mime-version", "content-type"} <= signed
        assert verifies(raw, 0, lookup), "the RSA signature verifies"
        assert verifies(raw, 1, lookup), "the Ed25519 signature verifies"

    raw = letters[0][1]
    head, _sep, body = raw.partition(b"\r\n\r\n")
    altered_body = head + b"\r\n\r\n" + body.replace(b"Hello", b"Hallo", 1)
    assert altered_body != raw
    altered_subject = re.sub(rb"(?m)^Subject: ", b"Subject: Re: ", raw, count=1)
    second_from = b"From: someone@evil.test\r\n" + raw
    for altered in (altered_body, altered_subject, second_from):
        assert not verifies(altered, 0, lookup)
        assert not verifies(altered, 1, lookup)
    # Relaxed canonicalisation survives what relays do to whitespace.
    refolded = raw.replace(b"\r\nList-Unsubscribe-Post: ", b"\r\nList-Unsubscribe-Post:   ", 1)
    assert refolded != raw and verifies(refolded, 0, lookup)


def test_letters_of_a_domain_without_a_key_go_unsigned_and_a_waiting_key_does_not_sign(
        ctx, make_issue, smtp, workers, make_user):
    issue_id = make_issue(3)
    other = make_issue(3)
    domain = dkim.domain_of(sender_of(other).email)
    assert domain == dkim.domain_of(sender_of(issue_id).email)  # both send from outbox.test
    first = dkim.generate(domain)
    second = dkim.generate(domain)  # rotation: waits until switched to
    db.session.commit()
    assert first.active and not second.active
    user, _ = make_user("editor")
    workers.start(1, SEND_JOBS="1")
    lifecycle.launch(issue_id, user)
    wait_status(issue_id, "sent", 60)
    for _r, raw, _t in smtp.handler.letters:
        [sig] = signatures(raw)
        assert f"s={first.selector};" in re.sub(r"\s", "", sig)
        assert dkimpy.verify(raw, dnsfunc=dnsfunc_for(first))
        assert not dkimpy.verify(raw, dnsfunc=dnsfunc_for(second))

    dkim.activate(second)
    db.session.commit()
    smtp.handler.letters.clear()
    lifecycle.launch(other, user)
    wait_status(other, "sent", 60)
    assert len(smtp.handler.letters) == 3
    for _r, raw, _t in smtp.handler.letters:
        assert dkimpy.verify(raw, dnsfunc=dnsfunc_for(second)), "the switched-to key signs"

    db.session.execute(sa.delete(DkimKey))
    db.session.commit()
    assert dkim.signer_for(domain) is None


def test_private_keys_are_sealed_and_a_changed_secret_key_stops_the_run_in_words(
        app, ctx, make_issue, smtp, workers, make_user, caplog):
    issue_id = make_issue(2)
    domain = dkim.domain_of(sender_of(issue_id).email)
    key = dkim.generate(domain)
    db.session.commit()
    stored = db.session.execute(sa.select(DkimKey.private_key_sealed, DkimKey.public_key)).one()
    assert "PRIVATE KEY" not in stored.private_key_sealed and "MII" not in stored.private_key_sealed
    assert unseal(stored.private_key_sealed).startswith("-----BEGIN PRIVATE KEY-----")
    assert unseal(seal("x")) == "x"

    # The key sealed under another SECRET_KEY (a database moved without its secret).
    pem = unseal(stored.private_key_sealed)
    saved = app.config["SECRET_KEY"]
    app.config["SECRET_KEY"] = "another-secret"
    try:
        resealed = seal(pem)
    finally:
        app.config["SECRET_KEY"] = saved
    db.session.get(DkimKey, key.id).private_key_sealed = resealed
    db.session.commit()
    with pytest.raises(dkim.DkimError) as caught:
        dkim.signer_for(domain)
    assert "SECRET_KEY" in str(caught.value) and "PRIVATE" not in str(caught.value)

    user, _ = make_user("editor")
    workers.start(1, SEND_JOBS="1")
    lifecycle.launch(issue_id, user)
    wait_status(issue_id, "interrupted", 60)
    reason = db.session.get(Issue, issue_id, populate_existing=True).status_reason or ""
    assert "cannot be read" in reason and key.selector in reason
    assert smtp.handler.letters == [], "nothing goes out unsigned"
    assert "PRIVATE KEY" not in caplog.text


def test_signing_costs_a_fraction_of_a_millisecond(ctx, make_issue):
    """The in-process cost the send benchmark pays per letter (RSA-2048 by OpenSSL)."""
    import time

    from mailing.sending.letter import Recipient
    from mailing.sending.runner import build_letter

    issue_id = make_issue(1)
    dkim.generate(dkim.domain_of(sender_of(issue_id).email))
    db.session.commit()
    letter = build_letter(db.session.get(Issue, issue_id))
    assert letter.sign is not None
    r = Recipient(1, 1, "reader@example.org", "Анна", "http://127.0.0.1:5999/u/x")
    letter.build(r)
    started = time.perf_counter()
    for _ in range(100):
        letter.build(r)
    per_letter = (time.perf_counter() - started) / 100
    assert per_letter < 0.005, f"{per_letter * 1e6:.0f} µs per signed letter"


# --- the admin page --------------------------------------------------------------------

def generate_on_page(client, domain: str, algorithm: str = dkim.RSA):
    page = client.get("/admin/dkim")
    return client.post("/admin/dkim", data={"domain": domain, "algorithm": algorithm,
                                            "csrf_token": csrf_from(page.data)})


def keys() -> list[DkimKey]:
    db.session.commit()
    rows = db.session.scalars(sa.select(DkimKey).order_by(DkimKey.id)).all()
    db.session.commit()
    return list(rows)


def test_admin_generates_sees_the_record_checks_dns_rotates_and_deletes(
        app, ctx, client, login, make_issue, dns_server):
    issue_id = make_issue(1)
    domain = dkim.domain_of(sender_of(issue_id).email)
    login("admin")
    page = client.get("/admin/dkim")
    assert page.status_code == 200
    assert domain.encode() in page.data and b"not signed" in page.data
    assert b'href="/admin/dkim"' in page.data, "the admin navigation links the page"

    r = generate_on_page(client, domain)
    assert r.status_code == 302
    [key] = keys()
    assert key.active and key.algorithm == dkim.RSA and key.domain == domain
    page = client.get("/admin/dkim")
    text = page.data.decode()
    assert f"{key.selector}._domainkey.{domain}" in text
    assert f"v=DKIM1; k=rsa; p={key.public_key}" in text
    assert "PRIVATE KEY" not in text and key.private_key_sealed not in text
    assert '"' + dkim.record_value(key)[:250] + '"' in text.replace("&#34;", '"'), "the zone file form"

    token = csrf_from(page.data)
    app.config["DNS_NAMESERVERS"] = dns_server.address
    r = client.post(f"/admin/dkim/{key.id}/check", data={"csrf_token": token})
    assert r.status_code == 200 and b"No TXT record at" in r.data

    dns_server.records[dkim.record_name(key)] = "v=DKIM1; k=rsa; p=" + "A" * 300
    r = client.post(f"/admin/dkim/{key.id}/check", data={"csrf_token": token})
    assert r.status_code == 200 and b"not with this key" in r.data

    dns_server.records[dkim.record_name(key)] = dkim.record_value(key)  # published (in several strings)
    r = client.post(f"/admin/dkim/{key.id}/check", data={"csrf_token": token})
    assert r.status_code == 200 and b"Published:" in r.data

    app.config["DNS_NAMESERVERS"] = f"127.0.0.1:{free_port()}"  # nothing answers there
    r = client.post(f"/admin/dkim/{key.id}/check", data={"csrf_token": token})
    assert r.status_code == 200 and b"Could not reach a DNS server" in r.data

    # Rotation: the new key waits, then takes over; the old one stays until deleted.
    assert generate_on_page(client, domain).status_code == 302
    old, new = keys()
    assert old.active and not new.active and new.selector != old.selector
    assert client.post(f"/admin/dkim/{new.id}/activate", data={"csrf_token": token}).status_code == 302
    old, new = keys()
    assert new.active and not old.active
    assert client.post(f"/admin/dkim/{old.id}/delete", data={"csrf_token": token}).status_code == 302
    assert [k.id for k in keys()] == [new.id]
    events = [e for e in db.session.scalars(sa.select(JournalEvent.event).order_by(JournalEvent.id))
              if e.startswith("dkim_")]
    assert events == ["dkim_key_generated", "dkim_key_generated", "dkim_key_activated", "dkim_key_deleted"]
    details = db.session.scalars(sa.select(JournalEvent.details).where(JournalEvent.event.like("dkim_%"))).all()
    assert all("BEGIN" not in str(d) and new.private_key_sealed not in str(d) for d in details)

    # Ed25519 beside it.
    assert generate_on_page(client, domain, dkim.ED25519).status_code == 302
    ed = keys()[-1]
    assert ed.active and ed.algorithm == dkim.ED25519
    assert f"v=DKIM1; k=ed25519; p={ed.public_key}".encode() in client.get("/admin/dkim").data


def test_bad_input_is_refused_beside_the_field_and_changes_nothing(ctx, client, login, make_issue):
    make_issue(1)
    login("admin")
    r = generate_on_page(client, "not-a-sender.example")
    assert r.status_code == 400 and b"No sender sends from not-a-sender.example" in r.data
    r = generate_on_page(client, "outbox.test", "rsa-md5")
    assert r.status_code == 400 and b"Not a valid choice" in r.data
    token = csrf_from(client.get("/admin/dkim").data)
    for action in ("check", "activate", "delete"):
        assert client.post(f"/admin/dkim/99999/{action}", data={"csrf_token": token}).status_code == 404
    assert keys() == []


def test_only_admins_reach_the_page_and_every_post_needs_csrf(ctx, client, login, make_issue):
    issue_id = make_issue(1)
    key = dkim.generate(dkim.domain_of(sender_of(issue_id).email))
    db.session.commit()
    for role in ("editor", "moderator", "support"):
        login(role)
        assert client.get("/admin/dkim").status_code == 403
        token = csrf_from(client.get("/").data)
        assert client.post("/admin/dkim", data={"domain": key.domain, "algorithm": dkim.RSA,
                                                "csrf_token": token}).status_code == 403
        for action in ("check", "activate", "delete"):
            assert client.post(f"/admin/dkim/{key.id}/{action}", data={"csrf_token": token}).status_code == 403
        assert b'href="/admin/dkim"' not in client.get("/").data
        client.post("/logout", data={"csrf_token": token})
    login("admin")
    for path in ("/admin/dkim", f"/admin/dkim/{key.id}/check", f"/admin/dkim/{key.id}/activate",
                 f"/admin/dkim/{key.id}/delete"):
        r = client.post(path, data={"domain": key.domain, "algorithm": dkim.RSA})
        assert r.status_code == 400, path
    assert [(k.id, k.active) for k in keys()] == [(key.id, True)]
