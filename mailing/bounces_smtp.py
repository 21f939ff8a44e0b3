"""The bounce listener: an SMTP server (aiosmtpd) a bounce domain's MX points at.

It accepts any recipient at the bounce domain (and refuses others, so it is never an open
relay), and answers the DATA command only after the report is stored (applied or
quarantined by mailing/bounces.py): a 250 means the report is safe, and an error makes
the sending server try again later. A message over BOUNCE_MAX_BYTES is refused with 552
at the SMTP level and never read.
"""

from __future__ import annotations

import threading

from aiosmtpd.controller import Controller
from flask import Flask


class _Handler:
    def __init__(self, app: Flask):
        self.app = app
        self.domain = app.config.get("BOUNCE_DOMAIN") or ""
        self.lock = threading.Lock()  # one report at a time through the app's database session

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        if self.domain and not address.lower().endswith("@" + self.domain):
            return "550 5.7.1 Not a bounce address of this domain"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        from .bounces import receive_one

        raw = envelope.original_content or envelope.content
        try:
            with self.lock, self.app.app_context():
                receive_one(raw, "smtp", list(envelope.rcpt_tos))
        except Exception:  # stored nothing: the sender keeps the report and retries
            return "451 4.3.0 Could not store the report, try again later"
        return "250 2.0.0 Report received"


def controller(app: Flask, host: str, port: int) -> Controller:
    max_bytes = int(app.config.get("BOUNCE_MAX_BYTES") or 1_048_576)
    return Controller(_Handler(app), hostname=host, port=port, decode_data=False,
                      data_size_limit=max_bytes, ready_timeout=10)


def serve(app: Flask, host: str, port: int) -> None:
    """Run until interrupted."""
    c = controller(app, host, port)
    c.start()
    print(f"bounce listener on {host}:{port}" + (f" for @{app.config['BOUNCE_DOMAIN']}"
                                                 if app.config.get("BOUNCE_DOMAIN") else ""), flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        c.stop()
