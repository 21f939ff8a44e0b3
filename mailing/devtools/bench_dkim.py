"""`flask bench send --dkim`: the send benchmark with every letter DKIM-signed (RSA-2048).

The timed run goes to the fast sink (postfix's smtp-sink), which keeps no letters. So that
`verified` counts real letters at a real sink, a sample issue is sent afterwards through
the same path (same sender, key and letter, fresh workers) to an aiosmtpd server that
keeps every letter, and each is verified with dkimpy against the key's DNS record
(served to the verifier without DNS). The timed figure pays nothing for the sample.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

BENCH_DOMAIN = "bench.test"
SAMPLE = 1000  # letters verified at the capturing sink


def prepare(issue_id: int) -> dict[str, float]:
    """The bench sender's domain gets an RSA-2048 key, active at once; what signing then
    costs in this process (measured before the workers start, on a quiet machine)."""
    from mailing import dkim
    from mailing.extensions import db

    dkim.generate(BENCH_DOMAIN, dkim.RSA)
    db.session.commit()
    return signing_cost(issue_id)


def signing_cost(issue_id: int, letters: int = 2000) -> dict[str, float]:
    """In-process µs per letter: built and signed, built only (the difference is the
    signature: canonicalisation, two SHA-256 and one RSA-2048 private operation)."""
    from mailing.extensions import db
    from mailing.models import Issue
    from mailing.sending.letter import Recipient
    from mailing.sending.runner import build_letter

    letter = build_letter(db.session.get(Issue, issue_id))
    db.session.commit()
    recipients = [Recipient(i, i, f"r{i:07d}@bench.test", "Анна Reader", f"http://127.0.0.1:5000/u/{i}")
                  for i in range(letters)]

    def per_letter() -> float:
        started = time.perf_counter()
        for r in recipients:
            letter.build(r)
        return (time.perf_counter() - started) / letters * 1e6

    signed = per_letter()
    letter.sign = None
    plain = per_letter()
    return {"build_and_sign_us_per_letter": round(signed, 1), "build_us_per_letter": round(plain, 1),
            "sign_us_per_letter": round(signed - plain, 1)}


class Capture:
    """An aiosmtpd server on loopback that keeps every letter it is given."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.letters: list[bytes] = []
        self.lock = threading.Lock()
        capture = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
                with capture.lock:
                    capture.letters.append(envelope.original_content or envelope.content)
                return "250 2.0.0 Ok"

        with socket.socket() as s:  # a free port
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port, decode_data=False)
        self.controller.start()

    def close(self) -> None:
        self.controller.stop()


def verify_sample(stack: Any, timed_issue_id: int, workers: int, wait: Callable[..., Any],
                  n: int = SAMPLE) -> dict[str, int]:
    """Send a copy of the timed issue to `n` of its recipients through a capture server and
    verify every letter; the stack's workers are replaced by ones sending there."""
    import dkim as dkimpy  # a development dependency: only this bench verifies

    from mailing import dkim, lifecycle
    from mailing.extensions import db
    from mailing.models import ContactList, DkimKey, Issue, list_members

    from .launcher import stop_tree

    for p in stack.workers:
        stop_tree(p, 15)
    stack.workers.clear()
    capture = Capture()
    try:
        timed = db.session.get(Issue, timed_issue_id)
        lst = ContactList(name="dkim sample")
        db.session.add(lst)
        db.session.flush()
        # The timed issue's first recipients again: people who already got a letter, so the
        # pre-send check (mailing/moderation.py) lets the sample through as it would a send.
        members = db.session.scalars(sa.select(list_members.c.contact_id).where(
            list_members.c.list_id == timed.list_id).order_by(list_members.c.contact_id).limit(n)).all()
        db.session.execute(sa.insert(list_members), [{"list_id": lst.id, "contact_id": c} for c in members])
        sample = Issue(subject=timed.subject, body_html=timed.body_html, sender_id=timed.sender_id, list_id=lst.id)
        db.session.add(sample)
        db.session.commit()
        stack.start_workers(workers, SMTP_URL=f"smtp://127.0.0.1:{capture.port}")
        time.sleep(2)  # workers import and connect
        lifecycle.launch(sample.id, "bench")
        status = wait(sample.id, {"sent", "interrupted", "moderation"}, 600)
        keys = db.session.scalars(sa.select(DkimKey).where(DkimKey.domain == BENCH_DOMAIN)).all()
        records = {(dkim.record_name(k) + ".").encode(): dkim.record_value(k).encode() for k in keys}
        db.session.commit()

        def lookup(name: bytes, timeout: int = 5) -> bytes:
            return records.get(name, b"")

        with capture.lock:
            letters = list(capture.letters)
        verified = sum(1 for raw in letters if dkimpy.verify(raw, dnsfunc=lookup))
        return {"verify_sample": len(members), "verify_issue_status": status,
                "verify_received": len(letters), "verified": verified, "verify_failed": len(letters) - verified}
    finally:
        capture.close()
