"""Models: passwords, progress arithmetic, constraints."""

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from mailing.extensions import db
from mailing.models import Delivery, Issue, User


def test_passwords_are_hashed(ctx):
    user = User(email="a@example.org", role="editor")
    user.set_password("s3cret!")
    assert user.password_hash != "s3cret!" and "s3cret" not in user.password_hash
    assert user.check_password("s3cret!") and not user.check_password("s3cret")


def test_issue_progress_arithmetic():
    issue = Issue(subject="x", total=200, sent_count=120, bounced_count=5, failed_count=3,
                  suppressed_count=10, stopped_count=2)
    assert issue.done == 140 and issue.remaining == 60
    assert issue.sendable == 190 and issue.percent == 68, "stop-listed recipients are not progress"
    assert Issue(subject="z", total=10, sent_count=0, bounced_count=0, failed_count=0,
                 suppressed_count=10, stopped_count=0).percent == 100
    assert Issue(subject="y", total=0, sent_count=0, bounced_count=0, failed_count=0,
                 suppressed_count=0, stopped_count=0).percent == 100


def test_one_delivery_per_recipient_per_issue(ctx, make_issue):
    issue_id = make_issue(1)
    contact_id = db.session.scalar(sa.text("SELECT id FROM contacts LIMIT 1"))
    db.session.add(Delivery(issue_id=issue_id, contact_id=contact_id, email="a@example.org"))
    db.session.commit()
    db.session.add(Delivery(issue_id=issue_id, contact_id=contact_id, email="a@example.org"))
    with pytest.raises(IntegrityError):
        db.session.commit()
    db.session.rollback()


def test_constraints_are_named(ctx):
    names = [c.name for t in db.metadata.tables.values() for c in t.constraints]
    assert all(names), "Alembic on SQLite needs every constraint named"
