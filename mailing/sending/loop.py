"""The send loop: one thread drives every relay connection of a runner through one
selector, without blocking.

A `Connection` is one relay connection and the letter it carries: it opens in the
background (EHLO, STARTTLS and AUTH block, so a small pool does that), then takes
the next claimed recipient whenever its previous transaction is over. The halt
event is checked before each letter starts, so after Pause at most one letter per
connection is still in flight. A connection that cannot open or is lost reconnects
at once, then with back-off, holding its letter: a relay restart or a network blip
is ridden out (policy.Outage). Only when the relay has answered nothing for the
whole window is the issue interrupted. Refused credentials interrupt at once.

Claimed recipients wait in one queue per receiving-domain group (limits.Groups).
A letter leaves when its group and the relay both have a token (pacer.py: smooth
rates shared through Redis); a group that must wait is skipped, so the others keep
going, and when its wait is longer than HOLD seconds its letters are handed back
as deferred to that moment rather than kept under lease. A deferral that speaks of
rate or reputation slows the group down (policy.throttled).

The loop reports through a `Tally` the runner flushes: results to record, letters
never started (given back), letters held back for pacing, journal events, and the
relay error that must interrupt the issue.
"""

from __future__ import annotations

import logging
import selectors
import socket
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from ..addresses import needs_smtputf8, wire_address
from ..enums import DeliveryState as D
from ..limits import Groups, Pace
from ..models import utcnow
from ..store.deliveries import Claimed, Result
from ..unsubscribe import unsubscribe_url
from .letter import Letter, LetterError, Recipient
from .pacer import FLOOR, Observed, Pacer
from .policy import ErrorStreak, Outage, Policy, judge, throttled
from .transport import (
    RelayAuthFailed,
    RelayConfig,
    RelayUnavailable,
    Reply,
    SmtpConnection,
    SmtpSession,
)

log = logging.getLogger(__name__)

# Why a recipient with a non-ASCII local part got nothing, in words support can repeat.
NO_SMTPUTF8 = "the relay does not accept internationalised addresses (no SMTPUTF8)"

# A group that must wait longer than this (seconds) gives its queued letters back,
# deferred to when it may send again, instead of keeping them under lease.
HOLD = 2.0
# How long a letter deferred by a throttling reply waits before it is due again
# (its group's slower pace then decides when it actually leaves).
THROTTLE_RETRY = 1.0


@dataclass
class Tally:
    """What the send loop hands the runner, under one lock (two threads touch it)."""
    results: list[Result] = field(default_factory=list)
    unsent: list[int] = field(default_factory=list)  # claimed, never started: given back
    lock: threading.Lock = field(default_factory=threading.Lock)
    halted: threading.Event = field(default_factory=threading.Event)
    relay_error: str | None = None  # why the issue must be interrupted
    relay_reply: str | None = None  # the failing reply or error behind relay_error
    relay_waiting: str | None = None  # the error the connections are waiting out, if any
    held: list[tuple[int, Any]] = field(default_factory=list)  # (id, due at): paced back, not sent
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # journal rows to write
    paced: str | None = None  # what the issue waits for while groups are slowed ("gmail.com 20/s")

    def add(self, result: Result) -> None:
        with self.lock:
            self.results.append(result)

    def take_results(self) -> list[Result]:
        with self.lock:
            batch, self.results = self.results, []
        return batch

    def give_back(self, delivery_id: int) -> None:
        with self.lock:
            self.unsent.append(delivery_id)

    def take_unsent(self) -> list[int]:
        with self.lock:
            ids, self.unsent = self.unsent, []
        return ids

    def hold(self, items: list[tuple[int, Any]]) -> None:
        with self.lock:
            self.held.extend(items)

    def take_held(self) -> list[tuple[int, Any]]:
        with self.lock:
            items, self.held = self.held, []
        return items

    def event(self, name: str, details: dict[str, Any]) -> None:
        with self.lock:
            self.events.append((name, details))

    def take_events(self) -> list[tuple[str, dict[str, Any]]]:
        with self.lock:
            events, self.events = self.events, []
        return events

    def fail_issue(self, error: str, reply: str) -> None:
        """The first error that must interrupt the issue wins; sending stops."""
        with self.lock:
            if self.relay_error is None:
                self.relay_error, self.relay_reply = error, reply
        self.halted.set()


class Connection:
    """One relay connection of the send loop and the letter it carries."""

    def __init__(self, loop: SendLoop):
        self.loop = loop
        self.conn: SmtpConnection | None = None
        self.session: SmtpSession | None = None
        self.opening: Future[None] | None = None
        self.item: Claimed | None = None
        self.mid: str | None = None
        self.data: bytes = b""
        self.failures = 0
        self.events = 0
        self.retry_at = 0.0  # monotonic time before which a failed connection is not reopened

    @property
    def busy(self) -> bool:
        """A letter is in an SMTP transaction on this connection."""
        return self.session is not None and self.session.busy

    @property
    def idle(self) -> bool:
        """Ready for its next letter: open, or closed and not backing off."""
        if self.opening is not None or self.busy:
            return False
        return self.session is not None or self.retry_at <= time.monotonic()

    def open(self) -> None:
        self.conn = SmtpConnection(self.loop.relay)
        self.opening = self.loop.opener.submit(self.conn.open)
        self.opening.add_done_callback(lambda _f: self.loop.wake())

    def opened(self) -> None:
        """The background open finished: register the session, or note the failure."""
        if self.opening is None or not self.opening.done():
            return
        future, self.opening = self.opening, None
        try:
            future.result()
        except RelayUnavailable as exc:
            self.fail(exc)
            return
        assert self.conn is not None
        self.session = SmtpSession(self.conn)
        self.loop.sel.register(self.session.sock, selectors.EVENT_READ, self)
        self.events = selectors.EVENT_READ

    def close_session(self) -> None:
        if self.session is not None:
            self.loop.sel.unregister(self.session.sock)
            self.session.close()
            self.session = None

    def fail(self, exc: Exception) -> None:
        """The connection could not open or was lost: hold the letter and retry later,
        or interrupt the issue when the credentials are refused or the outage is over
        the window."""
        self.close_session()
        self.failures += 1
        tally = self.loop.tally
        if isinstance(exc, RelayAuthFailed):
            tally.fail_issue(f"authentication refused: {exc}", str(exc))
        else:
            now = time.monotonic()
            outage = self.loop.outage
            self.retry_at = outage.failed(now, self.failures)
            with tally.lock:
                tally.relay_waiting = str(exc)
            if outage.over(now):
                tally.fail_issue(f"relay unreachable: {exc}", str(exc))
        if tally.relay_error:
            self.loop.wake()

    def finish(self, reply: Reply) -> None:
        """The relay's final reply to this connection's letter."""
        assert self.item is not None
        self.failures = 0
        if self.loop.outage.answered():  # whatever it said, the relay is reachable again
            with self.loop.tally.lock:
                self.loop.tally.relay_waiting = None
        self.loop.outcome(self.item, reply, self.mid)
        self.item = None

    def watch(self) -> None:
        """Ask for writability only while a letter is still being written."""
        assert self.session is not None
        events = self.session.events()
        if events != self.events:
            self.loop.sel.modify(self.session.sock, events, self)
            self.events = events

    def start(self) -> None:
        """Begin the SMTP transaction of the letter this connection holds."""
        assert self.item is not None and self.session is not None
        loop, item = self.loop, self.item
        if self.mid is None:
            key = item.contact_id if item.contact_id is not None else f"d{item.id}"
            fields = loop.fields.pop(key, {})  # by contact, or by delivery for a triggered one
            try:
                self.mid, self.data = loop.letter.build(Recipient(
                    item.id, key, item.email, item.name, unsubscribe_url(loop.base_url, loop.secret, item.id),
                    fields))
            except LetterError as exc:
                self._refuse(str(exc)[:200])
                return
        utf8 = needs_smtputf8(item.email)
        if utf8 and not self.session.smtputf8:
            self._refuse(NO_SMTPUTF8)  # said in the recipient's own words: no relay reply exists
            return
        try:
            rcpt = wire_address(item.email)
        except UnicodeError:  # a domain IDNA cannot write: no relay could take it
            self._refuse("the address's domain cannot be encoded")
            return
        try:
            self.session.begin(loop.letter.envelope_from(item.id), rcpt, self.data, smtputf8=utf8)
        except RelayUnavailable as exc:
            self.fail(exc)
            return
        self.watch()

    def _refuse(self, reason: str) -> None:
        """This recipient cannot be sent to at all: failed, with the reason in words."""
        assert self.item is not None
        self.loop.tally.add(Result(self.item.id, D.FAILED, reason=reason))
        self.item = None

    def on_event(self, mask: int) -> None:
        session = self.session
        if session is None:
            return
        try:
            if mask & selectors.EVENT_WRITE:
                session.on_writable()
            reply = session.on_readable() if mask & selectors.EVENT_READ else None
        except RelayUnavailable as exc:
            self.fail(exc)
            return
        if reply is not None:
            self.finish(reply)
        if session.dead:
            self.close_session()
        else:
            self.watch()

    def check_timeout(self, now: float) -> None:
        session = self.session
        if session is not None and session.busy and session.deadline <= now:
            self.loop.sel.unregister(session.sock)
            self.session = None
            self.finish(session.timed_out())

    def shut(self) -> None:
        """The loop is over: a letter still held was never started."""
        if self.item is not None:
            self.loop.tally.give_back(self.item.id)
        if self.session is not None:
            self.session.close()
        elif self.conn is not None and self.conn.smtp is not None:
            self.conn.close()


class SendLoop:
    """Sends the runner's claimed recipients (`work`) over `concurrency` connections
    until halted, or until the runner is closing and the work is done."""

    def __init__(self, *, letter: Letter, relay: RelayConfig, concurrency: int, policy: Policy,
                 work: deque[Claimed], fields: dict[int, dict[str, str]], base_url: str, secret: bytes,
                 pacer: Pacer, groups: Groups, tally: Tally):
        self.letter, self.relay, self.policy = letter, relay, policy
        self.concurrency = concurrency
        self.work, self.fields = work, fields  # `work`: the runner's claims, sorted into groups here
        self.base_url, self.secret = base_url, secret
        self.pacer = pacer
        self.groups = groups  # the runner swaps in a fresh snapshot while sending
        self.rate_limit = 0.0  # the relay's letters per second over every runner; 0: none
        self.tally = tally
        self.queued = 0  # letters sorted into the group queues, not yet handed out
        self._queues: dict[str, deque[Claimed]] = {}
        self._paces: dict[str, Pace] = {}
        self._order: list[str] = []  # groups with letters, served in turn
        self._turn = 0
        self._tokens: dict[str, tuple[int, float]] = {}  # group → (tokens, until when they are good)
        self._wait_until: dict[str, float] = {}  # group → monotonic time it may ask again
        self._slowed: dict[str, float] = {}  # group → its adapted rate, while slowed
        self._slowed_read = 0.0
        self._observed = Observed()
        self.closing = threading.Event()  # the runner claims no more: finish the work and return
        self.error: BaseException | None = None
        self.streak = ErrorStreak(policy)
        self.outage = Outage(policy)
        self.sel = selectors.DefaultSelector()
        self.opener = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="smtp-open")
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)

    # --- called from the runner's thread --------------------------------------

    def wake(self) -> None:
        """Interrupt the selector: new work, a halt, a finished open."""
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # already pending, or the loop is gone

    def halt(self) -> None:
        self.tally.halted.set()
        self.wake()

    def close(self) -> None:
        self._wake_r.close()
        self._wake_w.close()

    # --- the loop's own thread --------------------------------------------------

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # surfaced by the runner once everything is released
            log.exception("send loop failed")
            self.error = exc
            self.halt()

    def outcome(self, item: Claimed, reply: Reply, mid: str | None) -> None:
        """Turn the relay's final reply into the delivery's next state (policy.judge);
        a long enough run of errors interrupts the issue."""
        now = utcnow()
        if throttled(reply):
            # The receiving provider asks us to slow down: not the relay's failure (no error
            # streak), nor the recipient's while the group can still slow down (the attempt
            # is not counted); at the floor rate attempts count, so nothing retries forever.
            rate = self._slow_down(item, reply)
            self.tally.add(Result(item.id, D.DEFERRED, reply, mid, at=now,
                                  retry_at=now + timedelta(seconds=THROTTLE_RETRY), uncount=int(rate > FLOOR)))
            return
        if self.streak.answered(reply.kind):
            self.tally.fail_issue(f"{self.streak.count} consecutive relay errors, last: {reply}", str(reply))
        verdict = judge(reply.kind, item.attempts, now, self.policy)
        self.tally.add(Result(item.id, verdict.state, reply, mid, at=now, retry_at=verdict.retry_at))

    # --- pacing -------------------------------------------------------------------

    def _pace_of(self, item: Claimed) -> Pace:
        return self.groups.of(item.email_key.rpartition("@")[2])

    def _slow_down(self, item: Claimed, reply: Reply) -> float:
        """Slow the letter's group down; returns the rate now in force."""
        pace = self._pace_of(item)
        lowered, rate = self.pacer.slow(pace.key, pace.limit, self._observed.rate(pace.key))
        self._slowed[pace.key] = rate
        self._paces.setdefault(pace.key, pace)
        if lowered:
            self.tally.event("pace_slowed", {"group": pace.label, "rate_per_second": rate, "reply": str(reply)})
            self._note_paced()
        return rate

    def _note_paced(self) -> None:
        slowed = [f"{self._paces[k].label} {rate:g}/s" for k, rate in self._slowed.items() if k in self._paces]
        self.tally.paced = ", ".join(sorted(slowed)[:3]) + " after deferrals" if slowed else None

    def _sort_in(self) -> None:
        """Move the runner's new claims into their groups' queues."""
        while True:
            try:
                item = self.work.popleft()
            except IndexError:
                return
            pace = self._pace_of(item)
            queue = self._queues.get(pace.key)
            if queue is None:
                queue = self._queues[pace.key] = deque()
                self._order.append(pace.key)
            self._paces[pace.key] = pace
            queue.append(item)
            self.queued += 1

    def _refresh_slowed(self, now: float) -> None:
        """Once a second: which of this runner's groups another worker slowed (a group
        without a limit asks Redis for tokens only while it is slowed)."""
        if now - self._slowed_read < 1.0 or not self._order:
            return
        self._slowed_read = now
        before = self._slowed
        self._slowed = self.pacer.slowed_among(list(self._order))
        if self._slowed != before:
            self._note_paced()

    def _ready(self, key: str, now: float) -> bool:
        """May a letter of this group leave now? Takes tokens from Redis when needed."""
        pace = self._paces[key]
        if not (pace.limit or self.rate_limit or key in self._slowed):
            return True
        tokens, good_until = self._tokens.get(key, (0, 0.0))
        if tokens > 0 and now < good_until:
            return True
        if self._wait_until.get(key, 0.0) > now:
            return False
        # Tokens are taken a connection's worth at a time, or 10 ms of the rate when that is
        # more: one Redis call per letter would cost more than the pacing is worth.
        rate = min(r for r in (pace.limit, self.rate_limit, self._slowed.get(key, 0.0)) if r)
        batch = max(self.concurrency, int(rate / 100))
        grant = self.pacer.take(key, pace.limit, self.rate_limit, batch, batch)
        if grant.event == "recovered":
            self._slowed.pop(key, None)
            self.tally.event("pace_recovered", {"group": pace.label, "rate_per_second": pace.limit})
            self._note_paced()
        elif key in self._slowed and grant.rate:
            self._slowed[key] = grant.rate
        if grant.granted:
            self._tokens[key] = (grant.granted, now + 1.0)
            return True
        self._wait_until[key] = now + grant.wait
        if grant.wait > HOLD:
            self._hold_back(key, grant.wait)
        return False

    def _hold_back(self, key: str, wait: float) -> None:
        """A long wait: the group's letters go back, due when it may send again."""
        queue = self._queues.get(key)
        if not queue:
            return
        due = utcnow() + timedelta(seconds=wait)
        self.tally.hold([(item.id, due) for item in queue])
        self.queued -= len(queue)
        queue.clear()

    def _next_item(self) -> Claimed | None:
        """The next letter that may leave: groups are served in turn, skipping those
        that must wait."""
        self._sort_in()
        if not self.queued:
            return None
        now = time.monotonic()
        self._refresh_slowed(now)
        for _ in range(len(self._order)):
            if self._turn >= len(self._order):
                self._turn = 0
            key = self._order[self._turn]
            queue = self._queues[key]
            if not queue:
                del self._order[self._turn]
                del self._queues[key]
                continue
            self._turn += 1
            if not self._ready(key, now) or not queue:
                continue
            tokens, good_until = self._tokens.get(key, (0, 0.0))
            if tokens > 0:
                self._tokens[key] = (tokens - 1, good_until)
            self.queued -= 1
            self._observed.started(key, now)
            return queue.popleft()
        return None

    def next_wait(self, now: float) -> float | None:
        """The soonest moment a waiting group may ask for tokens again."""
        waits = [t for k, t in self._wait_until.items() if t > now and self._queues.get(k)]
        return min(waits) if waits else None

    def unsent(self) -> list[int]:
        """Letters still queued when the loop is over (never started)."""
        self._sort_in()
        ids = [item.id for queue in self._queues.values() for item in queue]
        self._queues.clear()
        self._order.clear()
        self.queued = 0
        return ids

    def _hand_out(self, conns: list[Connection]) -> None:
        """Give letters to free connections, unless halted or short of rate tokens."""
        for conn in conns:
            if self.tally.halted.is_set():
                return
            if not conn.idle:
                continue
            if conn.item is None:
                conn.item = self._next_item()
                if conn.item is None:
                    continue
                conn.mid = None
            if conn.session is None or conn.session.dead:
                conn.close_session()
                conn.open()
                continue
            conn.start()

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def _run(self) -> None:
        tally = self.tally
        self.sel.register(self._wake_r, selectors.EVENT_READ, None)
        conns = [Connection(self) for _ in range(self.concurrency)]
        for conn in conns:
            conn.open()
        try:
            while True:
                for conn in conns:
                    conn.opened()
                self._hand_out(conns)
                # Letters not started when the issue halted go back as never sent.
                if tally.halted.is_set():
                    for conn in conns:
                        if conn.item is not None and not conn.busy:
                            tally.give_back(conn.item.id)
                            conn.item = None
                busy = [c for c in conns if c.item is not None]
                if not busy and (tally.halted.is_set()
                                 or (self.closing.is_set() and not self.work and not self.queued)):
                    return
                now = time.monotonic()
                deadline = min([c.session.deadline for c in busy if c.session is not None], default=now + 0.5)
                token_wait = self.next_wait(now)
                if token_wait is not None:
                    deadline = min(deadline, token_wait)
                for key, mask in self.sel.select(max(min(deadline - now, 0.5), 0)):
                    if key.data is None:
                        self._drain_wake()
                    else:
                        key.data.on_event(mask)
                now = time.monotonic()
                for conn in conns:
                    conn.check_timeout(now)
        finally:
            self.opener.shutdown(wait=True, cancel_futures=True)
            for conn in conns:
                conn.shut()
            self.sel.close()
