"""The sending rules, as pure functions: no sockets, no database, no Redis.

What a relay's reply means for a delivery, how long a deferred letter waits, how
a lost connection backs off, when a run of errors or an outage interrupts the
issue, and how many recipients a spread issue may take now. The send loop and the
runner apply these; tests/test_policy.py checks them without a relay.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ..enums import DeliveryState as D


@dataclass(frozen=True)
class Policy:
    max_attempts: int = 5  # a temporary failure is retried until this many attempts
    retry_base: float = 60.0  # the first retry's wait in seconds; doubled per attempt
    error_limit: int = 50  # consecutive relay errors that interrupt the issue
    relay_window: float = 120.0  # seconds without any answer before the issue is interrupted

    @classmethod
    def from_config(cls, cfg: Any) -> Policy:
        return cls(max_attempts=int(cfg["MAX_ATTEMPTS"]), retry_base=float(cfg["RETRY_BASE_SECONDS"]),
                   error_limit=int(cfg["RELAY_ERROR_LIMIT"]),
                   relay_window=float(cfg.get("RELAY_RETRY_WINDOW", 120)))


@dataclass(frozen=True)
class Verdict:
    state: str  # the delivery's next state
    retry_at: datetime | None = None  # for a deferred one


def retry_delay(attempts: int, base: float) -> float:
    """Exponential back-off for a deferred letter: base, 2·base, 4·base, …"""
    return base * (2 ** (max(attempts, 1) - 1))


def judge(kind: str, attempts: int, now: datetime, policy: Policy) -> Verdict:
    """The relay's final reply (its kind: ok, permanent, temporary) → the delivery's
    next state. A 5xx is a bounce; a 4xx or a timeout is deferred with back-off
    until the attempts run out, then failed."""
    if kind == "ok":
        return Verdict(D.SENT)
    if kind == "permanent":
        return Verdict(D.BOUNCED)
    if attempts >= policy.max_attempts:
        return Verdict(D.FAILED)
    return Verdict(D.DEFERRED, now + timedelta(seconds=retry_delay(attempts, policy.retry_base)))


# Words with which receiving providers say "too fast" in a 4xx (Gmail's 4.7.28 "unusual
# rate", Yahoo's TSS04 "temporarily deferred due to unexpected volume", Mail.ru's
# "too many messages", Outlook's "rate limit exceeded", ...). A full mailbox or a
# busy disk says none of these.
THROTTLE_WORDS = re.compile(r"\brate\b|too many messages|too fast|throttl|reputation|unusual|volume",
                            re.IGNORECASE)


def throttled(reply: Any) -> bool:
    """A deferral that asks the sender to slow down rather than a recipient's
    temporary trouble: 421, an enhanced 4.7.x, or a 4xx that says so in words."""
    if not 400 <= reply.code < 500:
        return False
    if reply.code == 421 or (reply.enhanced or "").startswith("4.7."):
        return True
    return bool(THROTTLE_WORDS.search(reply.text or ""))


def reconnect_delay(failures: int) -> float:
    """A lost or refused connection is reopened at once the first time, then after
    0.5 s doubling to 10 s: a relay restart is ridden out without hammering it."""
    return 0.0 if failures < 2 else min(0.5 * 2 ** (failures - 2), 10.0)


class ErrorStreak:
    """Consecutive non-2xx replies. At `policy.error_limit` in a row the relay is
    treated as broken and the issue is interrupted with the last reply."""

    def __init__(self, policy: Policy):
        self.limit = policy.error_limit
        self.count = 0

    def answered(self, kind: str) -> bool:
        """Note one reply; True once the streak has reached the limit."""
        if kind == "ok":
            self.count = 0
            return False
        self.count += 1
        return self.count >= self.limit


class Outage:
    """The time since the relay last answered anything, while it does not. Letters
    are held and connections retried; once `policy.relay_window` has passed
    without an answer the issue is interrupted."""

    def __init__(self, policy: Policy):
        self.window = policy.relay_window
        self.since: float | None = None

    def failed(self, now: float, failures: int) -> float:
        """A connection failed at `now` (monotonic): when to try it again, never past
        the moment the window closes (the interrupt comes when it is due)."""
        if self.since is None:
            self.since = now
        return min(now + reconnect_delay(failures), self.since + self.window)

    def over(self, now: float) -> bool:
        return self.since is not None and now - self.since >= self.window

    def answered(self) -> bool:
        """The relay answered; True when this ends an outage."""
        ended, self.since = self.since is not None, None
        return ended


@dataclass(frozen=True)
class Spread:
    """`size` recipients every `interval` seconds from `started_at`. The clock runs
    through a pause, so Resume releases what accumulated; Send whole lifts the limit."""
    started_at: datetime
    size: int
    interval: int

    @classmethod
    def of(cls, issue: Any) -> Spread | None:
        if issue.released or not issue.spread_size or not issue.spread_interval or not issue.started_at:
            return None
        return cls(issue.started_at, issue.spread_size, issue.spread_interval)

    def portions(self, now: datetime) -> int:
        """How many portions have been released by `now` (the first one at the start)."""
        elapsed = max((now - self.started_at).total_seconds(), 0.0)
        return int(elapsed // self.interval) + 1

    def next_at(self, now: datetime) -> datetime:
        return self.started_at + timedelta(seconds=self.portions(now) * self.interval)

    def allowed(self, now: datetime, handed: int) -> int:
        """Recipients that may be claimed now, given `handed` already taken."""
        return max(self.portions(now) * self.size - handed, 0)
