"""Pooled database connections the server has dropped are replaced, unseen by requests."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from mailing.extensions import db

from .support import BACKEND

pytestmark = pytest.mark.skipif(BACKEND != "postgresql", reason="SQLite has no server to drop connections")


def _terminate_others(url: str) -> int:
    """Ask the server to end every other connection to this database (a restart, as the
    pool sees it) and wait until they are gone (ending is asynchronous); how many ended."""
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as c:
            pids = list(c.execute(sa.text(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND backend_type = 'client backend'")).scalars())
            for pid in pids:
                c.execute(sa.text("SELECT pg_terminate_backend(:pid, 5000)"), {"pid": pid})
            return len(pids)
    finally:
        admin.dispose()


def test_a_connection_the_server_ended_is_replaced_on_checkout(ctx, client, login, database_url):
    login("support")
    assert client.get("/").status_code == 200  # the pool now holds a live connection
    before = db.session.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
    db.session.commit()
    assert _terminate_others(database_url) >= 1
    # The next checkout finds the ended connection, drops it and opens another.
    after = db.session.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
    db.session.commit()
    assert after != before
    assert _terminate_others(database_url) >= 1
    page = client.get("/")
    assert page.status_code == 200 and b"Outgoing" in page.data
