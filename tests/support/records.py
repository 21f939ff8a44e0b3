"""Reading what the app wrote, as a test checks it: statuses, deliveries, the journal, and
the CSRF token of a rendered page. Each read commits before and after, so a test never
holds a transaction a worker's write would wait on (SQLite)."""

from __future__ import annotations

import re

import sqlalchemy as sa

from mailing.extensions import db
from mailing.models import Delivery, Issue, JournalEvent

from .base import wait_for


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
