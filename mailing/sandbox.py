"""The sandbox mailbox: a local SMTP catch-all for development, and reading what it caught.

When SMTP_URL is unset, the launcher runs this server; every letter lands in
instance/maildir/ and the Sandbox mailbox page shows it.
"""

from __future__ import annotations

import argparse
import asyncio
import email
import email.policy
import mailbox
import signal
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from pathlib import Path

from aiosmtpd.controller import Controller


class MaildirHandler:
    """aiosmtpd handler: one file per recipient in a Maildir."""

    def __init__(self, path: str | Path):
        self.maildir = mailbox.Maildir(str(path), create=True)

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's name)
        data = envelope.original_content or envelope.content
        if isinstance(data, str):
            data = data.encode("utf-8")
        keys = []
        for rcpt in envelope.rcpt_tos:
            msg = mailbox.MaildirMessage(b"X-Envelope-To: " + rcpt.encode() + b"\r\n" + data)
            keys.append(self.maildir.add(msg))
        return f"250 2.0.0 Ok: queued as {keys[0] if keys else '-'}"


def serve(host: str, port: int, maildir: str) -> Controller:
    controller = Controller(MaildirHandler(maildir), hostname=host, port=port,
                            data_size_limit=50 * 1024 * 1024, decode_data=False)
    controller.start()
    return controller


def main() -> None:
    parser = argparse.ArgumentParser(description="Outbox sandbox SMTP catch-all")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=2525)
    parser.add_argument("--maildir", required=True)
    args = parser.parse_args()
    controller = serve(args.host, args.port, args.maildir)
    print(f"sandbox SMTP on {args.host}:{args.port} -> {args.maildir}", flush=True)
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.run_until_complete(stop.wait())
    controller.stop()


@dataclass
class CaughtLetter:
    key: str
    to: str
    subject: str
    sender: str
    date: datetime | None
    message_id: str
    html: str
    text: str
    headers: list[tuple[str, str]]


def _parse(key: str, raw: bytes) -> CaughtLetter:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    html = text = ""
    for part in msg.walk():
        ctype = part.get_content_type()
        if ctype == "text/html" and not html:
            html = part.get_content()
        elif ctype == "text/plain" and not text:
            text = part.get_content()
    try:
        date = parsedate_to_datetime(msg["Date"]) if msg["Date"] else None
    except (TypeError, ValueError):
        date = None
    return CaughtLetter(
        key=key, to=str(msg.get("X-Envelope-To") or msg.get("To") or ""),
        subject=str(msg.get("Subject") or ""), sender=str(msg.get("From") or ""), date=date,
        message_id=str(msg.get("Message-ID") or ""), html=html, text=text,
        headers=[(k, str(v)) for k, v in msg.items()],
    )


def list_letters(path: str, offset: int = 0, limit: int = 50) -> tuple[int, list[CaughtLetter]]:
    """Newest first; only the page's files are read and parsed."""
    root = Path(path)
    files = []
    for sub in ("new", "cur"):
        d = root / sub
        if d.is_dir():
            files.extend(d.iterdir())
    files.sort(key=lambda p: (p.stat().st_mtime, p.name), reverse=True)
    page = files[offset: offset + limit]
    return len(files), [_parse(p.name.split(":")[0], p.read_bytes()) for p in page]


def read_letter(path: str, key: str) -> CaughtLetter | None:
    try:
        box = mailbox.Maildir(path, create=False)
        return _parse(key, box.get_bytes(key))
    except (KeyError, FileNotFoundError, mailbox.Error):
        return None


if __name__ == "__main__":
    main()
