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

The loop reports through a `Tally` the runner flushes: results to record, letters
never started (given back), and the relay error that must interrupt the issue.
"""

from __future__ import annotations

import logging
import selectors
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from ..addresses import needs_smtputf8, wire_address
from ..enums import DeliveryState as D
from ..models import utcnow
from ..store.deliveries import Claimed, Result
from ..unsubscribe import unsubscribe_url
from .letter import Letter, LetterError, Recipient
from .policy import ErrorStreak, Outage, Policy, judge
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
            fields = loop.fields.pop(item.contact_id, {}) if item.contact_id is not None else {}
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
            self.session.begin(loop.letter.wire_from, rcpt, self.data, smtputf8=utf8)
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
                 take_tokens: Callable[[int], int], tally: Tally):
        self.letter, self.relay, self.policy = letter, relay, policy
        self.concurrency = concurrency
        self.work, self.fields = work, fields
        self.base_url, self.secret = base_url, secret
        self.take_tokens = take_tokens
        self.rate_limit = 0  # letters per second over every runner; 0: none (the runner updates it)
        self.tally = tally
        self.closing = threading.Event()  # the runner claims no more: finish the work and return
        self.error: BaseException | None = None
        self.streak = ErrorStreak(policy)
        self.outage = Outage(policy)
        self.sel = selectors.DefaultSelector()
        self.opener = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="smtp-open")
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._tokens, self._token_wait, self._token_second = 0, 0.0, 0

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
        if self.streak.answered(reply.kind):
            self.tally.fail_issue(f"{self.streak.count} consecutive relay errors, last: {reply}", str(reply))
        verdict = judge(reply.kind, item.attempts, now, self.policy)
        self.tally.add(Result(item.id, verdict.state, reply, mid, at=now, retry_at=verdict.retry_at))

    def _next_item(self) -> Claimed | None:
        """The next claimed recipient, if the rate cap leaves a token for it."""
        if not self.work:
            return None
        if self.rate_limit:
            second = int(time.time())
            if second != self._token_second:
                # Tokens are for one second's window: what is left of the last one is
                # not spent in this one, where the other runners count from zero.
                self._tokens, self._token_second = 0, second
            if self._tokens <= 0:
                if time.monotonic() < self._token_wait:
                    return None
                self._tokens = self.take_tokens(self.concurrency)
                if self._tokens <= 0:
                    self._token_wait = float(second + 1) - time.time() + time.monotonic()
                    return None
        try:
            item = self.work.popleft()
        except IndexError:
            return None
        self._tokens -= 1
        return item

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
                if not busy and (tally.halted.is_set() or (self.closing.is_set() and not self.work)):
                    return
                now = time.monotonic()
                deadline = min([c.session.deadline for c in busy if c.session is not None], default=now + 0.5)
                if self._token_wait > now:
                    deadline = min(deadline, self._token_wait)
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
