"""Bounce and complaint rates over an issue's sliding window, and the interrupt they trip.

Seed 004: an issue is interrupted "due to a large number of undelivered emails and spam
complaints". The window is the issue's last N processed recipients (N frozen at launch
with the thresholds). Runners push what each flush processed and how many of those the
relay refused at once; late bounces and complaints (mailing/bounces.py) push a refusal
that takes no place in the window, so they count towards the issue they belong to while
it is still sending. The window lives in Redis, one short entry per flush, shared by
every runner of the issue: a rate is checked without reading the deliveries table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis
from flask_babel import gettext as _

from . import settings

# Each entry is "processed bounced complained"; the newest first. The script sums the
# newest entries until they cover the window, so a check costs at most a few hundred
# list items (read a page at a time) whatever the issue's size, and trims what can no
# longer matter.
_PUSH = """
redis.call('LPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], 0, 4095)
redis.call('EXPIRE', KEYS[1], 7 * 86400)
local window = tonumber(ARGV[2])
local p, b, c = 0, 0, 0
local from = 0
while from < 4096 do
  local page = redis.call('LRANGE', KEYS[1], from, from + 63)
  if #page == 0 then break end
  for _, e in ipairs(page) do
    local ep, eb, ec = string.match(e, '(%d+) (%d+) (%d+)')
    if p >= window and tonumber(ep) > 0 then return {p, b, c} end
    p = p + tonumber(ep); b = b + tonumber(eb); c = c + tonumber(ec)
  end
  from = from + 64
end
return {p, b, c}
"""


def key(issue_id: int) -> str:
    return f"outbox:issue:{issue_id}:rates"


@dataclass(frozen=True)
class Limits:
    """The thresholds an issue was launched with (frozen into its settings)."""
    window: int
    bounce_rate: float
    complaint_rate: float

    @classmethod
    def current(cls) -> Limits:
        return cls(int(settings.get("rate_window")), float(settings.get("interrupt_bounce_rate")),
                   float(settings.get("interrupt_complaint_rate")))

    @classmethod
    def of(cls, frozen: dict[str, Any] | None) -> Limits:
        """From an issue's launch settings; an issue launched before these existed uses today's."""
        now = cls.current()
        frozen = frozen or {}
        return cls(int(frozen.get("rate_window", now.window)),
                   float(frozen.get("interrupt_bounce_rate", now.bounce_rate)),
                   float(frozen.get("interrupt_complaint_rate", now.complaint_rate)))

    def frozen(self) -> dict[str, Any]:
        return {"rate_window": self.window, "interrupt_bounce_rate": self.bounce_rate,
                "interrupt_complaint_rate": self.complaint_rate}

    @property
    def least(self) -> int:
        """Rates are judged once this many recipients are in the window: a quarter of it
        (at least 20), so a handful of early bounces cannot trip a healthy issue, and a
        bad list is still stopped well within its first window."""
        return max(20, self.window // 4) if self.window > 20 else self.window


@dataclass(frozen=True)
class Breach:
    kind: str  # "bounce" | "complaint"
    rate: float
    limit: float
    processed: int
    count: int

    def reason(self) -> str:
        if self.kind == "bounce":
            text = _("bounce rate %(rate)s over the last %(n)s recipients is above %(limit)s")
        else:
            text = _("complaint rate %(rate)s over the last %(n)s recipients is above %(limit)s")
        return text % {"rate": f"{self.rate:.1%}", "n": self.processed, "limit": f"{self.limit:.1%}"}

    def details(self) -> dict[str, Any]:
        return {"kind": self.kind, "rate": round(self.rate, 5), "limit": self.limit,
                "window": self.processed, self.kind + "s": self.count}


def push(r: redis.Redis, issue_id: int, limits: Limits, processed: int, bounced: int = 0,
         complained: int = 0) -> Breach | None:
    """Add what was processed (and how much of it came back refused) and judge the window."""
    p, b, c = r.eval(_PUSH, 1, key(issue_id), f"{processed} {bounced} {complained}", limits.window)
    if p < limits.least or p <= 0:
        return None
    if limits.bounce_rate > 0 and b / p > limits.bounce_rate:
        return Breach("bounce", b / p, limits.bounce_rate, p, b)
    if limits.complaint_rate > 0 and c / p > limits.complaint_rate:
        return Breach("complaint", c / p, limits.complaint_rate, p, c)
    return None


def forget(r: redis.Redis, issue_id: int) -> None:
    """An admin resumed after a rate interrupt: the window starts again."""
    r.delete(key(issue_id))
