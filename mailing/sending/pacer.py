"""Smooth, shared rates: the relay's cap and each receiving-domain group's pace.

Every limit is a GCRA (the generic cell rate algorithm, a token bucket kept as one
"theoretical arrival time" per key) in Redis, so every worker shares it and the
rate is smooth: a bucket lets at most `burst` letters leave at once (the
connections a runner has), then one every 1/rate seconds. A fixed one-second
window, which this replaces, let a whole second's letters leave in its first
few milliseconds.

A group's pace adapts: a deferral that speaks of rate or reputation (policy.throttled)
halves the group's rate on this relay (at most once a second, however many letters
in flight come back deferred), and after a quiet period without one the rate
climbs back by a quarter per step until it reaches its limit again. A group without
a limit slows from what this runner was sending it and recovers to that. Both steps
are Lua scripts, so the read-modify-write is atomic across workers, and they use
Redis's clock, so workers on different machines agree on time.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

import redis

from .. import clock, limits
from ..models import SenderWarmup

# GCRA over up to two buckets (the relay's, the group's), after letting the group's
# adaptive rate recover if it has been quiet long enough.
# KEYS: relay bucket, group bucket, group adaptive hash
# ARGV: relay rate, group limit, burst, wanted, recovery step (s)
# Returns: granted, wait (ms) when nothing was granted, the group's rate in force
# (milli-letters/s, 0: none), event (0 none, 1 stepped up, 2 back at its limit).
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local relay_rate = tonumber(ARGV[1])
local group_rate = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
local wanted = tonumber(ARGV[4])
local step = tonumber(ARGV[5])
local event = 0
local adapt = redis.call('HMGET', KEYS[3], 'rate', 'quiet_at', 'ceiling')
if adapt[1] then
  local r = tonumber(adapt[1])
  if now >= tonumber(adapt[2]) then
    r = r * 1.25
    if r >= tonumber(adapt[3]) then
      redis.call('DEL', KEYS[3])
      event = 2
      r = nil
    else
      redis.call('HSET', KEYS[3], 'rate', r, 'quiet_at', now + step)
      event = 1
    end
  end
  if r and (group_rate <= 0 or r < group_rate) then group_rate = r end
end
local function room(key, rate)
  if rate <= 0 then return wanted, 0, 0 end
  local interval = 1 / rate
  local tat = tonumber(redis.call('GET', key) or '0')
  if tat < now then tat = now end
  local slack = now + (burst - 1) * interval - tat
  if slack < 0 then return 0, tat, -slack end
  return math.floor(slack / interval) + 1, tat, 0
end
local k1, tat1, w1 = room(KEYS[1], relay_rate)
local k2, tat2, w2 = room(KEYS[2], group_rate)
local k = math.min(wanted, k1, k2)
if k > 0 then
  if relay_rate > 0 then
    local v = tat1 + k / relay_rate
    redis.call('SET', KEYS[1], string.format('%.6f', v), 'PX', math.ceil((v - now) * 1000) + 1000)
  end
  if group_rate > 0 then
    local v = tat2 + k / group_rate
    redis.call('SET', KEYS[2], string.format('%.6f', v), 'PX', math.ceil((v - now) * 1000) + 1000)
  end
  return {k, 0, math.floor(group_rate * 1000), event}
end
return {0, math.ceil(math.max(w1, w2) * 1000), math.floor(group_rate * 1000), event}
"""

# Reserve up to ARGV[2] of today's cap ARGV[1]. KEYS: the sender's counter for the day.
_RESERVE = """
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local take = math.max(0, math.min(tonumber(ARGV[2]), tonumber(ARGV[1]) - used))
if take > 0 then
  redis.call('INCRBY', KEYS[1], take)
  redis.call('EXPIRE', KEYS[1], 259200)
end
return take
"""

# A throttling deferral: halve the group's rate (once a second at most) and restart
# its quiet period. KEYS: group adaptive hash. ARGV: group limit, observed rate,
# quiet period (s), floor. Returns: 1 when the rate was lowered now, the rate (milli).
_SLOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local limit = tonumber(ARGV[1])
local observed = tonumber(ARGV[2])
local quiet = tonumber(ARGV[3])
local floor = tonumber(ARGV[4])
local h = redis.call('HMGET', KEYS[1], 'rate', 'slowed_at', 'ceiling')
if h[1] and now - tonumber(h[2]) < 1 then
  redis.call('HSET', KEYS[1], 'quiet_at', now + quiet)
  return {0, math.floor(tonumber(h[1]) * 1000)}
end
local base = tonumber(h[1]) or (limit > 0 and limit) or math.max(observed, floor)
local ceiling = tonumber(h[3]) or (limit > 0 and limit) or math.max(observed, floor)
local r = math.max(floor, base * 0.5)
redis.call('HSET', KEYS[1], 'rate', r, 'slowed_at', now, 'quiet_at', now + quiet, 'ceiling', ceiling)
redis.call('EXPIRE', KEYS[1], 86400)
return {1, math.floor(r * 1000)}
"""

FLOOR = 1.0  # letters per second: a slowed group never stops altogether


@dataclass(frozen=True)
class Grant:
    granted: int
    wait: float  # seconds until a letter may leave, when none was granted
    rate: float  # the group's rate in force (0: none)
    event: str | None  # "stepped up" | "recovered" | None


class Pacer:
    """The Redis side of one runner's limits on one relay."""

    def __init__(self, r: redis.Redis, relay_key: str, quiet: float, step: float):
        self.redis, self.relay_key, self.quiet, self.step = r, relay_key, quiet, step
        self._take = r.register_script(_TAKE)
        self._slow = r.register_script(_SLOW)
        self._relay_bucket = f"outbox:pace:{relay_key}:relay"

    def _group_keys(self, group: str) -> tuple[str, str]:
        base = f"outbox:pace:{self.relay_key}:group:{group}"
        return base + ":bucket", base + ":adapt"

    def take(self, group: str, limit: float, relay_rate: float, wanted: int, burst: int) -> Grant:
        bucket, adapt = self._group_keys(group)
        granted, wait_ms, rate_milli, event = self._take(
            keys=[self._relay_bucket, bucket, adapt], args=[relay_rate, limit, max(burst, 1), wanted, self.step])
        return Grant(int(granted), int(wait_ms) / 1000, int(rate_milli) / 1000,
                     {1: "stepped up", 2: "recovered"}.get(int(event)))

    def slow(self, group: str, limit: float, observed: float) -> tuple[bool, float]:
        """A throttling deferral from this group: (lowered now, the rate in force)."""
        _bucket, adapt = self._group_keys(group)
        lowered, rate_milli = self._slow(keys=[adapt], args=[limit, observed, self.quiet, FLOOR])
        return bool(lowered), int(rate_milli) / 1000

    def slowed(self, group: str) -> float | None:
        """The group's adapted rate, while it is slowed."""
        value = self.redis.hget(self._group_keys(group)[1], "rate")
        return float(value) if value is not None else None

    def slowed_among(self, groups: list[str]) -> dict[str, float]:
        """Which of these groups are slowed (by any worker), in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        for group in groups:
            pipe.hget(self._group_keys(group)[1], "rate")
        return {g: float(v) for g, v in zip(groups, pipe.execute(), strict=True) if v is not None}


class Observed:
    """Letters this runner started per group over the last two seconds: what a group
    without a limit was being sent when its first deferral came."""

    WINDOW = 2.0

    def __init__(self) -> None:
        self._starts: dict[str, deque[float]] = {}

    def started(self, group: str, now: float | None = None) -> None:
        now = now if now is not None else time.monotonic()
        starts = self._starts.setdefault(group, deque())
        starts.append(now)
        while starts[0] < now - self.WINDOW:  # only the window is kept, however long the send
            starts.popleft()

    def rate(self, group: str, now: float | None = None) -> float:
        starts = self._starts.get(group)
        if not starts:
            return 0.0
        now = now if now is not None else time.monotonic()
        while starts and starts[0] < now - self.WINDOW:
            starts.popleft()
        return len(starts) / self.WINDOW


class Warmup:
    """A sender's warm-up cap for the day (limits.daily_cap), shared by every runner of
    that sender through one Redis counter per day. Letters are reserved per claim and
    what was not sent is given back; a runner that crashes keeps its reservation, so the
    day ends a little under the cap, never over it."""

    def __init__(self, row: SenderWarmup, r: redis.Redis):
        self.row, self.redis = row, r
        self._reserve = r.register_script(_RESERVE)
        self._day = clock.now().date()

    @classmethod
    def of(cls, sender_id: int | None, signals: object) -> Warmup | None:
        row = limits.warmup_of(sender_id) if sender_id is not None else None
        return cls(row, signals.redis) if row is not None else None  # type: ignore[attr-defined]

    def _key(self) -> str:
        return f"outbox:warmup:{self.row.sender_id}:{self._day.isoformat()}"

    def cap(self) -> int:
        return limits.daily_cap(self.row, self._day)

    def reserve(self, wanted: int) -> int:
        """Up to `wanted` of today's letters (none once the cap is reached)."""
        self._day = clock.now().date()
        return int(self._reserve(keys=[self._key()], args=[self.cap(), wanted]))

    def give_back(self, n: int) -> None:
        if n > 0:
            self.redis.decrby(self._key(), n)

    def next_at(self):  # noqa: ANN201 - a datetime
        return limits.next_day(clock.now())

    def note(self) -> str:
        return (f"warm-up: daily cap of {self.cap()} letters reached; "
                f"continues at {self.next_at():%Y-%m-%d %H:%M} UTC")
