"""Reading what the app wrote, as a test checks it: statuses, deliveries, the journal, and
the CSRF token of a rendered page. Each read commits before and after, so a test never
holds a transaction a worker's write would wait on (SQLite)."""

from __future__ import annotations

import re

import sqlalchemy as sa

from mailing.extensions import db
from mailing.models import Contact, ContactList, Delivery, Issue, JournalEvent, Sender, list_members

from .base import counter, wait_for


def csrf_from(html: bytes | str) -> str:
    text = html.decode() if isinstance(html, bytes) else html
    m = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', text) or \
        re.search(r'"X-CSRFToken": "([^"]+)"', text)
    assert m, "no CSRF token on the page"
    return m.group(1)


def issue_status(issue_id: int) -> str:
    db.session.commit()
    status = db.session.execute(sa.select(Issue.status).where(Issue.id == issue_id)).scalar_one()
    db.session.commit()
    return status


def wait_status(issue_id: int, wanted, timeout: float = 60.0) -> str:
    wanted = {wanted} if isinstance(wanted, str) else set(wanted)
    return wait_for(lambda: (s := issue_status(issue_id)) in wanted and s, timeout,
                    what=f"issue {issue_id} to reach {wanted}")


def deliveries_of(issue_id: int) -> list:
    """Plain rows, read and the transaction closed (SQLite writers must not wait on a test)."""
    db.session.commit()
    rows = db.session.execute(sa.select(Delivery.__table__).where(Delivery.issue_id == issue_id)
                              .order_by(Delivery.id)).all()
    db.session.commit()
    return rows


def issue_row(issue_id: int):
    db.session.commit()
    row = db.session.execute(sa.select(Issue.__table__).where(Issue.id == issue_id)).one()
    db.session.commit()
    return row


def journal_of(issue_id: int) -> list:
    db.session.commit()
    rows = db.session.execute(sa.select(JournalEvent.__table__).where(JournalEvent.issue_id == issue_id)
                              .order_by(JournalEvent.id)).all()
    db.session.commit()
    return rows


def create_issue(n: int = 10, names=None, subject: str = "Monthly news", body: str | None = None,
                 status_free: bool = True, emails=None) -> int:
    """A draft issue to `n` new contacts of a new list from a new sender (names default to
    ascii and non-ascii in turn); its id. Needs an app context."""
    k = next(counter)
    sender = Sender(name="Outbox News", email=f"news{k}@outbox.test")
    lst = ContactList(name=f"list {k}")
    db.session.add_all([sender, lst])
    db.session.flush()
    rows = []
    for i in range(n):
        email = emails[i] if emails else f"r{k}-{i:06d}@example.org"
        name = names[i % len(names)] if names else ("Анна Иванова" if i % 2 else f"Reader {i}")
        rows.append({"email": email, "name": name, "attributes": {}})
    if rows:
        db.session.execute(sa.insert(Contact), rows)
        ids = db.session.scalars(sa.select(Contact.id).where(Contact.email.in_([r["email"] for r in rows])))
        db.session.execute(sa.insert(list_members), [{"list_id": lst.id, "contact_id": i} for i in ids])
    issue = Issue(subject=subject, sender_id=sender.id, list_id=lst.id,
                  body_html=body or '<p>Hello, {{ name }} ({{ email }})</p><a href="{{ unsubscribe_url }}">u</a>')
    db.session.add(issue)
    db.session.commit()
    return issue.id
