"""Extensions, created once and bound to the app in create_app()."""

from __future__ import annotations

import sqlalchemy as sa
from flask_babel import Babel
from flask_login import LoginManager
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_wtf.csrf import CSRFProtect
from htmx_flask import Htmx
from sqlalchemy.orm import DeclarativeBase

# Alembic needs named constraints to alter tables on SQLite.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


# Objects keep their loaded values after commit: reading one later must not open a
# new transaction (on SQLite every transaction takes the write lock; see create_app).
db = SQLAlchemy(model_class=Base, session_options={"expire_on_commit": False})
migrate = Migrate()
login_manager = LoginManager()
csrf = CSRFProtect()
babel = Babel()
htmx = Htmx()


def checkpoint_wal() -> None:
    """SQLite: copy the write-ahead log into the database file now. Called by jobs that
    write a lot (imports), so the WAL never grows to the auto-checkpoint size and a web
    request's commit never pays for copying and syncing megabytes of someone else's pages."""
    if db.engine.dialect.name != "sqlite":
        return
    with db.engine.connect() as conn:
        # The raw connection is in autocommit mode: a checkpoint cannot run in a transaction.
        conn.connection.driver_connection.execute("PRAGMA wal_checkpoint(PASSIVE)")
