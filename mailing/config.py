"""Configuration: embedded defaults so that `make run` needs nothing, overridable by environment."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from .files import write_once


def _secret_key(instance: Path) -> str:
    """SECRET_KEY from the environment, else one generated once into instance/."""
    if os.environ.get("SECRET_KEY"):
        return os.environ["SECRET_KEY"]
    # Written 0600 from its first byte and published atomically: two processes starting
    # at once (web and worker) agree on one key (see files.write_once).
    return write_once(instance / "secret_key", secrets.token_hex(32))


def _flag(value: str | None, default: bool) -> bool:
    """An on/off environment setting; unset or empty keeps the default."""
    if not value:
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


def load(instance: Path) -> dict:
    """The configuration in force, read from the environment with defaults."""
    env = os.environ.get
    db_url = env("DATABASE_URL") or f"sqlite:///{instance / 'outbox.sqlite3'}"
    base_url = (env("BASE_URL") or f"http://127.0.0.1:{env('PORT') or 5000}").rstrip("/")
    return {
        "SECRET_KEY": _secret_key(instance),
        "SQLALCHEMY_DATABASE_URI": db_url,
        # Unset means: the launcher runs redis-server on a socket in instance/.
        "REDIS_URL": env("REDIS_URL") or f"unix://{instance / 'redis.sock'}",
        # Unset means: the launcher runs the sandbox catch-all writing to instance/maildir.
        "SMTP_URL": env("SMTP_URL") or "",
        "MAILDIR": env("MAILDIR") or str(instance / "maildir"),
        "BASE_URL": base_url,
        "RQ_QUEUE": env("RQ_QUEUE") or "outbox",
        # Sending engine knobs (admin settings override some of them at run time).
        "SEND_CONCURRENCY": int(env("SEND_CONCURRENCY") or 8),
        "SEND_CHUNK": int(env("SEND_CHUNK") or 200),
        "SEND_JOBS": int(env("SEND_JOBS") or 2),
        "LEASE_SECONDS": int(env("LEASE_SECONDS") or 20),
        "MAX_ATTEMPTS": int(env("MAX_ATTEMPTS") or 5),
        "RETRY_BASE_SECONDS": float(env("RETRY_BASE_SECONDS") or 60),
        "RELAY_ERROR_LIMIT": int(env("RELAY_ERROR_LIMIT") or 50),
        # Seconds an unreachable relay is retried (with back-off) before the issue is
        # interrupted: a relay restart or a network blip should not need a person.
        "RELAY_RETRY_WINDOW": float(env("RELAY_RETRY_WINDOW") or 120),
        "SMTP_TIMEOUT": float(env("SMTP_TIMEOUT") or 30),
        # A Maildir where a feedback loop drops ARF complaint reports (optional).
        "COMPLAINTS_MAILDIR": env("COMPLAINTS_MAILDIR") or "",
        # Late bounces (mailing/bounces.py): the domain of the VERP return paths (its MX
        # points at `flask bounces serve`), a Maildir the maintenance loop reads, and
        # the largest report kept (bigger ones are quarantined).
        "BOUNCE_DOMAIN": (env("BOUNCE_DOMAIN") or "").strip().lower(),
        "BOUNCES_MAILDIR": env("BOUNCES_MAILDIR") or "",
        "BOUNCE_MAX_BYTES": int(env("BOUNCE_MAX_BYTES") or 1_048_576),
        "TEST_CLOCK": env("OUTBOX_TEST_CLOCK") == "1",
        "DEFAULT_PHONE_REGION": env("DEFAULT_PHONE_REGION") or "RU",
        "BABEL_DEFAULT_LOCALE": "en",
        "LANGUAGES": ["en", "ru"],
        # Request bodies larger than this are refused (413) from the Content-Length, before
        # they are read; the import routes (mailing/uploads.py) take up to MAX_IMPORT_BYTES.
        "MAX_CONTENT_LENGTH": int(env("MAX_REQUEST_BYTES") or 2 * 1024 * 1024),
        "MAX_IMPORT_BYTES": int(env("MAX_IMPORT_BYTES") or 100 * 1024 * 1024),
        # Stop-list CSV files larger than this are imported by an RQ job with a progress bar.
        "STOPLIST_JOB_BYTES": int(env("STOPLIST_JOB_BYTES") or 1024 * 1024),
        "WTF_CSRF_TIME_LIMIT": None,
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        # Secure cookie (and HSTS, see security.py) when the app is served over https.
        "SESSION_COOKIE_SECURE": _flag(env("SESSION_COOKIE_SECURE"), default=base_url.lower().startswith("https://")),
        # Proxies in front of the app whose X-Forwarded-For/-Proto are trusted (0: none).
        "PROXY_HOPS": int(env("PROXY_HOPS") or 0),
        # Login throttling (mailing/accounts.py): failures allowed per account and per client
        # address within the window, then a wait that doubles with each further failure.
        "LOGIN_ACCOUNT_LIMIT": int(env("LOGIN_ACCOUNT_LIMIT") or 5),
        "LOGIN_IP_LIMIT": int(env("LOGIN_IP_LIMIT") or 50),
        "LOGIN_WINDOW_SECONDS": int(env("LOGIN_WINDOW_SECONDS") or 900),
        "LOGIN_LOCK_SECONDS": int(env("LOGIN_LOCK_SECONDS") or 60),
        "LOGIN_LOCK_MAX_SECONDS": int(env("LOGIN_LOCK_MAX_SECONDS") or 900),
        # Webhooks (mailing/webhooks.py): the waits (seconds) between retries of a failing
        # endpoint (the last one repeats until it answers or is switched off), the POST
        # timeout, and whether private and loopback addresses may be endpoints (off: an
        # admin's URL must not reach the services beside Outbox; tests switch it on).
        "WEBHOOK_RETRY_INTERVALS": [int(x) for x in (env("WEBHOOK_RETRY_INTERVALS")
                                                     or "10,30,60,300,900,1800,3600").split(",") if x.strip()],
        "WEBHOOK_TIMEOUT": float(env("WEBHOOK_TIMEOUT") or 10),
        "WEBHOOK_ALLOW_PRIVATE": _flag(env("WEBHOOK_ALLOW_PRIVATE"), default=False),
    }
