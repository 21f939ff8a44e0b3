"""A relay per sender: each sender's letters go through its own relay (or the default one),
an outage of one relay interrupts only its issues, a password is sent only over TLS, and the
admin page never shows a stored password back."""

from __future__ import annotations

import base64
import email
import socket
import ssl
import subprocess
import threading

import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from mailing import lifecycle, redact, relays, settings
from mailing.extensions import db
from mailing.models import Issue, JournalEvent, Sender
from mailing.sending.transport import RelayConfig, RelayTlsRequired, SmtpConnection

from .support import (
    RecordingHandler,
    SmtpServer,
    csrf_from,
    deliveries_of,
    free_port,
    issue_row,
    issue_status,
    wait_for,
    wait_status,
)

PASSWORD = "Relay-Pa55word-9f3k"


def sender_of(issue_id: int) -> Sender:
    issue = db.session.get(Issue, issue_id)
    assert issue is not None and issue.sender is not None
    return issue.sender


def give_relay(issue_id: int, url: str, *, tls: str = "none", user: str = "", password: str = "",
               cap: int | None = None) -> Sender:
    sender = sender_of(issue_id)
    relays.save(sender, url=url, tls=tls, user=user, password=password, cap=cap)
    db.session.commit()
    return sender


def recipients_of(issue_id: int) -> set[str]:
    return {d.email for d in deliveries_of(issue_id)}


def from_addresses(handler: RecordingHandler) -> set[str]:
    with handler.lock:
        letters = list(handler.letters)
    return {email.message_from_bytes(data)["From"].split("<")[-1].rstrip(">") for _rcpt, data, _t in letters}


@pytest.fixture
def two_relays():
    a, b = SmtpServer(), SmtpServer()
    a.start()
    b.start()
    yield a, b
    a.stop()
    b.stop()


# --- one relay down -------------------------------------------------------------------

def test_an_outage_of_one_senders_relay_interrupts_only_its_issue(ctx, make_issue, make_user, smtp, two_relays,
                                                                  workers):
    relay_a, relay_b = two_relays
    issue_a, issue_b = make_issue(2000), make_issue(120)
    sender_a = give_relay(issue_a, f"smtp://127.0.0.1:{relay_a.port}", tls="none")
    sender_b = give_relay(issue_b, f"127.0.0.1:{relay_b.port}", tls="starttls")  # no credentials: TLS if offered
    # A would take a minute, so it is still sending when its relay goes down even when B's
    # runner starts late on a busy machine; B usually overlaps the outage too. A's relay
    # goes down after its tenth letter, so the test never waits for A's whole run.
    relay_a.handler.delay, relay_b.handler.delay = 0.12, 0.02
    user, _ = make_user("editor")
    workers.start(2, SEND_JOBS="1")  # one runner per issue, each in its own worker
    lifecycle.launch(issue_a, user)
    lifecycle.launch(issue_b, user)
    wait_for(lambda: sum(relay_a.handler.counts().values()) >= 10 and relay_b.handler.counts(), 30,
             what="both relays to receive letters")
    assert issue_status(issue_a) == "sending"
    relay_a.stop()

    wait_status(issue_a, "interrupted", 30)
    reason = issue_row(issue_a).status_reason
    assert reason.startswith("relay unreachable") and str(relay_a.port) in reason, reason
    wait_status(issue_b, "sent", 30)
    assert sorted(relay_b.handler.counts().values()) == [1] * 120, "issue B whole, nobody twice"
    assert issue_row(issue_b).status_reason is None

    got_a = set(relay_a.handler.counts())
    assert got_a and got_a <= recipients_of(issue_a), "relay A received only sender A's letters"
    assert set(relay_b.handler.counts()) == recipients_of(issue_b), "relay B received only sender B's letters"
    assert from_addresses(relay_a.handler) == {sender_a.email}
    assert from_addresses(relay_b.handler) == {sender_b.email}
    assert not smtp.handler.counts(), "the default relay was not used"
    states = {d.state for d in deliveries_of(issue_a)}
    assert "sent" in states and states <= {"sent", "pending"}, "A keeps its unsent recipients for Resume"


# --- credentials need TLS -----------------------------------------------------------

class PlainTextRelay:
    """A relay that offers AUTH but no STARTTLS (and would take the password in clear text);
    it records every byte it receives, to show what the client put on the wire."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.lock = threading.Lock()
        self.received = bytearray()
        self.connections = 0
        self.finished = 0  # connections read to their end: everything they sent is recorded
        self.threads: list[threading.Thread] = []
        self.accepting = threading.Thread(target=self._accept, daemon=True)
        self.accepting.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self.threads.append(t)
            t.start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            self._converse(conn)
        except OSError:
            pass
        finally:
            with self.lock:
                self.finished += 1

    def _converse(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as lines:
            with self.lock:
                self.connections += 1
            conn.sendall(b"220 plain.test ESMTP\r\n")
            in_data = False
            for line in lines:
                with self.lock:
                    self.received += line
                if in_data:
                    if line == b".\r\n":
                        in_data = False
                        conn.sendall(b"250 2.0.0 queued\r\n")
                    continue
                verb = line[:4].upper()
                if verb == b"EHLO":
                    conn.sendall(b"250-plain.test\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME\r\n")
                elif verb == b"AUTH":
                    conn.sendall(b"235 2.7.0 Authentication successful\r\n")
                elif verb == b"DATA":
                    in_data = True
                    conn.sendall(b"354 go ahead\r\n")
                elif verb == b"QUIT":
                    conn.sendall(b"221 bye\r\n")
                    return
                else:
                    conn.sendall(b"250 2.0.0 ok\r\n")

    def wire(self) -> bytes:
        """Everything received, once every connection so far has been read to its end."""
        wait_for(lambda: self.connections and self.finished == self.connections, 10,
                 what="the relay's connections to end")
        with self.lock:
            return bytes(self.received)

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        except OSError:
            pass
        self.sock.close()
        self.accepting.join(5)


@pytest.fixture
def plain_relay():
    server = PlainTextRelay()
    yield server
    server.close()


def assert_no_credentials_on_the_wire(wire: bytes, user: str, password: str) -> None:
    assert b"EHLO" in wire.upper(), "the client did talk to the relay"
    assert b"AUTH" not in wire.upper(), wire
    for secret in (password, base64.b64encode(password.encode()).decode(),
                   base64.b64encode(f"\0{user}\0{password}".encode()).decode()):
        assert secret.encode() not in wire, f"{secret!r} was written to the socket"
    assert b"MAIL FROM" not in wire.upper(), "nothing was sent"


def test_open_refuses_to_send_credentials_without_tls(plain_relay):
    conn = SmtpConnection(RelayConfig.from_url(f"smtp://mailer:{PASSWORD}@127.0.0.1:{plain_relay.port}", 5))
    with pytest.raises(RelayTlsRequired, match="offers no STARTTLS"):
        conn.open()
    assert_no_credentials_on_the_wire(plain_relay.wire(), "mailer", PASSWORD)


@pytest.mark.parametrize("which", ["sender", "default"])
def test_a_relay_without_starttls_is_refused_and_gets_no_password(which, ctx, env, make_issue, make_user,
                                                                  plain_relay, workers):
    issue_id = make_issue(5)
    extra = {}
    if which == "sender":
        give_relay(issue_id, f"smtp://127.0.0.1:{plain_relay.port}", tls="starttls", user="mailer",
                   password=PASSWORD)
    else:  # the default relay: SMTP_URL with credentials, as the workers see it
        extra["SMTP_URL"] = f"smtp://mailer:{PASSWORD}@127.0.0.1:{plain_relay.port}"
    user, _ = make_user("editor")
    workers.start(1, RELAY_RETRY_WINDOW="60", **extra)  # refused at once, not after the window
    lifecycle.launch(issue_id, user)
    wait_status(issue_id, "interrupted", 30)

    row = issue_row(issue_id)
    assert "offers no STARTTLS" in row.status_reason and "password was not sent" in row.status_reason, \
        row.status_reason
    assert PASSWORD not in row.status_reason
    assert {d.state for d in deliveries_of(issue_id)} == {"pending"}, "nothing sent, all kept for Resume"
    assert_no_credentials_on_the_wire(plain_relay.wire(), "mailer", PASSWORD)


def test_the_test_letter_through_a_plain_text_default_relay_is_refused(ctx, client, login, make_issue,
                                                                       plain_relay):
    ctx.config["SMTP_URL"] = f"smtp://mailer:{PASSWORD}@127.0.0.1:{plain_relay.port}"
    issue_id = make_issue(1)
    login("editor")
    page = client.get(f"/issues/{issue_id}")
    r = client.post(f"/issues/{issue_id}/test", data={"email": "me@example.org"},
                    headers={"X-CSRFToken": csrf_from(page.data), "HX-Request": "true"})
    assert r.status_code == 502
    assert "offers no STARTTLS" in r.data.decode() and PASSWORD not in r.data.decode()
    assert_no_credentials_on_the_wire(plain_relay.wire(), "mailer", PASSWORD)


@pytest.fixture
def tls_relay(tmp_path):
    """aiosmtpd with STARTTLS (a self-signed certificate for 127.0.0.1) and AUTH; it keeps
    the logins it accepted."""
    cert, key = tmp_path / "relay.pem", tmp_path / "relay.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    logins: list[tuple[str, str]] = []

    def authenticator(server, session, envelope, mechanism, data):
        ok = isinstance(data, LoginPassword) and data.password.decode() == PASSWORD
        if ok:
            logins.append((data.login.decode(), mechanism))
        return AuthResult(success=ok)

    handler = RecordingHandler()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, decode_data=False, ready_timeout=10,
                            tls_context=context, require_starttls=True, auth_required=True,
                            authenticator=authenticator)
    controller.start()
    yield port, cert, handler, logins
    controller.stop()


def test_credentials_go_over_starttls(ctx, make_issue, make_user, tls_relay, workers):
    port, cert, handler, logins = tls_relay
    issue_id = make_issue(6)
    give_relay(issue_id, f"smtp://127.0.0.1:{port}", tls="starttls", user="mailer", password=PASSWORD)
    user, _ = make_user("editor")
    workers.start(1, SSL_CERT_FILE=str(cert))  # the workers trust the test certificate
    lifecycle.launch(issue_id, user)
    wait_status(issue_id, "sent", 30)
    assert set(handler.counts()) == recipients_of(issue_id)
    assert logins and {login for login, _mech in logins} == {"mailer"}


# --- what a run uses ---------------------------------------------------------------------

def test_a_senders_relay_is_sealed_and_carries_its_own_cap(ctx, make_issue):
    settings.put("relay_rate_per_second", 7)
    db.session.commit()
    issue_a, issue_b = make_issue(1), make_issue(1)
    sender = give_relay(issue_a, "smtps://relay.example.com", tls="tls", user="u@example.com",
                        password=PASSWORD, cap=3)
    assert PASSWORD not in sender.relay_url_sealed and "relay.example.com" not in sender.relay_url_sealed

    own = relays.for_sender(sender)
    assert (own.config.host, own.config.port, own.config.security) == ("relay.example.com", 465, "tls")
    assert (own.config.user, own.config.password) == ("u@example.com", PASSWORD)
    assert own.cap == 3 and own.key == f"sender-{sender.id}"
    assert PASSWORD not in redact.redact(f"it said {PASSWORD}"), "the unsealed password is masked in logs"

    default = relays.for_sender(sender_of(issue_b))
    assert default.key == f"{default.config.host}:{default.config.port}" and default.cap == 7
    assert default.key != own.key, "each relay counts its own cap"

    sender.relay_rate_per_second = None  # no own cap: the global one, on the sender's own counter
    db.session.commit()
    assert relays.current_cap(own) == 7
    settings.put("relay_rate_per_second", 9)
    db.session.commit()
    assert relays.current_cap(own) == 9 and relays.current_cap(default) == 9


# --- the admin page -------------------------------------------------------------------------

def relay_page(client, sender_id: int):
    return client.get(f"/admin/senders/{sender_id}/relay")


def post_relay(client, sender_id: int, **data):
    page = relay_page(client, sender_id)
    form = {"url": "", "tls": "starttls", "user": "", "password": "", "cap": "", **data,
            "csrf_token": csrf_from(page.data)}
    return client.post(f"/admin/senders/{sender_id}/relay", data=form)


def fresh(sender_id: int) -> Sender:
    db.session.commit()
    sender = db.session.get(Sender, sender_id, populate_existing=True)
    assert sender is not None
    return sender


def sealed_url(sender_id: int) -> str | None:
    sender = fresh(sender_id)
    return relays._url_of(sender) if sender.relay_url_sealed else None


def field_error(html: str, name: str) -> str:
    """The error text in the label that holds the named input."""
    start = html.index(f'name="{name}"')
    label = html.rindex("<label", 0, start)
    end = html.index("</label>", start)
    return html[label:end] if "has-error" in html[label:start] else ""


def test_admin_adds_a_sender_on_the_default_relay(ctx, client, login):
    login("admin")
    page = client.get("/admin/senders")
    form = {"name": "Weekly", "email": "weekly@example.com", "csrf_token": csrf_from(page.data)}
    assert client.post("/admin/senders", data=form).status_code == 302
    sender = db.session.scalar(sa.select(Sender).where(Sender.email == "weekly@example.com"))
    assert sender is not None and sender.relay_url_sealed is None
    again = client.post("/admin/senders", data=form)
    assert again.status_code == 400 and "This sender exists." in field_error(again.data.decode(), "email")


def test_admin_adds_changes_and_clears_a_senders_relay(ctx, client, login, make_issue):
    sender = sender_of(make_issue(1))
    sid, sender_email = sender.id, sender.email
    login("admin")
    listing = client.get("/admin/senders").data.decode()
    assert sender_email in listing and "Default relay" in listing

    r = post_relay(client, sid, url="smtp://relay.example.com:2525", user="mailer", password=PASSWORD,
                   cap="5")
    assert r.status_code == 302
    assert sealed_url(sid) == f"smtp://mailer:{PASSWORD}@relay.example.com:2525"
    listing = client.get("/admin/senders").data.decode()
    assert "smtp://relay.example.com:2525" in listing and "password set" in listing and PASSWORD not in listing

    page = relay_page(client, sid).data.decode()
    assert PASSWORD not in page, "the password is never rendered back"
    assert 'value="mailer"' in page and "leave blank to keep" in page
    assert 'value="smtp://relay.example.com:2525"' in page

    # A blank password keeps the stored one; the rest changes.
    assert post_relay(client, sid, url="smtps://relay2.example.com", tls="tls", user="mailer",
                      cap="").status_code == 302
    assert sealed_url(sid) == f"smtps://mailer:{PASSWORD}@relay2.example.com:465"
    sender = fresh(sid)
    assert sender.relay_tls == "tls" and sender.relay_rate_per_second is None
    # A new password replaces it (characters a URL cannot hold are fine).
    assert post_relay(client, sid, url="relay2.example.com:465", tls="tls", user="mailer",
                      password="n3w:p@ss/word#").status_code == 302
    assert relays.for_sender(fresh(sid)).config.password == "n3w:p@ss/word#"
    # An empty user name removes the credentials.
    assert post_relay(client, sid, url="relay2.example.com:465", tls="tls").status_code == 302
    assert sealed_url(sid) == "smtps://relay2.example.com:465"

    page = client.get("/admin/senders")
    r = client.post(f"/admin/senders/{sid}/relay/clear", data={"csrf_token": csrf_from(page.data)})
    assert r.status_code == 302
    sender = fresh(sid)
    assert (sender.relay_url_sealed, sender.relay_tls, sender.relay_rate_per_second) == (None, None, None)
    assert "Default relay" in client.get("/admin/senders").data.decode()

    journal = db.session.scalars(sa.select(JournalEvent).where(JournalEvent.event == "sender_relay")).all()
    assert len(journal) == 5 and journal[-1].details["relay"] == "default"
    assert all(PASSWORD not in str(e.details) and "p@ss" not in str(e.details) for e in journal)


@pytest.mark.parametrize(("data", "field", "message"), [
    ({"url": "http://relay.example.com"}, "url", "smtp:// or smtps://"),
    ({"url": "smtp://relay.example.com:99999"}, "url", "port must be a number"),
    ({"url": ""}, "url", "Give the relay"),
    ({"url": "smtp://relay .example.com"}, "url", "smtp://host:port"),
    ({"url": f"smtp://mailer:{PASSWORD}@relay.example.com"}, "url", "their own fields"),
    ({"url": "smtps://relay.example.com", "tls": "starttls"}, "tls", "implicit TLS"),
    ({"url": "relay.example.com", "tls": "none", "user": "mailer", "password": PASSWORD}, "tls", "only over TLS"),
    ({"url": "relay.example.com", "user": "mailer"}, "password", "Give the password"),
    ({"url": "relay.example.com", "password": PASSWORD}, "user", "Give the user name"),
    ({"url": "relay.example.com", "cap": "-1"}, "cap", ""),
    ({"url": "relay.example.com", "tls": "rot13"}, "tls", ""),
])
def test_a_bad_relay_is_refused_next_to_its_field(data, field, message, ctx, client, login, make_issue):
    sid = sender_of(make_issue(1)).id
    login("admin")
    r = post_relay(client, sid, **data)
    assert r.status_code == 400
    html = r.data.decode()
    error = field_error(html, field)
    assert error and message in error, (field, error)
    assert PASSWORD not in html, "a password typed anywhere is not shown back"
    assert sealed_url(sid) is None, "nothing changed"


@pytest.mark.parametrize("role", ["editor", "moderator", "support"])
def test_only_admins_reach_the_senders_and_their_relays(role, ctx, client, login, make_issue):
    sid = sender_of(make_issue(1)).id
    login(role)
    page = client.get("/issues")
    token = csrf_from(page.data) if b"csrf_token" in page.data else ""
    assert client.get("/admin/senders").status_code == 403
    assert relay_page(client, sid).status_code == 403
    assert client.post(f"/admin/senders/{sid}/relay",
                       data={"url": "relay.example.com", "tls": "none", "csrf_token": token}).status_code == 403
    assert client.post(f"/admin/senders/{sid}/relay/clear", data={"csrf_token": token}).status_code == 403
    assert sealed_url(sid) is None


def test_relay_changes_need_the_csrf_token(ctx, client, login, make_issue):
    bare = sender_of(make_issue(1)).id
    own = give_relay(make_issue(1), "relay.example.com", tls="none").id
    login("admin")
    r = client.post(f"/admin/senders/{bare}/relay", data={"url": "relay.example.com", "tls": "none"})
    assert r.status_code == 400 and sealed_url(bare) is None
    assert client.post(f"/admin/senders/{own}/relay/clear").status_code == 400
    assert sealed_url(own) == "smtp://relay.example.com:25", "still its own relay"
