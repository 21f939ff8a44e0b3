"""Accounts: login throttling, password checks and rules, and the admin's user changes.

Throttling lives in Redis (shared by every web process): failures are counted per account
(by a hash of the typed address, so unknown addresses are throttled exactly like real ones)
and per client address; past the limit a wait starts that doubles with every further failure.
A login for an unknown address still checks a password hash, so the answer takes as long as
for a real account and timing tells nobody which addresses have accounts.

Sessions end through `User.session_version` (part of every session cookie, checked on each
request): logout, a password change, disabling and "sign out everywhere" raise it.
"""

from __future__ import annotations

import hashlib
import logging
import math
from typing import Any

import redis
import sqlalchemy as sa
from flask import current_app
from flask_babel import gettext as _
from werkzeug.security import check_password_hash, generate_password_hash

from .enums import Role
from .extensions import db
from .models import ApiToken, User, utcnow
from .queueing import redis_connection

log = logging.getLogger(__name__)


# --- throttling ---------------------------------------------------------------

def _key(kind: str, what: str, subject: str) -> str:
    digest = hashlib.sha256(subject.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return f"outbox:login:{what}:{kind}:{digest}"


def _subjects(email: str, ip: str | None) -> list[tuple[str, str, int]]:
    cfg = current_app.config
    out = [("acct", email.strip().lower(), int(cfg["LOGIN_ACCOUNT_LIMIT"]))]
    if ip:
        out.append(("ip", ip, int(cfg["LOGIN_IP_LIMIT"])))
    return out


def login_wait(email: str, ip: str | None) -> int:
    """Seconds before this account or this address may try again (0: now)."""
    try:
        r = redis_connection()
        pipe = r.pipeline()
        for kind, subject, _limit in _subjects(email, ip):
            pipe.pttl(_key(kind, "lock", subject))
        waits = pipe.execute()
    except redis.RedisError:
        # Fail open: a Redis outage must not lock everyone out; it is logged.
        log.warning("login throttling unavailable: Redis is not answering")
        return 0
    longest = max((w for w in waits if w and w > 0), default=0)
    return math.ceil(longest / 1000)


def login_failed(email: str, ip: str | None) -> int:
    """Count a failure; returns the wait it starts (0 while under the limits)."""
    cfg = current_app.config
    window = int(cfg["LOGIN_WINDOW_SECONDS"])
    base, cap = int(cfg["LOGIN_LOCK_SECONDS"]), int(cfg["LOGIN_LOCK_MAX_SECONDS"])
    subjects = _subjects(email, ip)
    try:
        r = redis_connection()
        pipe = r.pipeline()
        for kind, subject, _limit in subjects:
            pipe.incr(_key(kind, "fails", subject))
            pipe.expire(_key(kind, "fails", subject), window)
        counts = pipe.execute()[::2]
        wait = 0
        pipe = r.pipeline()
        for (kind, subject, limit), count in zip(subjects, counts, strict=True):
            if count >= limit:
                this = min(base * 2 ** min(count - limit, 30), cap)
                pipe.set(_key(kind, "lock", subject), "1", ex=max(this, 1))
                wait = max(wait, this)
        pipe.execute()
        return wait
    except redis.RedisError:
        log.warning("login throttling unavailable: Redis is not answering")
        return 0


def login_succeeded(email: str) -> None:
    """A right password clears the account's count; the address keeps its own (one valid
    account must not let an address reset its count between guesses at others)."""
    subject = email.strip().lower()
    try:
        redis_connection().delete(_key("acct", "fails", subject), _key("acct", "lock", subject))
    except redis.RedisError:
        pass


def wait_message(wait: int) -> str:
    return _("Too many attempts; try again in %(n)s s.", n=wait)


# --- passwords ----------------------------------------------------------------

_dummy_hash: str | None = None


def _dummy() -> str:
    """A hash made like real ones, checked when the account does not exist."""
    global _dummy_hash
    if _dummy_hash is None:
        _dummy_hash = generate_password_hash("not a password: timing equaliser")
    return _dummy_hash


def verify_password(user: User | None, password: str) -> bool:
    """Exactly one hash check whether or not the user exists."""
    if user is None:
        check_password_hash(_dummy(), password)
        return False
    return check_password_hash(user.password_hash, password)


PASSWORD_MIN_LENGTH = 10


def password_problem(password: str, email: str) -> str | None:
    """Why a new password is refused, or None. A minimum length, not the email, and zxcvbn's
    estimate of guessability (score 3 of 4: "safely unguessable" for online attacks)."""
    from zxcvbn import zxcvbn

    if len(password) < PASSWORD_MIN_LENGTH:
        return _("Use at least %(n)s characters.", n=PASSWORD_MIN_LENGTH)
    lowered, email = password.lower(), email.strip().lower()
    local = email.split("@", 1)[0]
    if email and (email in lowered or (len(local) >= 4 and local in lowered)):
        return _("The password must not contain your email address.")
    if zxcvbn(password[:72], user_inputs=[email, local, "outbox"])["score"] < 3:
        return _("This password is too easy to guess: avoid common words, names, dates and keyboard "
                 "patterns; several unrelated words work well.")
    return None


# --- admin changes ------------------------------------------------------------

class AccountError(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _journal(event: str, user: User, actor: Any, reason: str | None = None,
             from_status: str | None = None, to_status: str | None = None) -> None:
    from .models import JournalEvent

    db.session.add(JournalEvent(
        issue_id=None, actor_id=getattr(actor, "id", None),
        actor_label=getattr(actor, "email", None) or "system", event=event,
        from_status=from_status, to_status=to_status, reason=(reason or "").strip()[:2000] or None,
        details={"user_id": user.id, "user": user.email}, created_at=utcnow()))


def _other_active_admins(user: User) -> int:
    # FOR UPDATE on PostgreSQL: two admins demoting each other at once cannot both pass
    # (SQLite already serialises writers: POSTs begin IMMEDIATE).
    ids = db.session.scalars(sa.select(User.id).where(
        User.role == Role.ADMIN, User.disabled_at.is_(None), User.id != user.id).with_for_update()).all()
    return len(ids)


def change_role(user: User, role: str, actor: User, reason: str | None = None) -> bool:
    """Returns whether anything changed; the caller commits."""
    if role not in [r.value for r in Role]:
        raise AccountError(400, "role", _("Unknown role."))
    if user.role == role:
        return False
    if user.id == actor.id:
        raise AccountError(409, "role", _("You cannot take away your own admin role."))
    if user.role == Role.ADMIN and user.disabled_at is None and not _other_active_admins(user):
        raise AccountError(409, "last_admin", _("At least one active admin must remain."))
    _journal("user_role_changed", user, actor, reason, user.role, role)
    user.role = role
    return True


def disable(user: User, actor: User, reason: str | None = None) -> bool:
    """Disable a user: no login, every session ends, every API token is revoked."""
    if user.id == actor.id:
        raise AccountError(409, "self", _("You cannot disable yourself."))
    if user.disabled_at is not None:
        return False
    if user.role == Role.ADMIN and not _other_active_admins(user):
        raise AccountError(409, "last_admin", _("At least one active admin must remain."))
    user.disabled_at = utcnow()
    user.end_sessions()
    db.session.execute(sa.update(ApiToken).where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None))
                       .values(revoked_at=utcnow()))
    _journal("user_disabled", user, actor, reason, "active", "disabled")
    return True


def enable(user: User, actor: User, reason: str | None = None) -> bool:
    if user.disabled_at is None:
        return False
    user.disabled_at = None
    _journal("user_enabled", user, actor, reason, "disabled", "active")
    return True


def sign_out_everywhere(user: User, actor: User, reason: str | None = None) -> bool:
    user.end_sessions()
    _journal("user_signed_out", user, actor, reason)
    return True


def record_created(user: User, actor: User) -> None:
    _journal("user_created", user, actor, to_status=user.role)


def password_changed(user: User, password: str) -> None:
    user.set_password(password)
    user.end_sessions()
    _journal("user_password_changed", user, user)
