"""The runner: sends one issue's due recipients until none is left or it is halted.

Its round is claim → send → flush. It claims a chunk under a lease (a crashed
runner's leases expire and any runner takes the recipients again; the repeat
carries the same Message-ID), checks the chunk against the stop-lists in one
query, hands the rest to the send loop (loop.py), and every quarter second
records the replies and moves the issue's counters in one transaction. It
returns an `Outcome`; what then happens to the issue (finished, retry later,
interrupted, cancelled) is decided by lifecycle.after_run.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flask import current_app

from .. import clock, dkim, queueing, rates, relays, settings, states, triggers
from ..enums import DeliveryState as D
from ..enums import IssueStatus
from ..extensions import db
from ..limits import Groups
from ..models import Issue, Sender, utcnow
from ..store import contacts as contact_store
from ..store import deliveries as store
from ..store import issues as issue_store
from ..store import package
from ..store.deliveries import Claimed, Result
from ..store.stoplists import suppressed_among
from .letter import Letter, LetterError
from .loop import SendLoop, Tally
from .pacer import Pacer, Warmup
from .policy import Policy, Spread
from .signals import Signals
from .transport import RelayConfig, RelayUnavailable

# A run waits for a deferred letter due within this many seconds instead of ending.
RETRY_SOON = 5.0
# A triggered mailing's runner waits this long for the next participant before it ends
# (it is woken at once through Redis; an arrival after it ended starts a new one).
TRIGGER_IDLE = 30.0


def new_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass
class Outcome:
    """How a run ended, for lifecycle.after_run to act on."""
    # drained | halted | waiting (a spread issue's portion is used) | interrupted | not sending
    # | exhausted (the letter package has no unit left for this runner)
    kind: str
    reason: str | None = None  # interrupted: why, in words for the issue page
    last_reply: str | None = None  # interrupted: the failing reply or error
    next_at: datetime | None = None  # waiting: when the next portion is released
    interrupt_kind: str | None = None  # interrupted: "rates" when its rate window tripped
    details: dict[str, Any] | None = None  # interrupted: the figures, for the journal


@dataclass
class Portion:
    left: int | None  # recipients the spread allows now; None when not spread
    next_at: datetime | None  # when the next portion is released


def portion(issue: Issue) -> Portion:
    """How many recipients a spread issue may hand over now (policy.Spread), counted
    from those already claimed."""
    spread = Spread.of(issue)
    if spread is None:
        return Portion(None, None)
    now = clock.now()
    handed = (issue.total - store.pending_count(issue.id)
              - int((issue.settings or {}).get("suppressed_at_launch", 0)))
    return Portion(spread.allowed(now, handed), spread.next_at(now))


def build_letter(issue: Issue) -> Letter:
    sender = db.session.get(Sender, issue.sender_id) if issue.sender_id else None
    if sender is None:
        raise LetterError("the issue has no sender")
    letter = Letter(
        issue_id=issue.id, subject=issue.subject, body_html=issue.body_html,
        from_name=issue.from_name or sender.name, from_email=sender.email,
        secret=current_app.config["SECRET_KEY"].encode(), body_text=issue.body_text or "",
        preheader=issue.preheader or "", reply_to=issue.reply_to or "",
        custom_headers=issue.custom_headers or "",
    )
    letter.sign = dkim.signer_for(dkim.domain_of(sender.email))  # None: the domain has no key
    letter.bounce_domain = current_app.config.get("BOUNCE_DOMAIN") or None
    return letter


def relay_config(sender: Sender | None) -> RelayConfig:
    """The sender's own relay, else the default one (mailing/relays.py)."""
    return relays.for_sender(sender).config


class Runner:
    def __init__(self, issue_id: int, owner: str | None = None):
        cfg = current_app.config
        self.issue_id = issue_id
        self.owner = owner or new_owner()
        self.concurrency = max(1, int(cfg["SEND_CONCURRENCY"]))
        self.chunk = max(1, int(cfg["SEND_CHUNK"]))
        self.lease = int(cfg["LEASE_SECONDS"])
        self.policy = Policy.from_config(cfg)
        self.base_url = cfg["BASE_URL"]
        self.secret = cfg["SECRET_KEY"].encode()
        self.signals = Signals(queueing.redis_connection(), issue_id, self.owner, self.lease)
        self.tally = Tally()
        self.work: deque[Claimed] = deque()
        self._reclaimed_at = float("-inf")
        # Fields the letter needs (phone, custom ones), fetched per claim: by contact id, or
        # "d<delivery id>" for a triggered mailing's participants.
        self.fields: dict[int | str, dict[str, str]] = {}
        self.triggered = False
        self.loop: SendLoop | None = None
        self.warmup: Warmup | None = None
        self.relay: relays.Relay | None = None  # the issue's sender's relay, once the run starts
        self.rate_limit = 0
        self._rate_read = 0.0
        self._last_flush = 0.0
        self._last_renew = 0.0
        # What this runner last wrote as the issue's wait; "" (unknown) makes its first
        # flush clear a wait an earlier runner left, such as yesterday's warm-up cap.
        self._noted_wait: str | None = ""
        self.limits: rates.Limits | None = None  # the issue's bounce/complaint thresholds
        self.breach: rates.Breach | None = None
        self.metered = False  # this run spends letter-package units

    def shut_down(self) -> None:
        """The worker is stopping (SIGTERM, Ctrl-C on the stack): start no new letter, let
        those in flight finish and be recorded, give the rest back as pending. Only this
        process halts (not the issue's Redis flag), so the issue stays Sending and the
        next runner, started by a worker's maintenance loop, carries on without repeats."""
        self._halt()

    def _halt(self) -> None:
        self.tally.halted.set()
        if self.loop is not None:
            self.loop.wake()

    # --- one run ----------------------------------------------------------------

    def run(self) -> Outcome:
        issue = db.session.get(Issue, self.issue_id, populate_existing=True)
        if issue is None or issue.status != IssueStatus.SENDING:
            db.session.commit()
            return Outcome("not sending")
        try:
            letter = build_letter(issue)
            self.relay = relay = relays.for_sender(issue.sender)
        except (LetterError, ValueError, RelayUnavailable) as exc:
            db.session.commit()
            return Outcome("interrupted", reason=str(exc))
        spread = bool(issue.spread_size and issue.spread_interval)
        sender_id = issue.sender_id
        self.limits = rates.Limits.of(issue.settings)
        self.triggered = issue.kind == triggers.TRIGGERED
        # Read once per run: every unit this run takes it also spends or gives back.
        self.metered = not settings.get("package_unlimited")
        relay_key = relay.key
        pacer = Pacer(self.signals.redis, relay_key, quiet=float(settings.get("pacing_quiet_seconds")),
                      step=float(settings.get("pacing_step_seconds")))
        self.loop = SendLoop(
            letter=letter, relay=relay.config, concurrency=self.concurrency, policy=self.policy, work=self.work,
            fields=self.fields, base_url=self.base_url, secret=self.secret, tally=self.tally,
            pacer=pacer, groups=Groups.load())
        self.warmup = Warmup.of(sender_id, self.signals)
        self._read_rate()
        db.session.commit()
        self.signals.heartbeat()
        self._last_renew = time.monotonic()
        sender = threading.Thread(target=self.loop.run, daemon=True, name="smtp-loop")
        self.signals.watch_halt(self._halt)
        sender.start()
        outcome: Outcome = Outcome("drained")
        try:
            outcome = self._claim_rounds(sender, letter, sender_id, spread)
            # The last letters may still be waiting out a relay blip: keep their leases
            # and this runner's heartbeat alive until the send loop is done with them.
            self.loop.closing.set()
            self.loop.wake()
            while sender.is_alive():
                sender.join(0.1)
                self._keep_alive()
        finally:
            self.loop.closing.set()
            self.loop.wake()
            sender.join()
            self.signals.stop_watching()
            self._settle()
        if self.loop.error is not None:
            raise self.loop.error  # the job fails visibly; what was not sent is pending again
        if self.breach is not None:
            return Outcome("interrupted", reason=self.breach.reason(), interrupt_kind="rates",
                           details=self.breach.details())
        if self.tally.relay_error:
            return Outcome("interrupted", reason=self.tally.relay_error, last_reply=self.tally.relay_reply)
        return outcome

    def _claim_rounds(self, sender: threading.Thread, letter: Letter, sender_id: int | None,
                      spread: bool) -> Outcome:
        """Claim chunk after chunk while the issue is Sending and the loop is alive."""
        assert self.loop is not None
        while True:
            if self.tally.halted.is_set() or not sender.is_alive() or self._status() != IssueStatus.SENDING:
                return Outcome("halted")
            if time.monotonic() - self._rate_read > 1.0:
                self._read_rate()
            limit = self.chunk
            if self.rate_limit:
                limit = min(limit, max(int(self.rate_limit * 2), 1))  # short leases under a cap
            if self.warmup is not None:
                limit = self.warmup.reserve(limit)
                if limit <= 0:
                    self._note_wait(self.warmup.note())
                    return Outcome("waiting", next_at=self.warmup.next_at())
            if spread:
                issue = db.session.get(Issue, self.issue_id, populate_existing=True)
                allowed = portion(issue)
                db.session.commit()
                if allowed.left is not None:
                    if allowed.left <= 0:
                        return Outcome("waiting", next_at=allowed.next_at)
                    limit = min(limit, allowed.left)
            taken = 0
            if self.metered:
                # Units are taken in the claim's transaction: the balance and the
                # claimed rows commit together (see models.LetterPackage).
                taken = package.take(limit)
                if self.warmup is not None:
                    self.warmup.give_back(limit - taken)
                if not taken:
                    db.session.commit()
                    return Outcome("exhausted")
                limit = taken
            # A dead runner's recipients (expired leases) are looked for every lease/4
            # seconds, not at every claim; the first claim always looks.
            reclaim = time.monotonic() - self._reclaimed_at >= self.lease / 4
            rows = store.claim(self.issue_id, self.owner, limit, self.lease, reclaim=reclaim)
            if reclaim:
                self._reclaimed_at = time.monotonic()
            if self.metered:  # reclaimed rows hold their dead runner's units already
                package.give_back(taken - sum(1 for r in rows if not r.reclaimed))
            db.session.commit()
            if self.warmup is not None:
                self.warmup.give_back(limit - len(rows))
            if not rows:
                if self._retry_soon() or (self.triggered and self._await_participants()):
                    continue
                return Outcome("drained")
            blocked = suppressed_among([r.email_key for r in rows], sender_id)
            for r in rows:
                if r.email_key in blocked:
                    self.tally.add(Result(r.id, D.SUPPRESSED, reason=blocked[r.email_key]))
            sendable = [r for r in rows if r.email_key not in blocked]
            if self.triggered:
                self.fields.update(triggers.letter_fields([r.id for r in sendable]))
            elif letter.custom_fields:
                self.fields.update(contact_store.letter_values(
                    [r.contact_id for r in sendable if r.contact_id is not None], letter.custom_fields))
            db.session.commit()
            self.work.extend(sendable)
            self.loop.wake()
            # Claim the next chunk when half of this one has left: the connections
            # never starve, and a claim never runs far ahead of the relay.
            while len(self.work) + self.loop.queued > max(self.concurrency, len(rows) // 2) \
                    and not self.tally.halted.is_set() and sender.is_alive():
                time.sleep(0.02)
                self._keep_alive()
            self._flush_if_due()

    def _keep_alive(self) -> None:
        """Between claims: flush replies, re-read the rate cap, renew leases and beat."""
        self._flush_if_due()
        if time.monotonic() - self._rate_read > 1.0:
            self._read_rate()
        if time.monotonic() - self._last_renew > self.lease / 3:
            store.renew_leases(self.issue_id, self.owner, self.lease)
            db.session.commit()
            self.signals.heartbeat()
            self._last_renew = time.monotonic()

    def _settle(self) -> None:
        """The loop is over: record the last replies, give back (or, when the issue is
        being cancelled, stop) what was never started, and leave."""
        assert self.loop is not None
        leftover = self.loop.unsent()  # still queued: never started
        self.loop.close()
        self._flush()
        if not (self._noted_wait or "").startswith(states.WARMUP):  # that wait lasts until tomorrow
            self._note_wait(None)
        unsent = self.tally.take_unsent() + leftover
        if self.warmup is not None:
            self.warmup.give_back(len(unsent))
        if self._status() == IssueStatus.STOPPING:
            returned = store.stop_claimed(self.issue_id, self.owner, unsent)
        else:
            returned = store.release(self.issue_id, self.owner, unsent)
        if self.metered:
            package.give_back(returned)
        db.session.commit()
        self.signals.leave()

    # --- flushing -----------------------------------------------------------------

    def _flush(self) -> None:
        batch = self.tally.take_results()
        held = self.tally.take_held()
        events = self.tally.take_events()
        if held:
            returned = store.hold_back(self.issue_id, self.owner, held)
            if self.metered:
                package.give_back(returned)
            if self.warmup is not None:
                self.warmup.give_back(len(held))
        for name, details in events:  # a receiving domain slowed down or recovered
            states.record(self.issue_id, name, details=details)
        if batch:
            counts = store.record(self.issue_id, self.owner, batch)
            if self.metered:  # a unit is spent when the relay answers; the rest come back
                package.give_back(sum(counts.values()) - counts[D.SENT] - counts[D.BOUNCED])
            done = issue_store.done_count(self.issue_id)
            db.session.commit()
            self.signals.progress(done)
            self._judge_rates(counts)
        elif held or events:
            db.session.commit()

    def _judge_rates(self, counts: Any) -> None:
        """Push this flush into the issue's rate window; a breach halts the run, which
        then ends as interrupted (lifecycle.after_run)."""
        processed = counts[D.SENT] + counts[D.BOUNCED] + counts[D.FAILED]
        if not processed or self.limits is None or self.breach is not None:
            return
        breach = rates.push(self.signals.redis, self.issue_id, self.limits, processed, counts[D.BOUNCED])
        if breach is not None:
            self.breach = breach
            self._halt()

    def _flush_if_due(self) -> None:
        if time.monotonic() - self._last_flush >= 0.25:
            self._flush()
            waiting = self.tally.relay_waiting
            self._note_wait(states.RELAY_WAIT + waiting if waiting
                            else states.PACED + self.tally.paced if self.tally.paced else None)
            self._last_flush = time.monotonic()

    def _note_wait(self, waiting: str | None) -> None:
        """Written only when it changes (see states.note_wait)."""
        if waiting != self._noted_wait:
            states.note_wait(self.issue_id, waiting)
            self._noted_wait = waiting

    def _retry_soon(self) -> bool:
        """Nothing is due, but a deferred letter is due within RETRY_SOON seconds (a
        receiving domain asked us to slow down): wait here rather than end the run and
        be started again."""
        at = store.next_retry_at(self.issue_id)
        db.session.commit()
        if at is None:
            return False
        wait = (at - utcnow()).total_seconds()
        if wait > RETRY_SOON:
            return False
        until = time.monotonic() + max(wait, 0.05)
        while time.monotonic() < until and not self.tally.halted.is_set():
            time.sleep(0.05)
            self._keep_alive()
        return True

    def _await_participants(self) -> bool:
        """Nobody due on a triggered mailing: wait for the next participant, woken by
        triggers.wake or seen due by a cheap count twice a second (one that arrived in a
        transaction committed after its wake-up), for up to TRIGGER_IDLE seconds."""
        until = time.monotonic() + TRIGGER_IDLE
        key = triggers.wake_key(self.issue_id)
        while time.monotonic() < until and not self.tally.halted.is_set():
            woken = self.signals.redis.blpop([key], timeout=0.5)
            self._keep_alive()
            if woken or store.due_count(self.issue_id, utcnow()):
                db.session.commit()
                return True
            db.session.commit()
            if self._status() != IssueStatus.SENDING:
                return False
        return False

    def _status(self) -> str:
        status = issue_store.status_of(self.issue_id)
        db.session.commit()
        return status

    def _read_rate(self) -> None:
        """Every second: the relay's cap and the domain groups, changeable while sending."""
        self.rate_limit = relays.current_cap(self.relay) if self.relay is not None else 0
        db.session.commit()
        self._rate_read = time.monotonic()
        if self.loop is not None:
            self.loop.rate_limit = self.rate_limit
            self.loop.groups = Groups.load()
            db.session.commit()
