"""Outbox: send email issues and keep them under control while they go out."""

from __future__ import annotations

import os
import select
import sqlite3
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from flask import Flask, has_request_context, request, session
from flask_login import current_user

from .extensions import babel, csrf, db, htmx, login_manager, migrate


def _locale() -> str | None:
    if not has_request_context():
        return None
    if current_user and current_user.is_authenticated and current_user.locale:
        return current_user.locale
    if session.get("locale") in ("en", "ru"):  # the header's switch, before signing in
        return session["locale"]
    return request.accept_languages.best_match(["en", "ru"]) or "en"


def _time_zone() -> str | None:
    """Times are shown in the user's zone (profile; the browser's at first sign-in)."""
    if has_request_context() and current_user and current_user.is_authenticated:
        return current_user.time_zone or None
    return None


def _sqlite_setup(app: Flask) -> None:
    """SQLite: WAL, a busy timeout, and BEGIN IMMEDIATE for anything that may write, so
    that a transaction that reads then writes never fails on a snapshot another writer
    moved. GET requests only read."""
    if not app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
        return
    with app.app_context():
        engine = db.engine

        @sa.event.listens_for(engine, "connect")
        def _connect(dbapi_conn: Any, _rec: Any) -> None:
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA cache_size=-32768")  # 32 MB: index inserts of big launches stay in memory
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @sa.event.listens_for(engine, "begin")
        def _begin(conn: Any) -> None:
            # Pages that only read (GET) take no write lock, so polling never queues
            # behind the engine; everything else reserves the lock up front.
            if has_request_context() and request.method in ("GET", "HEAD"):
                conn.exec_driver_sql("BEGIN")
            else:
                _begin_immediate(conn.connection.driver_connection)


def _postgresql_setup(app: Flask) -> None:
    """PostgreSQL: a pooled connection the server has closed (a restart, an idle timeout)
    is dropped when it is checked out, and the pool opens another: the request never
    sees the error. The check is one poll of the socket: a connection the server ended
    is readable (its goodbye, then EOF), an idle live one is not. SQLAlchemy's
    `pool_pre_ping` asks the same with a `SELECT 1` round trip on every checkout, which
    costs a progress poll a fifth of its time."""
    if not app.config["SQLALCHEMY_DATABASE_URI"].startswith("postgresql"):
        return
    with app.app_context():
        engine = db.engine

        @sa.event.listens_for(engine, "checkout")
        def _checkout(dbapi_conn: Any, _rec: Any, _proxy: Any) -> None:
            if dbapi_conn.closed or select.select([dbapi_conn.fileno()], [], [], 0)[0]:
                raise sa.exc.DisconnectionError("the server closed this connection")


def _begin_immediate(raw: Any, patience: float = 30.0) -> None:
    """Take SQLite's write lock, asking again every 2 ms. SQLite's own busy handler backs
    off to 100 ms between tries, so a writer that releases the lock and takes it again
    soon after (an import committing chunk after chunk) can starve a web request for
    seconds; asking often, the request gets in at the first gap."""
    raw.execute("PRAGMA busy_timeout=0")
    try:
        deadline = time.monotonic() + patience
        while True:
            try:
                raw.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.002)
    finally:
        raw.execute("PRAGMA busy_timeout=30000")


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__, instance_relative_config=True,
                instance_path=os.environ.get("OUTBOX_INSTANCE") or None)
    instance = Path(app.instance_path)
    from . import config, files

    # instance/ holds the database, the secret key and uploaded contact files: this user only.
    files.private_dir(instance)

    app.config.update(config.load(instance))
    if test_config:
        app.config.update(test_config)
    from . import redact

    redact.remember(app.config)  # relay/database/Redis passwords never reach a page or a log
    redact.install_log_redaction()
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("postgresql"):
        # No session waits for a lock forever, and none sits idle inside a transaction
        # holding one: a stuck process fails loudly and the maintenance loop moves on.
        app.config.setdefault("SQLALCHEMY_ENGINE_OPTIONS", {
            "connect_args": {"options": "-c lock_timeout=20s -c idle_in_transaction_session_timeout=300s"},
        })
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
        app.config["SQLALCHEMY_ENGINE_OPTIONS"] = {"connect_args": {"timeout": 30}}
        # Created 0600 before SQLite first opens it (by the app or by `flask db upgrade`).
        files.private_sqlite(app.config["SQLALCHEMY_DATABASE_URI"], instance)

    db.init_app(app)
    from . import uploads

    uploads.init_app(app)  # before CSRF: an oversized body is refused before anything reads it
    migrate.init_app(app, db, directory=str(Path(__file__).parent.parent / "migrations"))
    login_manager.init_app(app)
    login_manager.login_view = "auth.login"
    csrf.init_app(app)
    babel.init_app(app, locale_selector=_locale, timezone_selector=_time_zone,
                   default_translation_directories=str(Path(__file__).parent / "translations"))
    htmx.init_app(app)
    _sqlite_setup(app)
    _postgresql_setup(app)

    from . import models  # noqa: F401  (tables for migrations)
    from .views import register

    register(app)
    from .security import init_security

    init_security(app)
    from .cli import register_cli

    register_cli(app)
    return app
