"""The address-identity migration on a database that holds case and IDN duplicates:
merged into the oldest contact, nothing lost, and the journal says what was merged."""

import json
import os
import subprocess
import sys
from datetime import datetime

import sqlalchemy as sa

from .support import BACKEND, ROOT, SECRET, counter

BEFORE = "826ef1d11025"


def _upgrade(url: str, instance, target: str = "head") -> None:
    env = dict(os.environ, DATABASE_URL=url, OUTBOX_INSTANCE=str(instance), SECRET_KEY=SECRET,
               REDIS_URL="redis://127.0.0.1:1", FLASK_APP="app.py")
    subprocess.run([sys.executable, "-m", "flask", "db", "upgrade", target], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _empty_database(request, tmp_path) -> str:
    if BACKEND == "postgresql":
        template = request.getfixturevalue("db_template")
        base, admin = template.pg_base, template.admin
        name = f"mig{os.getpid()}_{next(counter)}"
        with admin.connect() as c:
            c.execute(sa.text(f"CREATE DATABASE {name}"))
        request.addfinalizer(lambda: admin.connect().execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
        return f"{base}/{name}"
    return f"sqlite:///{tmp_path / 'old.sqlite3'}"


def test_case_duplicates_are_merged_into_the_oldest_contact(request, tmp_path):
    url = _empty_database(request, tmp_path)
    _upgrade(url, tmp_path / "instance", BEFORE)
    engine = sa.create_engine(url)
    t = [datetime(2026, 1, d) for d in range(1, 8)]
    with engine.begin() as c:
        def contact(email, when, name="", phone=None, attrs=None):
            return c.execute(sa.text(
                "INSERT INTO contacts (email, phone, name, attributes, created_at) "
                "VALUES (:e, :p, :n, :a, :t) RETURNING id"),
                {"e": email, "p": phone, "n": name, "a": json.dumps(attrs or {}), "t": when}).scalar_one()

        ann_new = contact("ann@example.org", t[2], "", "+79123456789", {"plan": "gold", "city": "Rome"})
        ann_old = contact("Ann@Example.org", t[0], "Ann", None, {"city": "Paris"})
        ann_newest = contact("ANN@EXAMPLE.ORG", t[3], "ANN")
        ivan = contact("ivan@пример.рф", t[1], "Иван")
        ivan_a = contact("IVAN@xn--e1afmkfd.xn--p1ai", t[4], "Ivan")
        solo = contact("solo@example.org", t[5], "Solo")
        lists = [c.execute(sa.text("INSERT INTO contact_lists (name, created_at) VALUES (:n, :t) RETURNING id"),
                           {"n": n, "t": t[0]}).scalar_one() for n in ("A", "B")]
        for list_id, contact_id in [(lists[0], ann_old), (lists[0], ann_new), (lists[1], ann_new),
                                    (lists[1], ivan_a), (lists[0], solo)]:
            c.execute(sa.text("INSERT INTO list_members (list_id, contact_id) VALUES (:l, :c)"),
                      {"l": list_id, "c": contact_id})
        issue = c.execute(sa.text(
            "INSERT INTO issues (subject, body_html, status, created_at, updated_at, released, settings, total, "
            "sent_count, bounced_count, failed_count, suppressed_count, stopped_count) VALUES "
            "('Old issue', 'x', 'sent', :t, :t, false, '{}', 3, 3, 0, 0, 0, 0) RETURNING id"), {"t": t[0]}).scalar_one()
        for contact_id, address in [(ann_old, "Ann@Example.org"), (ann_new, "ann@example.org"),
                                    (ivan_a, "IVAN@xn--e1afmkfd.xn--p1ai")]:
            c.execute(sa.text("INSERT INTO deliveries (issue_id, contact_id, email, name, state, attempts) "
                              "VALUES (:i, :c, :e, '', 'sent', 1)"), {"i": issue, "c": contact_id, "e": address})
        stop = c.execute(sa.text("INSERT INTO stop_lists (code, name, created_at) VALUES ('blocked', 'Blocked', :t) "
                                 "RETURNING id"), {"t": t[0]}).scalar_one()
        for value in ("Ann@example.org", "ann@example.org", "IVAN@ПРИМЕР.РФ"):
            c.execute(sa.text("INSERT INTO stop_entries (list_id, kind, value, source, created_at) "
                              "VALUES (:l, 'email', :v, 'ui', :t)"), {"l": stop, "v": value, "t": t[0]})
    engine.dispose()

    _upgrade(url, tmp_path / "instance")
    engine = sa.create_engine(url)
    with engine.connect() as c:
        people = c.execute(sa.text("SELECT id, email, email_key, name, phone, attributes FROM contacts ORDER BY id")).all()
        by_id = {p.id: p for p in people}
        assert set(by_id) == {ann_old, ivan, solo}, "the oldest of each person is kept"
        ann = by_id[ann_old]
        attrs = ann.attributes if isinstance(ann.attributes, dict) else json.loads(ann.attributes)
        assert (ann.email, ann.email_key, ann.name, ann.phone) == \
            ("Ann@Example.org", "ann@example.org", "Ann", "+79123456789")
        assert attrs == {"city": "Paris", "plan": "gold"}, "the kept contact's fields win; missing ones move over"
        assert by_id[ivan].email_key == "ivan@xn--e1afmkfd.xn--p1ai"
        members = set(c.execute(sa.text("SELECT list_id, contact_id FROM list_members")).all())
        assert members == {(lists[0], ann_old), (lists[1], ann_old), (lists[1], ivan), (lists[0], solo)}
        deliveries = c.execute(sa.text("SELECT email, email_key, contact_id FROM deliveries ORDER BY id")).all()
        assert [(d.email, d.email_key) for d in deliveries] == [
            ("Ann@Example.org", "ann@example.org"), ("ann@example.org", "ann@example.org"),
            ("IVAN@xn--e1afmkfd.xn--p1ai", "ivan@xn--e1afmkfd.xn--p1ai")], "history is kept as sent"
        assert [d.contact_id for d in deliveries] == [ann_old, None, ivan]
        entries = sorted(c.execute(sa.text("SELECT value FROM stop_entries")).scalars())
        assert entries == ["ann@example.org", "ivan@xn--e1afmkfd.xn--p1ai"]
        events = c.execute(sa.text("SELECT event, reason, details FROM journal_events ORDER BY id")).all()
        merged = [json.loads(e.details) if isinstance(e.details, str) else e.details for e in events
                  if e.event == "contacts_merged"]
        assert sorted((m["kept"], sorted(m["merged"])) for m in merged) == sorted(
            [(ann_old, sorted([ann_new, ann_newest])), (ivan, [ivan_a])])
        assert any("ANN@EXAMPLE.ORG" in m["merged_emails"] for m in merged)
        fields = set(c.execute(sa.text("SELECT name FROM contact_fields")).scalars())
        assert fields == {"city", "plan"}
    engine.dispose()
