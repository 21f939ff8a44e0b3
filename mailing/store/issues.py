"""Issue-row queries the engine runs many times a second: each reads one row by its
primary key and nothing else."""

from __future__ import annotations

import sqlalchemy as sa

from ..extensions import db
from ..models import Issue

issues = Issue.__table__


def status_of(issue_id: int) -> str | None:
    """The status as committed now (not the session's cached object)."""
    return db.session.execute(sa.select(issues.c.status).where(issues.c.id == issue_id)).scalar_one_or_none()


def done_count(issue_id: int) -> int:
    """Recipients with a final state, from the counters `record` moves (no count over
    the deliveries)."""
    c = issues.c
    return db.session.execute(
        sa.select(c.sent_count + c.bounced_count + c.failed_count + c.suppressed_count + c.stopped_count)
        .where(c.id == issue_id)).scalar_one()
