"""Property-based: random text, bytes, huge numbers and Unicode in every path parameter,
query parameter, form field and JSON body of every route, as every role. Never a 500, and
a refused request (4xx) writes nothing.

The routes come from the app's url_map and the form fields from the FlaskForm classes
and `request.form` reads of mailing/views, so a new route or field is fuzzed without
touching this file. One app, database, Redis and SMTP server serve the whole module;
no worker runs, so launches and imports only enqueue their jobs.
"""

from __future__ import annotations

import collections
import contextlib
import io
import os
import re
import shutil
import tempfile
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import quote, urlencode, urlsplit

import pytest
import redis
import sqlalchemy as sa
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from .support import ROOT, SECRET, SmtpServer, counter, csrf_from

ROLES = ("admin", "editor", "moderator", "support", "anonymous")
# Examples per (route, role): the roles a route serves share ~16 (at least 3 each); a
# refused role gets one (it answers the same 403 or login redirect whatever it sends).
# FUZZ_EXAMPLES=200 makes a long run.
PER_ROUTE = int(os.environ.get("FUZZ_EXAMPLES", "16"))
REFUSED_EXAMPLES = 1
PASSWORD = "Fuzz-Pa55word-long"
# FUZZ_STATS=file writes how often each (endpoint, method, role) got each status: a view
# that only ever answers 400 is not being reached by the examples.
STATS: collections.Counter = collections.Counter()


# --- what to throw ------------------------------------------------------------------

SPECIAL = [
    "", " ", "0", "-1", "1", "2", "00", "+1", "1.5", "1e3", "1e999999", "-1e999999", "1e-999999",
    "NaN", "sNaN", "nan", "inf", "-Infinity", "10^20", str(10**20), str(2**63), str(2**63 - 1),
    str(2**31), str(-(2**63)), "9" * 400, "²", "¹²³", "٣", "１２", "Ⅻ", "½", "0x1F", "1_000",
    "\x00", "a\x00b", "é", "İ", "ß", "\u202e", "\ufeff", "\u200b", "😀", "<script>alert(1)</script>",
    "'\"", "%", "_", "\\", "%00", "../../../etc/passwd", "{{ 7*7 }}", "{% raw %}",
    "now", "at", "postpone", "yes", "y", "true", "on", "admin", "editor", "moderator", "support",
    "ru", "en", "portions", "hours", "none", "details", "responses", "report", "draft", "sending",
    "sent", "cancelled", "2030-01-01T10:00", "2030-13-45T99:99", "0001-01-01T00:00",
    "9999-12-31T23:59", "2030-01-01T10:00:00Z", "a@b", "a@example.org", "аня@пример.рф",
    "x@[127.0.0.1]", "user@localhost", "\r\nBcc: x@example.org", "+7 912 345-67-89", "x" * 5000,
    "x" * 100_000, "Fuzz readers", "Blocked manually",  # names that exist already
]
texts = st.text(max_size=40)  # any Unicode scalar (hypothesis leaves surrogates out), NUL included
nasty = st.one_of(
    st.sampled_from(SPECIAL), texts,
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.floats().map(repr),
    st.binary(max_size=40),  # raw bytes: not valid UTF-8, most of the time
)
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(10**30), max_value=10**30),
                         st.floats(), texts, st.sampled_from([s for s in SPECIAL if len(s) < 1000]))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.one_of(texts, st.sampled_from(
        ["mode", "send_at", "entries", "ids", "name"])), inner, max_size=4)), max_leaves=12)
json_bodies = st.one_of(
    json_values,
    st.fixed_dictionaries({}, optional={
        "mode": st.one_of(st.sampled_from(["now", "at", "postpone"]), json_values),
        "send_at": st.one_of(st.sampled_from(["2030-01-01T10:00:00Z", "9999-12-31T23:59:59+14:00",
                                              "0001-01-01", "2030-02-30T00:00"]), json_values),
        "entries": st.one_of(st.lists(st.one_of(st.sampled_from(SPECIAL[:90]), texts), max_size=5),
                             json_values),
        "ids": st.one_of(st.lists(st.one_of(st.integers(min_value=-(10**30), max_value=10**30),
                                            st.integers(1, 50)), max_size=5), json_values),
        "name": st.one_of(texts, json_values),
    }),
)
QUERY_NAMES = ["page", "before", "q", "status", "tab", "code", "enhanced", "issue", "actor", "event", "next",
               "list_id", "id", "sort", "as"]
ACTIONS = ["pause", "resume", "send_whole", "send-whole", "cancel", "send_now", "send-now", "launch"]


# --- the app, its data and its clients, once for the module ---------------------------

def _rules_of(app):
    out = []
    for rule in app.url_map.iter_rules():
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            out.append((method, rule.rule, rule.endpoint))
    return sorted(out, key=lambda r: (r[1], r[0]))


def _collect_routes():
    """The url_map of an app made in a throw-away instance at collection time."""
    saved = dict(os.environ)
    d = tempfile.mkdtemp(prefix="outbox-fuzz-collect-")
    try:
        os.environ.update({"OUTBOX_INSTANCE": d, "DATABASE_URL": f"sqlite:///{d}/x.sqlite3",
                           "SECRET_KEY": SECRET, "REDIS_URL": "redis://127.0.0.1:1"})
        from mailing import create_app

        return _rules_of(create_app({"TESTING": True}))
    finally:
        os.environ.clear()
        os.environ.update(saved)
        shutil.rmtree(d, ignore_errors=True)


ROUTES = _collect_routes()


def _form_fields() -> tuple[dict[str, str], set[str]]:
    """Every field name a view reads: WTForms fields (name -> field class) and raw
    request.form reads."""
    import importlib
    import pkgutil

    from flask_wtf import FlaskForm
    from wtforms.fields.core import UnboundField

    import mailing.views

    fields: dict[str, str] = {}
    for info in pkgutil.iter_modules(mailing.views.__path__):
        module = importlib.import_module(f"mailing.views.{info.name}")
        for obj in vars(module).values():
            if isinstance(obj, type) and issubclass(obj, FlaskForm):
                for klass in obj.__mro__:
                    for name, value in vars(klass).items():
                        if isinstance(value, UnboundField):
                            fields.setdefault(name, value.field_class.__name__)
    raw: set[str] = set()
    for path in (ROOT / "mailing" / "views").glob("*.py"):
        raw.update(re.findall(r"request\.form\.(?:get|getlist)\(\s*\"([^\"]+)\"", path.read_text()))
    return fields, raw


FORM_FIELDS, RAW_FIELDS = _form_fields()
FILE_FIELDS = {n for n, kind in FORM_FIELDS.items() if "File" in kind}
BY_KIND = {"IntegerField": "10", "DecimalField": "1.5", "BooleanField": "y", "EmailField": "fuzz@example.org",
           "PasswordField": PASSWORD + "-new", "DateTimeLocalField": "2030-01-01T10:00",
           "DateTimeField": "2030-01-01 10:00:00", "DateField": "2030-01-01"}
BY_NAME = {"role": "support", "confirm": "yes", "mode": "now", "spread": "none", "locale": "ru",
           "body_html": "<p>Hi {{ name }}</p>", "items": "fuzz@example.org\n+7 912 345 67 89",
           "emails": "fuzz@example.org", "subject": "Fuzz news", "comment": "looks fine",
           "portion_size": "10", "portion_minutes": "5", "spread_hours": "2", "email": "fuzz@example.org",
           "password": PASSWORD + "-new", "name": "Fuzz"}
# Fields a page renders empty that a person fills in before posting.
REQUIRED_BY_NAME = {"email", "name", "subject", "items", "emails", "comment", "password"}
ID_FIELDS = {"sender_id": "senders", "list_id": "contact_lists", "entry": "stop_entries"}
# Which table a path id names (list_id depends on the blueprint).
PATH_TABLES = {"issue_id": "issues", "contact_id": "contacts", "entry_id": "stop_entries",
               "import_id": "contact_imports", "token_id": "api_tokens", "user_id": "users"}


class _FormFields(HTMLParser):
    """Collects the fields of the forms on a page that post to `target` (by `action` or
    htmx's `hx-post`; no action means the page itself): inputs with their values (checked
    boxes only), textareas, and each select's selected or first option."""

    def __init__(self, target: str, page: str):
        super().__init__(convert_charrefs=True)
        self.target, self.page = target, page
        self.fields: dict[str, str] = {}
        self.found = False
        self._in = False
        self._text_for: str | None = None
        self._select: str | None = None
        self._option: dict | None = None
        self._chosen: set[str] = set()

    def _posts_here(self, attrs: dict) -> bool:
        action = attrs.get("hx-post") or attrs.get("action") or ""
        return urlsplit(action).path.rstrip("/") == self.target.rstrip("/") if action \
            else self.page.rstrip("/") == self.target.rstrip("/") and (attrs.get("method") or "").lower() == "post"

    def handle_starttag(self, tag, attr_list):
        attrs = {k: v or "" for k, v in attr_list}
        if tag == "form":
            self._in = self._posts_here(attrs)
            self.found = self.found or self._in
        elif tag == "button" and not self._in and attrs.get("hx-post") and self._posts_here(attrs):
            self.found = True
        if not self._in:
            return
        name = attrs.get("name")
        if tag == "input" and name:
            kind = attrs.get("type", "text").lower()
            if kind == "radio" and "checked" not in attrs:
                self.fields.setdefault(name, attrs.get("value", "on"))
                return
            if kind == "checkbox" and name in self.fields:  # several ticked boxes: one value is enough
                return
            if kind not in ("file", "submit", "button", "image", "reset"):
                # A checkbox is sent ticked (a person ticks "I confirm" to get anywhere).
                self.fields[name] = PASSWORD if kind == "password" else attrs.get("value", "")
        elif tag == "textarea" and name:
            self.fields[name], self._text_for = "", name
        elif tag == "select" and name:
            self._select = name
        elif tag == "option" and self._select:
            self._option = {"value": attrs.get("value"), "selected": "selected" in attrs, "text": ""}

    def handle_data(self, data):
        if self._text_for:
            self.fields[self._text_for] += data
        if self._option is not None:
            self._option["text"] += data

    def handle_endtag(self, tag):
        if tag == "form":
            self._in = False
        elif tag == "textarea":
            self._text_for = None
        elif tag == "option" and self._option is not None and self._select:
            value = self._option["value"] if self._option["value"] is not None else self._option["text"].strip()
            if self._option["selected"] or self._select not in self._chosen and self._select not in self.fields:
                self.fields[self._select] = value
            if self._option["selected"]:
                self._chosen.add(self._select)
            self._option = None
        elif tag == "select":
            self._select = None


class World:
    """Everything the examples share: clients per role, the database fingerprint."""

    def __init__(self, app, database_url: str, smtp: SmtpServer):
        self.app, self.smtp = app, smtp
        self.engine = sa.create_engine(database_url)
        from mailing.extensions import db

        with app.app_context():
            self.tables = [t.name for t in db.metadata.sorted_tables]
        quote_id = self.engine.dialect.identifier_preparer.quote
        self.count_sql = sa.text(" UNION ALL ".join(
            f"SELECT '{t}' AS t, COUNT(*) AS n FROM {quote_id(t)}" for t in self.tables))
        self.clients: dict[str, object] = {}
        self.tokens: dict[str, str] = {}
        self.api: dict[str, str] = {}
        self.users: dict[str, tuple[int, str]] = {}
        self.protected_users: set[int] = set()
        self.maildir = ""
        self._forms: dict[tuple[str, str], dict[str, str]] = {}

    # the fingerprint a refused request must leave as it was
    def fingerprint(self):
        with self.engine.connect() as c:
            # Sorted: PostgreSQL may return a UNION ALL's rows in any order (a parallel append).
            counts = tuple(sorted(c.execute(self.count_sql).all()))
            statuses = tuple(c.execute(sa.text("SELECT id, status FROM issues ORDER BY id")).all())
        return counts, statuses

    def replenish(self, fingerprint) -> bool:
        """Deletes, clears and launches use the seeded data up; top it up (outside any
        example's before/after) so that later routes still reach their views."""
        counts = dict(fingerprint[0])
        drafts = sum(1 for _id, status in fingerprint[1] if status == "draft")
        low = (counts["contacts"] < 4 or counts["contact_lists"] < 2 or counts["senders"] < 1
               or counts["stop_entries"] < 3 or drafts < 2)
        if low:
            with self.app.app_context():
                _top_up()
        return low

    def ids(self, table: str) -> list[int]:
        with self.engine.connect() as c:
            return list(c.execute(sa.text(f"SELECT id FROM {table} ORDER BY id LIMIT 200")).scalars())

    def login(self, role: str) -> None:
        client = self.clients[role]
        email = self.users[role][1]
        page = client.get("/login")
        r = client.post("/login", data={"email": email, "password": PASSWORD, "csrf_token": csrf_from(page.data)})
        assert r.status_code == 302, (role, r.status_code, r.data[:500])
        self.tokens[role] = csrf_from(client.get("/profile").data)

    def still_logged_in(self, role: str) -> bool:
        return self.clients[role].get("/profile").status_code == 200

    def form_on_page(self, role: str, path: str) -> dict[str, str]:
        """The fields (with their current values) of the form that posts to `path`, found
        on `path` itself or the nearest page above it: what a browser would send."""
        key = (role, path)
        if key not in self._forms:
            found: dict[str, str] = {}
            parts = path.rstrip("/").split("/")
            for n in range(len(parts), 0, -1):
                page = "/".join(parts[:n]) or "/"
                r = self.clients[role].get(page)
                if r.status_code == 200 and r.mimetype == "text/html":
                    parser = _FormFields(path, page)
                    parser.feed(r.get_data(as_text=True))
                    if parser.found:
                        found = parser.fields
                        break
            self._forms[key] = found
        return dict(self._forms[key])

    def maildir_keys(self) -> list[str]:
        import mailbox

        return sorted(mailbox.Maildir(self.maildir, create=True).keys())


def _top_up() -> None:
    """A sender, a list of four fresh contacts, two drafts to it, and three entries in
    Blocked manually (two of them the new contacts', for the contact card's routes)."""
    from mailing import stoplists
    from mailing.extensions import db
    from mailing.models import Contact, ContactList, Issue, Sender, StopList, list_members

    k = next(counter)
    sender = db.session.scalar(sa.select(Sender).limit(1)) or Sender(name="Fuzz News", email=f"news{k}@fuzz.test")
    lst = ContactList(name=f"Fuzz readers {k}")
    db.session.add_all([sender, lst])
    db.session.flush()
    emails = [f"r{k}-{i}@example.org" for i in range(4)]
    db.session.execute(sa.insert(Contact), [{"email": e, "name": f"Reader {i}", "attributes": {}}
                                            for i, e in enumerate(emails)])
    ids = db.session.scalars(sa.select(Contact.id).where(Contact.email.in_(emails))).all()
    db.session.execute(sa.insert(list_members), [{"list_id": lst.id, "contact_id": i} for i in ids])
    body = '<p>Hello, {{ name }}</p><a href="{{ unsubscribe_url }}">u</a>'
    db.session.add_all([Issue(subject=f"Fuzz {k}-{i}", sender_id=sender.id, list_id=lst.id, body_html=body)
                        for i in range(2)])
    blocked = db.session.scalar(sa.select(StopList).where(StopList.code == "blocked"))
    db.session.commit()
    stoplists.add_pasted(blocked, f"{emails[0]}\n{emails[1]}\nblocked{k}@example.org", actor=None,
                         source="fuzz", region="RU")
    db.session.commit()


def _seed(app) -> dict:
    from mailing import lifecycle, stoplists
    from mailing import settings as app_settings
    from mailing.cli import create_user
    from mailing.extensions import db
    from mailing.models import (
        ApiToken,
        Contact,
        ContactImport,
        ContactList,
        Issue,
        Sender,
        StopList,
        User,
        list_members,
    )
    from mailing.stoplists import ensure_system_lists
    from mailing.views.api import token_hash

    out: dict = {"users": {}, "api": {}, "protected": set()}
    with app.app_context():
        ensure_system_lists()
        app_settings.put("launch_delay_seconds", 0)
        db.session.commit()
        for role in ROLES[:-1]:
            user, _pw = create_user(f"fuzz-{role}@test.local", role, PASSWORD)
            out["users"][role] = (user.id, user.email)
            api_user, _pw = create_user(f"fuzz-api-{role}@test.local", role, PASSWORD)
            token = f"obx_fuzz_{role}"
            db.session.add(ApiToken(user_id=api_user.id, name="fuzz", token_hash=token_hash(token)))
            out["api"][role] = token
            out["protected"].update({user.id, api_user.id})
        for i in range(3):  # users the admin routes may change, disable or demote
            create_user(f"fuzz-victim-{i}@test.local", "editor", PASSWORD)
        sender = Sender(name="Fuzz News", email="news@fuzz.test")
        lst = ContactList(name="Fuzz readers")
        db.session.add_all([sender, lst])
        db.session.flush()
        db.session.execute(sa.insert(Contact), [{"email": f"r{i}@example.org", "name": f"Reader {i}",
                                                 "attributes": {}} for i in range(6)])
        ids = db.session.scalars(sa.select(Contact.id)).all()
        db.session.execute(sa.insert(list_members), [{"list_id": lst.id, "contact_id": i} for i in ids])
        body = '<p>Hello, {{ name }}</p><a href="{{ unsubscribe_url }}">u</a>'
        issues = [Issue(subject=f"Fuzz {i}", sender_id=sender.id, list_id=lst.id, body_html=body)
                  for i in range(4)]
        db.session.add_all(issues)
        db.session.add(ContactImport(list_id=lst.id, path="/nonexistent.csv", filename="x.csv", size_bytes=0,
                                     rejected=[]))
        db.session.commit()
        editor = db.session.get(User, out["users"]["editor"][0])
        lifecycle.launch(issues[1].id, editor)  # deliveries for tokens, replies and reports
        lifecycle.launch(issues[2].id, editor, postpone=True)
        blocked = db.session.scalar(sa.select(StopList).where(StopList.code == "blocked"))
        stoplists.add_pasted(blocked, "blocked@example.org\nr5@example.org", actor=editor, source="fuzz",
                             region="RU")
        db.session.commit()
    return out


@contextlib.contextmanager
def _database(db_template):
    """A database of its own for the module (the shared template's copy)."""
    d = Path(tempfile.mkdtemp(prefix="outbox-fuzz-db-"))
    url = db_template.fresh(d)
    try:
        yield url
    finally:
        db_template.drop(url)
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def world(db_template, redis_url, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    smtp = SmtpServer()
    smtp.start()
    n = next(counter) % 4095 + 1
    with _database(db_template) as database_url, pytest.MonkeyPatch.context() as mp:
        values = {
            "DATABASE_URL": database_url, "REDIS_URL": f"{redis_url}?db={n}", "SMTP_URL": smtp.url,
            "SECRET_KEY": SECRET, "OUTBOX_INSTANCE": str(tmp / "instance"), "MAILDIR": str(tmp / "maildir"),
            "BASE_URL": "http://127.0.0.1:5999", "RQ_QUEUE": f"outbox-fuzz-{os.getpid()}-{n}",
            "SMTP_TIMEOUT": "5",
            # Fuzzing /login from one address is not an attack: throttling stays out of the way.
            "LOGIN_IP_LIMIT": "1000000", "LOGIN_ACCOUNT_LIMIT": "1000000",
        }
        for k, v in values.items():
            mp.setenv(k, v)
        redis.Redis.from_url(values["REDIS_URL"]).flushdb()
        from mailing import create_app

        app = create_app({"TESTING": True})
        seeded = _seed(app)
        w = World(app, database_url, smtp)
        w.users, w.api, w.protected_users = seeded["users"], seeded["api"], seeded["protected"]
        w.maildir = values["MAILDIR"]
        import mailbox

        mailbox.Maildir(w.maildir, create=True).add(mailbox.MaildirMessage(
            b"From: News <n@fuzz.test>\r\nTo: ann@example.org\r\nSubject: Caught\r\n"
            b"Content-Type: text/html; charset=utf-8\r\n\r\n<p>Hi</p>\r\n"))
        for i, role in enumerate(ROLES):
            client = app.test_client()
            client.environ_base["REMOTE_ADDR"] = f"10.0.0.{i + 1}"
            w.clients[role] = client
            if role == "anonymous":
                w.tokens[role] = csrf_from(client.get("/login").data)
            else:
                w.login(role)
        try:
            yield w
        finally:
            with app.app_context():
                from mailing.extensions import db

                db.session.remove()
                db.engine.dispose()
            w.engine.dispose()
            smtp.stop()
            if os.environ.get("FUZZ_STATS"):
                Path(os.environ["FUZZ_STATS"]).write_text(
                    "".join(f"{k} {v}\n" for k, v in sorted(STATS.items())))


# --- one example ----------------------------------------------------------------------

def _pick(data, pool: list, label: str):
    """A pool member chosen by an index, so a replayed example draws the same thing even
    when the pool grew in between."""
    i = data.draw(st.integers(0, 1000), label=label)
    return pool[i % len(pool)] if pool else 1


def _path_value(data, world: World, endpoint: str, arg: str, converter: str) -> str:
    if converter == "IntegerConverter":
        table = PATH_TABLES.get(arg) or ("stop_lists" if endpoint.startswith(("stoplists.", "api."))
                                         else "contact_lists")
        pool = world.ids(table)
        if table == "users":  # never the users the clients act as
            pool = [i for i in pool if i not in world.protected_users]
        if data.draw(st.integers(0, 9), label=f"{arg} kind") < 7:
            return str(_pick(data, pool, arg))
        value = data.draw(st.one_of(st.sampled_from(["0", str(2**31 - 1), str(2**31), str(2**63), str(10**20), "１", "٣", "²"]), nasty),
                          label=arg)
    elif arg == "token":
        from mailing.unsubscribe import make_token

        choice = data.draw(st.integers(0, 3), label="token kind")
        if choice < 2:
            value = make_token(SECRET.encode(), _pick(data, world.ids("deliveries"), "delivery"))
        else:
            value = data.draw(st.one_of(nasty, st.tuples(nasty, nasty).map(
                lambda t: f"{t[0]!s}.{t[1]!s}")), label="token")
    elif arg == "action":
        value = data.draw(st.sampled_from(ACTIONS), label="action") if data.draw(
            st.integers(0, 3), label="action kind") else data.draw(nasty, label="action")
    elif arg == "key" and data.draw(st.booleans(), label="real key"):
        value = str(_pick(data, world.maildir_keys(), "key"))
    elif arg == "filename":
        value = data.draw(st.one_of(st.sampled_from(["app.css", "app.js", "vendor/htmx.min.js"]), nasty),
                          label="filename")
    else:
        value = data.draw(nasty, label=arg)
    if isinstance(value, bytes):
        return quote(value, safe="")
    return quote(value, safe="") or "x"


def _query(data) -> str:
    pairs = data.draw(st.lists(st.tuples(st.one_of(st.sampled_from(QUERY_NAMES), texts), nasty), max_size=4),
                      label="query")
    return urlencode(pairs)  # percent-encoded ASCII; bytes values go through as raw octets


def _generic(name: str, unique: int) -> str:
    kind = FORM_FIELDS.get(name, "")
    value = BY_NAME.get(name) or BY_KIND.get(kind) or ("yes" if name in RAW_FIELDS else "Fuzz text")
    if name in ("email", "name", "subject"):  # unique, so that a create can succeed
        value = value.replace("fuzz@", f"fuzz{unique}@") if "@" in value else f"{value} {unique}"
    return value


def _form(data, world: World, role: str, path: str) -> tuple[list[tuple[str, object]], dict[str, tuple]]:
    """A form that is mostly valid (so the view gets past its first check) with a few
    fields dropped or replaced by something nasty: the real form of the page that posts
    here when there is one, else every field name the views read, with plausible values."""
    # What is drawn never depends on the database or the page (hypothesis replays a choice
    # sequence and must see the same draws): indices, mapped onto today's names afterwards.
    unique = data.draw(st.integers(0, 10**9), label="unique")
    id_picks = {name: data.draw(st.integers(0, 1000), label=name) for name in ID_FIELDS}
    drop_at = data.draw(st.one_of(st.just(set()), st.sets(st.integers(0, 63), max_size=2)), label="dropped")
    drawn = data.draw(st.one_of(st.just([]), st.lists(st.tuples(
        st.one_of(st.integers(0, 10**6), texts), nasty), min_size=1, max_size=3)), label="overrides")

    base: dict[str, object] = {k: v or (_generic(k, unique) if k in REQUIRED_BY_NAME else "")
                               for k, v in world.form_on_page(role, path).items()}
    if not base:
        for name in FORM_FIELDS:
            if name not in FILE_FIELDS:
                base[name] = _generic(name, unique)
        for name in RAW_FIELDS:
            base.setdefault(name, _generic(name, unique))
        for name, table in ID_FIELDS.items():
            pool = world.ids(table)
            base[name] = str(pool[id_picks[name] % len(pool)] if pool else 1)
        base.pop("List-Unsubscribe", None)  # a mail client's one-click: only when drawn below
    base.pop("csrf_token", None)  # drawn below
    keys = sorted(base)
    dropped = {keys[i % len(keys)] for i in drop_at} if keys else set()
    names = sorted(set(base) | RAW_FIELDS | set(FORM_FIELDS))
    overrides = [(names[k % len(names)] if isinstance(k, int) else k, v) for k, v in drawn]
    pairs: list[tuple[str, object]] = [(k, v) for k, v in base.items() if k not in dropped]
    replaced = {k for k, _ in overrides}
    pairs = [(k, v) for k, v in pairs if k not in replaced] + list(overrides)
    csrf = data.draw(st.sampled_from(["valid"] * 8 + ["missing", "garbled"]), label="csrf")
    if csrf == "valid":
        pairs.append(("csrf_token", world.tokens[role]))
    elif csrf == "garbled":
        pairs.append(("csrf_token", world.tokens[role][::-1]))
    files = {}
    if data.draw(st.booleans(), label="multipart"):
        for name in sorted(FILE_FIELDS):
            content = data.draw(st.one_of(
                st.binary(max_size=200),
                st.lists(st.one_of(st.sampled_from(["fuzz@example.org", "email,name", "a@b.c,Ann", ""]),
                                   texts), max_size=6).map(lambda rows: "\n".join(rows).encode()),
            ), label=f"{name} file")
            files[name] = (io.BytesIO(content), data.draw(st.sampled_from(["list.csv", "", "é.csv", "x"])))
    return pairs, files


def _send(data, world: World, role: str, method: str, rule: str, endpoint: str):
    path = rule
    for converter, _args, arg in _rule_args(rule):
        value = _path_value(data, world, endpoint, arg, converter)
        path = re.sub(r"<(?:[^:<>]+:)?" + re.escape(arg) + r">", lambda _m, v=value: v, path, count=1)
    query = _query(data)
    headers: dict[str, str] = {}
    client = world.clients[role]
    if data.draw(st.integers(0, 2), label="htmx") == 0:
        headers["HX-Request"] = "true"
    kwargs: dict = {"query_string": query, "headers": headers}
    if rule.startswith("/api/"):
        if role != "anonymous":
            headers["Authorization"] = f"Bearer {world.api[role]}"
        elif data.draw(st.booleans(), label="garbage token"):
            headers["Authorization"] = "Bearer " + data.draw(texts.filter(lambda t: t.isprintable()
                                                                           and t.isascii()), label="token")
        if method != "GET":
            how = data.draw(st.sampled_from(["json", "json", "raw", "none"]), label="body kind")
            if how == "json":
                import json as _json

                kwargs["data"] = _json.dumps(data.draw(json_bodies, label="json"))
                kwargs["content_type"] = "application/json"
            elif how == "raw":
                kwargs["data"] = data.draw(st.binary(max_size=300), label="raw body")
                kwargs["content_type"] = data.draw(st.sampled_from(
                    ["application/json", "message/rfc822", "text/plain", "application/x-www-form-urlencoded"]))
    elif method != "GET":
        pairs, files = _form(data, world, role, path)
        if files:
            form: dict = {}
            for k, v in pairs:
                form.setdefault(k, []).append(v.decode("latin-1") if isinstance(v, bytes) else v)
            form.update(files)
            kwargs["data"], kwargs["content_type"] = form, "multipart/form-data"
        else:
            kwargs["data"] = urlencode(pairs)
            kwargs["content_type"] = "application/x-www-form-urlencoded"
    return client.open(path, method=method, **kwargs), path


def _rule_args(rule: str) -> list[tuple[str, str, str]]:
    kinds = {"int": "IntegerConverter", "path": "PathConverter", "string": "UnicodeConverter"}
    out = []
    for m in re.finditer(r"<(?:([a-z]+)(?:\([^)]*\))?:)?([a-zA-Z_]+)>", rule):
        out.append((kinds.get(m.group(1) or "string", "UnicodeConverter"), "", m.group(2)))
    return out


def _allowed(world: World, endpoint: str, rule: str, role: str) -> bool:
    view = world.app.view_functions[endpoint]
    allowed = getattr(view, "allowed_roles", None)
    if role == "anonymous":
        return allowed is None and (endpoint.startswith(("auth.login", "unsubscribe.", "static"))
                                    or endpoint == "api.openapi")
    return allowed is None or role in allowed


def _fuzz(world: World, method: str, rule: str, endpoint: str, role: str, examples: int) -> None:
    @settings(max_examples=examples, deadline=None, database=None, phases=[Phase.generate, Phase.shrink],
              print_blob=True, suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def example(data):
        before = world.fingerprint()
        if world.replenish(before):
            before = world.fingerprint()
        resp, path = _send(data, world, role, method, rule, endpoint)
        status = resp.status_code
        body = resp.get_data()
        STATS[(endpoint, method, role, status)] += 1
        assert status < 500, f"{method} {path} as {role}: {status}\n{body[:2000]!r}"
        if 400 <= status < 500:
            assert world.fingerprint() == before, \
                f"{method} {path} as {role} answered {status} but changed the database"
            if rule.startswith("/api/"):
                payload = resp.get_json(silent=True)
                assert isinstance(payload, dict) and {"error", "message"} <= set(payload), \
                    f"{method} {path}: an API error without JSON error and message: {body[:300]!r}"
        if role != "anonymous" and (endpoint.startswith("auth.") or "user" in endpoint) \
                and not world.still_logged_in(role):
            world.login(role)  # logout or a password change ended this client's session

    example()


@pytest.mark.parametrize("method,rule,endpoint", ROUTES, ids=[f"{m} {r}" for m, r, _ in ROUTES])
def test_random_input_never_500_and_refusals_write_nothing(world, method, rule, endpoint):
    allowed = [r for r in ROLES if _allowed(world, endpoint, rule, r)]
    for role in ROLES:
        examples = max(3, PER_ROUTE // max(len(allowed), 1)) if role in allowed else REFUSED_EXAMPLES
        _fuzz(world, method, rule, endpoint, role, examples)
