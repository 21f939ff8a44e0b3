"""Named queries, beside the data they touch.

Each module holds the statements on one kind of row (deliveries, stop-lists,
issues, contacts). Each statement is named for what it answers and says why it
is shaped the way it is (which index it walks, why it is one statement). Read
helpers do not commit; the use case that calls them owns the transaction.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from ..extensions import db


def among(column: Any, values: list[Any]) -> Any:
    """`column IN values` for a chunk of hundreds. On PostgreSQL the values go as one
    array parameter (`= ANY(:values)`): the statement text stays the same whatever the
    count, so psycopg neither re-parses a query of hundreds of placeholders nor
    SQLAlchemy renders them, and the server reuses its prepared plan. SQLite takes
    the plain IN list."""
    if db.engine.dialect.name == "postgresql":
        return column == sa.any_(sa.bindparam(None, list(values), type_=postgresql.ARRAY(column.type)))
    return column.in_(list(values))


def dialect_insert(table: Any) -> Any:
    """An INSERT with the database's own ON CONFLICT clause (PostgreSQL's or SQLite's)."""
    if db.engine.dialect.name == "postgresql":
        return postgresql.insert(table)
    from sqlalchemy.dialects import sqlite

    return sqlite.insert(table)
