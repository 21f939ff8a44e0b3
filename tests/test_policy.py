"""The sending rules without a relay, a database or Redis (mailing/sending/policy.py)."""

from __future__ import annotations

from datetime import datetime, timedelta
from types import SimpleNamespace

from mailing.enums import DeliveryState as D
from mailing.sending.policy import (
    ErrorStreak,
    Outage,
    Policy,
    Spread,
    judge,
    reconnect_delay,
    retry_delay,
)

NOW = datetime(2026, 11, 23, 12, 0, 0)
POLICY = Policy(max_attempts=3, retry_base=60, error_limit=3, relay_window=120)


def test_a_reply_decides_the_delivery_state():
    assert judge("ok", 1, NOW, POLICY).state == D.SENT
    assert judge("permanent", 1, NOW, POLICY).state == D.BOUNCED
    deferred = judge("temporary", 1, NOW, POLICY)
    assert deferred.state == D.DEFERRED and deferred.retry_at == NOW + timedelta(seconds=60)
    assert judge("temporary", 2, NOW, POLICY).retry_at == NOW + timedelta(seconds=120)
    # The last allowed attempt gives up instead of waiting again.
    assert judge("temporary", 3, NOW, POLICY).state == D.FAILED
    assert judge("temporary", 3, NOW, POLICY).retry_at is None


def test_backoffs_double_and_stop_growing():
    assert [retry_delay(a, 30) for a in (1, 2, 3, 4)] == [30, 60, 120, 240]
    assert [reconnect_delay(f) for f in (1, 2, 3, 4, 5, 10)] == [0.0, 0.5, 1.0, 2.0, 4.0, 10.0]


def test_a_run_of_errors_reaches_the_limit_and_a_success_resets_it():
    streak = ErrorStreak(POLICY)
    assert not streak.answered("temporary")
    assert not streak.answered("permanent")
    assert not streak.answered("ok")  # the run is broken
    assert [streak.answered("temporary") for _ in range(3)] == [False, False, True]
    assert streak.count == 3


def test_an_outage_holds_letters_until_the_window_closes():
    outage = Outage(POLICY)
    assert not outage.over(1000.0)
    # The first failure retries at once; later ones back off, never past the window's end.
    assert outage.failed(1000.0, failures=1) == 1000.0
    assert outage.failed(1001.0, failures=3) == 1002.0
    assert outage.failed(1118.0, failures=10) == 1120.0
    assert not outage.over(1119.9) and outage.over(1120.0)
    assert outage.answered() is True  # the relay answered: the outage ends
    assert outage.answered() is False and not outage.over(5000.0)


def test_a_spread_releases_portions_with_the_clock():
    issue = SimpleNamespace(released=False, spread_size=100, spread_interval=60, started_at=NOW)
    spread = Spread.of(issue)
    assert spread is not None
    assert spread.allowed(NOW, handed=0) == 100
    assert spread.allowed(NOW + timedelta(seconds=59), handed=100) == 0
    assert spread.next_at(NOW + timedelta(seconds=59)) == NOW + timedelta(seconds=60)
    # A pause does not stop the clock: what accumulated is released at once.
    assert spread.allowed(NOW + timedelta(seconds=185), handed=100) == 300
    assert Spread.of(SimpleNamespace(**{**vars(issue), "released": True})) is None
    assert Spread.of(SimpleNamespace(**{**vars(issue), "spread_size": None})) is None
