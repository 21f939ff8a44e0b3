"""The relay in tests: aiosmtpd in the test process, keeping every letter, answering
chosen recipients with scripted replies."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter

from aiosmtpd.controller import Controller

from .base import free_port


class RecordingHandler:
    """Keeps every letter; can answer chosen recipients with scripted replies."""

    def __init__(self):
        self.lock = threading.Lock()
        self.letters: list[tuple[str, bytes, float]] = []
        self.mail_from: dict[str, str] = {}  # each recipient's envelope sender (MAIL FROM)
        self.scripted: dict[str, list[str]] = {}
        self.delay = 0.0
        self.pipelining = True  # as relays such as postfix and SES advertise it

    async def handle_EHLO(self, server, session, envelope, hostname, responses):  # noqa: N802
        session.host_name = hostname
        if self.pipelining:
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        with self.lock:
            queue = self.scripted.get(address)
            reply = queue.pop(0) if queue else None
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        if self.delay:
            await asyncio.sleep(self.delay)
        now = time.time()
        with self.lock:
            for rcpt in envelope.rcpt_tos:
                self.letters.append((rcpt, envelope.original_content or envelope.content, now))
                self.mail_from[rcpt] = envelope.mail_from
        return "250 2.0.0 Ok: queued"

    def counts(self) -> Counter:
        with self.lock:
            return Counter(r for r, _, _ in self.letters)


class SmtpServer:
    def __init__(self):
        self.port = free_port()
        self.handler = RecordingHandler()
        self.controller: Controller | None = None

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port,
                                     decode_data=False, ready_timeout=10)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None
