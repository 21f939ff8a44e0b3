"""Sending one issue: the runner (runner.py: claim → send → flush, returning an
outcome), the send loop (loop.py: one selector, one `Connection` per relay
connection), the rules (policy.py: pure, tested without sockets), the Redis
signals (signals.py: halt, heartbeat, rate tokens, progress), the letter
(letter.py) and SMTP (transport.py). What a run means for the issue is decided
by lifecycle.after_run."""
