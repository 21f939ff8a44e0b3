"""The vocabularies every layer shares: issue status, delivery state, role.

A leaf module (it imports nothing of Outbox) so models, the state machine, the
queries, the engine and the views can all name a status without importing
each other.
"""

from __future__ import annotations

import enum


class IssueStatus(enum.StrEnum):
    DRAFT = "draft"  # being prepared; editable
    SCHEDULED = "scheduled"  # formed; starts at send_at, or waits for a user when postponed
    MODERATION = "moderation"  # held by the pre-send check; waits for a moderator
    ACCEPTED = "accepted"  # queued; inside the launch delay no mail leaves
    SENDING = "sending"  # mail is leaving
    PAUSED = "paused"  # held by a user
    STOPPING = "stopping"  # cancel asked while messages are in flight
    CANCELLED = "cancelled"  # final; part may have been sent
    INTERRUPTED = "interrupted"  # stopped by an error; resumable
    SENT = "sent"  # final; every recipient processed


class Role(enum.StrEnum):
    ADMIN = "admin"  # everything, plus users, senders and settings
    EDITOR = "editor"  # issues, contacts, lists, stop-lists
    MODERATOR = "moderator"  # the moderation queue; reads everything
    SUPPORT = "support"  # read-only everywhere


class DeliveryState(enum.StrEnum):
    PENDING = "pending"  # waiting for its turn
    SENDING = "sending"  # claimed by a worker under a lease
    SENT = "sent"  # the relay answered 2xx
    DEFERRED = "deferred"  # 4xx or timeout: retried later with backoff
    BOUNCED = "bounced"  # 5xx: permanent refusal
    FAILED = "failed"  # gave up after the retry limit
    SUPPRESSED = "suppressed"  # in an applicable stop-list when built
    STOPPED = "stopped_manually"  # the issue was cancelled before its turn


# States in which a delivery still waits for the relay.
OPEN_STATES = (DeliveryState.PENDING, DeliveryState.SENDING, DeliveryState.DEFERRED)
