"""Configuration: embedded defaults so that `make run` needs nothing, overridable by environment."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def _secret_key(instance: Path) -> str:
    """SECRET_KEY from the environment, else one generated once into instance/."""
    if os.environ.get("SECRET_KEY"):
        return os.environ["SECRET_KEY"]
    path = instance / "secret_key"
    if not path.exists():
        instance.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    return path.read_text().strip()


def load(instance: Path) -> dict:
    """The configuration in force, read from the environment with defaults."""
    env = os.environ.get
    db_url = env("DATABASE_URL") or f"sqlite:///{instance / 'outbox.sqlite3'}"
    return {
        "SECRET_KEY": _secret_key(instance),
        "SQLALCHEMY_DATABASE_URI": db_url,
        # Unset means: the launcher runs redis-server on a socket in instance/.
        "REDIS_URL": env("REDIS_URL") or f"unix://{instance / 'redis.sock'}",
        # Unset means: the launcher runs the sandbox catch-all writing to instance/maildir.
        "SMTP_URL": env("SMTP_URL") or "",
        "MAILDIR": env("MAILDIR") or str(instance / "maildir"),
        "BASE_URL": (env("BASE_URL") or f"http://127.0.0.1:{env('PORT') or 5000}").rstrip("/"),
        "RQ_QUEUE": env("RQ_QUEUE") or "outbox",
        # Sending engine knobs (admin settings override some of them at run time).
        "SEND_CONCURRENCY": int(env("SEND_CONCURRENCY") or 8),
        "SEND_CHUNK": int(env("SEND_CHUNK") or 200),
        "SEND_JOBS": int(env("SEND_JOBS") or 2),
        "LEASE_SECONDS": int(env("LEASE_SECONDS") or 20),
        "MAX_ATTEMPTS": int(env("MAX_ATTEMPTS") or 5),
        "RETRY_BASE_SECONDS": float(env("RETRY_BASE_SECONDS") or 60),
        "RELAY_ERROR_LIMIT": int(env("RELAY_ERROR_LIMIT") or 50),
        "SMTP_TIMEOUT": float(env("SMTP_TIMEOUT") or 30),
        # A Maildir where a feedback loop drops ARF complaint reports (optional).
        "COMPLAINTS_MAILDIR": env("COMPLAINTS_MAILDIR") or "",
        "TEST_CLOCK": env("OUTBOX_TEST_CLOCK") == "1",
        "DEFAULT_PHONE_REGION": env("DEFAULT_PHONE_REGION") or "RU",
        "BABEL_DEFAULT_LOCALE": "en",
        "LANGUAGES": ["en", "ru"],
        "WTF_CSRF_TIME_LIMIT": None,
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
    }
