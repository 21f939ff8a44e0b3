"""Admin settings with defaults; read at the moment they matter, so changes apply without a restart."""

from __future__ import annotations

from typing import Any

from .extensions import db
from .models import Setting

DEFAULTS: dict[str, Any] = {
    "launch_delay_seconds": 10,  # seed 001: the window in which Pause guarantees nothing left
    "edit_lock_minutes": 5,  # seed 004: a scheduled issue is locked this long before send_at
    "late_start_grace_seconds": 300,  # a start later than this is interrupted, not silent
    "default_portion_size": 0,  # spread defaults for new issues: N recipients ...
    "default_portion_minutes": 0,  # ... every M minutes (0: send all at once)
    "relay_rate_per_second": 0,
    # A receiving-domain group slowed by deferrals starts to recover after this quiet
    # period, then climbs back by a quarter every step (sending/pacer.py).
    "pacing_quiet_seconds": 60,
    "pacing_step_seconds": 10,
    "per_sender_unsubscribe": False,  # unsubscribes stop only the sender's letters
    # The automatic pre-send check (an issue failing any rule waits for a moderator).
    "moderation_growth_factor": 3.0,  # audience > factor × the largest of the sender's last 5
    "moderation_max_audience": 0,  # an absolute cap; 0: none
    "moderation_fresh_share": 0.5,  # share of recipients who never got a letter from us
    "moderation_bounce_rate": 0.05,
    "moderation_complaint_rate": 0.003,
    # Interrupts on rates (seed 004), frozen into an issue at launch: over its last
    # `rate_window` processed recipients, more bounces or complaints than these shares
    # interrupt it, and only an admin resumes it.
    "rate_window": 1000,
    "interrupt_bounce_rate": 0.05,
    "interrupt_complaint_rate": 0.001,
    # Soft bounces (mailing/bounces.py) from this many different issues within 30 days put
    # the address in Undeliverable, as one hard bounce does. 0: soft bounces never do.
    "soft_bounce_limit": 3,
    # The letter package (mailing/package.py): off by default, every letter is allowed.
    "package_unlimited": True,
    # Requests per minute one API token may make; more answer 429 with Retry-After. 0: none.
    "api_requests_per_minute": 1200,
    # Failed deliveries in a row after which a webhook endpoint is switched off.
    "webhook_failure_limit": 20,
    "spam_words": ["viagra", "casino", "lottery winner", "100% free"],
    "blocked_domains": [],  # a cap shared by every worker on one relay (SES-style); 0: none
}


def get(key: str) -> Any:
    row = db.session.get(Setting, key, populate_existing=True)
    return DEFAULTS[key] if row is None else row.value


def put(key: str, value: Any) -> None:
    if key not in DEFAULTS:
        raise KeyError(key)
    row = db.session.get(Setting, key)
    if row is None:
        db.session.add(Setting(key=key, value=value))
    else:
        row.value = value
