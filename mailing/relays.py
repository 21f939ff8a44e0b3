"""Which relay a sender's letters go through, and how fast.

A sender either has its own relay (address, credentials, TLS mode, cap) or uses the
default relay (`SMTP_URL`) under the global cap (`relay_rate_per_second`). The own
relay's URL, credentials included, is stored sealed (`secretbox`, a key derived from
SECRET_KEY) and unsealed only to connect; the admin page learns whether a password is
set, never the password. Each relay has its own cap counter (`Relay.key`), so one
sender's relay neither slows nor stops another's: a relay that goes down interrupts
only the issues sending through it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from urllib.parse import quote, unquote, urlsplit

import sqlalchemy as sa
from flask import current_app
from flask_babel import gettext as _

from . import redact, settings
from .extensions import db
from .fielderror import FieldError
from .models import Sender
from .secretbox import seal, unseal
from .sending.transport import RelayConfig, RelayUnavailable

TLS_MODES = ("starttls", "tls", "none")
DEFAULT_PORTS = {"starttls": 587, "tls": 465, "none": 25}


@dataclass(frozen=True)
class Relay:
    config: RelayConfig
    cap: int  # messages per second over every runner on this relay; 0: none
    key: str  # names the relay's cap counter, shared by the runners on it
    sender_id: int | None = None  # whose own relay this is; None: the default relay


@dataclass(frozen=True)
class RelayView:
    """A sender's own relay as the admin page shows it: everything but the password."""
    address: str  # smtp://host:port or smtps://host:port
    tls: str
    user: str
    password_set: bool
    cap: int | None


class RelayInputError(FieldError):
    """What the admin typed cannot be a relay; `field` is where the error goes."""


# --- the relay a run uses -------------------------------------------------------

def for_sender(sender: Sender | None) -> Relay:
    """The sender's own relay and cap, else the default relay and the global cap."""
    timeout = float(current_app.config["SMTP_TIMEOUT"])
    if sender is not None and sender.relay_url_sealed:
        url = _url_of(sender)
        config = replace(RelayConfig.from_url(url, timeout=timeout), security=sender.relay_tls or "starttls")
        relay = Relay(config, 0, f"sender-{sender.id}", sender.id)
        return replace(relay, cap=current_cap(relay))
    url = current_app.config["SMTP_URL"]
    if not url:
        raise RelayUnavailable("SMTP_URL is not set and no sandbox server is running")
    config = RelayConfig.from_url(url, timeout=timeout)
    relay = Relay(config, 0, f"{config.host}:{config.port}")
    return replace(relay, cap=current_cap(relay))


def current_cap(relay: Relay) -> int:
    """The relay's cap as it is now (the runner asks every second, so an admin's change
    applies without a restart): the sender's own cap, else the global setting."""
    if relay.sender_id is not None:
        own = db.session.scalar(sa.select(Sender.relay_rate_per_second).where(Sender.id == relay.sender_id))
        if own is not None:
            return int(own)
    return int(settings.get("relay_rate_per_second") or 0)


def _url_of(sender: Sender) -> str:
    try:
        url = unseal(sender.relay_url_sealed or "")
    except ValueError:  # a changed SECRET_KEY or a damaged value: say what to do
        raise RelayUnavailable(
            f"the relay settings of sender {sender.email} cannot be decrypted (was SECRET_KEY "
            "changed?): set the relay again on the Senders page") from None
    redact.remember_relay(url)  # this process may now quote it: teach redaction its password
    return url


# --- the admin's view and changes ------------------------------------------------

def view(sender: Sender) -> RelayView | None:
    """The sender's own relay for the admin page, the password left out; None: default."""
    if not sender.relay_url_sealed:
        return None
    try:
        url = unseal(sender.relay_url_sealed)
    except ValueError:  # undecryptable (SECRET_KEY changed): shown as set, to be entered again
        return RelayView("?", sender.relay_tls or "starttls", "", True, sender.relay_rate_per_second)
    parts = urlsplit(url)
    return RelayView(f"{parts.scheme}://{_host_port(parts.hostname or '', parts.port)}",
                     sender.relay_tls or "starttls", unquote(parts.username or ""), bool(parts.password),
                     sender.relay_rate_per_second)


def parse_address(text: str, tls: str) -> tuple[str, int]:
    """(host, port) of the relay address an admin typed: smtp://host:port,
    smtps://host:port (implicit TLS) or host:port; the port defaults by TLS mode."""
    text = (text or "").strip()
    if not text:
        raise RelayInputError("url", _("Give the relay's address, e.g. smtp://relay.example.com:587."))
    if "://" not in text:
        text = f"smtp://{text}"
    try:
        parts = urlsplit(text)
    except ValueError:  # e.g. an unclosed [IPv6 bracket
        raise RelayInputError("url", _("The address must be smtp://host:port, e.g. smtp://relay.example.com:587.")) \
            from None
    try:
        port = parts.port
    except ValueError:
        raise RelayInputError("url", _("The port must be a number from 1 to 65535.")) from None
    if parts.scheme not in ("smtp", "smtps"):
        raise RelayInputError("url", _("The address must start with smtp:// or smtps://."))
    if "@" in parts.netloc:
        raise RelayInputError("url", _("Give the user name and password in their own fields, not in the address."))
    if parts.path not in ("", "/") or parts.query or parts.fragment or not parts.hostname \
            or any(c.isspace() for c in text):
        raise RelayInputError("url", _("The address must be smtp://host:port, e.g. smtp://relay.example.com:587."))
    if parts.scheme == "smtps" and tls != "tls":
        raise RelayInputError("tls", _("smtps:// is implicit TLS: choose implicit TLS, or write smtp://."))
    if port == 0:
        raise RelayInputError("url", _("The port must be a number from 1 to 65535."))
    return parts.hostname, port or DEFAULT_PORTS[tls]


def save(sender: Sender, *, url: str, tls: str, user: str, password: str, cap: int | None) -> None:
    """Give the sender its own relay (or change it). An empty password keeps the one stored
    when the user name is unchanged. Credentials need TLS. The caller commits."""
    if tls not in TLS_MODES:
        raise RelayInputError("tls", _("Choose STARTTLS, implicit TLS or no TLS."))
    host, port = parse_address(url, tls)
    user = (user or "").strip()
    current = view(sender)
    if not password and user and current is not None and current.password_set and current.user == user:
        password = _password_of(sender)  # "leave blank to keep"
    if password and not user:
        raise RelayInputError("user", _("Give the user name that goes with the password."))
    if user and not password:
        raise RelayInputError("password", _("Give the password for this user name."))
    if user and tls == "none":
        raise RelayInputError("tls", _("A password is sent only over TLS: choose STARTTLS or implicit TLS."))
    if cap is not None and cap < 0:
        raise RelayInputError("cap", _("The cap is a number of messages per second, 0 or more."))
    scheme = "smtps" if tls == "tls" else "smtp"
    userinfo = f"{quote(user, safe='')}:{quote(password, safe='')}@" if user else ""
    sealed_url = f"{scheme}://{userinfo}{_host_port(host, port)}"
    try:
        RelayConfig.from_url(sealed_url)  # what the runner will parse: refused here, not at send time
    except ValueError:
        raise RelayInputError("url", _("The address must be smtp://host:port, e.g. smtp://relay.example.com:587.")) \
            from None
    sender.relay_url_sealed = seal(sealed_url)
    sender.relay_tls = tls
    sender.relay_rate_per_second = cap


def clear(sender: Sender) -> None:
    """Back to the default relay and the global cap; the sealed credentials are dropped."""
    sender.relay_url_sealed = None
    sender.relay_tls = None
    sender.relay_rate_per_second = None


def _password_of(sender: Sender) -> str:
    return unquote(urlsplit(_url_of(sender)).password or "")


def _host_port(host: str, port: int | None) -> str:
    host = f"[{host}]" if ":" in host else host  # an IPv6 address
    return f"{host}:{port}" if port else host
