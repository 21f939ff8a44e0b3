"""Secrets out of text: relay, database and Redis passwords (and the secret key) never reach
a page, an issue's status reason, a journal row or a log line.

`redact(text)` is the one function: it masks the password of any URL in the text
(`smtp://user:***@host`), and any configured secret the text holds literally, whatever
surrounds it (a malformed URL that no pattern recognises still holds the password).
`remember(config)` teaches it the configured secrets; `install_log_redaction()` runs every
log record of the process through it.
"""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, unquote

MASK = "***"
# Secrets shorter than this are not replaced in free text (they would mangle ordinary
# words); URL passwords are masked whatever their length by the pattern below.
_MIN_SECRET = 4
# scheme://userinfo@ : the userinfo runs to the last "@" before the host (a password may
# hold an unencoded "@"), and stops at whitespace, quotes, brackets and "/".
_URL_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^\s/'\"<>()\[\]]*)@")
_CONFIG_URLS = ("SMTP_URL", "SQLALCHEMY_DATABASE_URI", "DATABASE_URL", "REDIS_URL", "BENCH_DATABASE_URL")
_secrets: set[str] = set()


def _mask_userinfo(match: re.Match[str]) -> str:
    user, colon, _password = match.group("userinfo").partition(":")
    return f"{match.group('scheme')}{user}{':' + MASK if colon else ''}@"


def _credentials(url: str) -> tuple[str, str]:
    """(user, password) of a URL, by pattern rather than urlsplit: a malformed URL (a bad
    port, NFKC-unsafe characters) must still give up its password."""
    match = _URL_USERINFO.search(url or "")
    if not match:
        return "", ""
    user, _colon, password = match.group("userinfo").partition(":")
    return user, password


def remember(config: Mapping[str, Any]) -> None:
    """Learn the secrets of this configuration (a process may serve several apps, as tests
    do: the set only grows)."""
    found: set[str] = set()
    key = config.get("SECRET_KEY")
    if isinstance(key, str):
        found.add(key)
    for name in _CONFIG_URLS:
        url = config.get(name)
        if isinstance(url, str):
            found.update(_url_secrets(url, smtp=name == "SMTP_URL"))
    _secrets.update(s for s in found if len(s) >= _MIN_SECRET)


def remember_relay(url: str) -> None:
    """Learn the password of a relay URL kept outside the configuration (a sender's own
    relay, unsealed from the database when a runner or a test letter needs it)."""
    _secrets.update(s for s in _url_secrets(url, smtp=True) if len(s) >= _MIN_SECRET)


def _url_secrets(url: str, smtp: bool) -> set[str]:
    found: set[str] = set()
    user, password = _credentials(url)
    if not password:
        return found
    for pw in {password, unquote(password)}:
        found.update({pw, quote(pw, safe=""), quote(pw)})
        # The pieces a URL parser makes of a password holding an unencoded delimiter
        # (a "#" starts a fragment, a ":" a port), which its errors then quote.
        found.update(re.split(r"[#/?@:\[\]]", pw))
        if smtp:  # what AUTH PLAIN and AUTH LOGIN put on the wire
            plain_user = unquote(user)
            found.add(base64.b64encode(f"\0{plain_user}\0{pw}".encode()).decode())
            found.add(base64.b64encode(pw.encode()).decode())
    return found


def redact(text: Any, *urls: str) -> Any:
    """`text` with URL passwords and known secrets masked; the passwords of `urls` too (a
    URL being parsed right now, not yet remembered)."""
    if not isinstance(text, str) or not text:
        return text
    text = _URL_USERINFO.sub(_mask_userinfo, text)
    extra = {p for p in (_credentials(u)[1] for u in urls) if p}
    for secret in sorted(_secrets | extra | {unquote(p) for p in extra}, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def redact_value(value: Any) -> Any:
    """Strings anywhere inside JSON-like data (journal details) redacted."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_value(v) for v in value]
    return value


def _scrub(record: logging.LogRecord) -> None:
    try:
        message = record.getMessage()
    except Exception:  # a broken format string is the logging module's to report
        return
    clean = redact(message)
    if clean != message:
        record.msg, record.args = clean, None
    if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
        text = logging.Formatter().formatException(record.exc_info)
        clean = redact(text)
        if clean != text:
            record.exc_text = clean  # formatters use it instead of formatting the traceback
    if record.stack_info:
        record.stack_info = redact(record.stack_info)


def install_log_redaction() -> None:
    """Every log record made in this process, by any logger (RQ's, gunicorn's, Flask's),
    passes through `redact` when it is created: a filter on one handler would miss the
    others, and pytest's capture too."""
    current = logging.getLogRecordFactory()
    if getattr(current, "redacting", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = current(*args, **kwargs)
        _scrub(record)
        return record

    factory.redacting = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)
