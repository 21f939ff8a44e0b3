"""The identity of an email address: as given (what we send to), its match key (who the
person is), and its form on the wire.

A person is one address key everywhere: contacts, list membership, stop-lists,
unsubscribes, complaints, lookups. The key is case-insensitive in the local part and the
domain, with the domain as its IDNA A-label: `User@Пример.РФ`, `user@пример.рф` and
`user@xn--e1afmkfd.xn--p1ai` are one person. RFC 5321 lets a local part be
case-sensitive, but no mailbox provider behaves so, and every serious email service
matches people this way.

On the wire a Unicode domain travels as its A-label; a non-ASCII local part cannot be
written in ASCII at all and needs the relay's SMTPUTF8 (RFC 6531).
"""

from __future__ import annotations

import functools
import re
import unicodedata

from email_validator import EmailNotValidError, validate_email

__all__ = ["EmailNotValidError", "email_key", "is_valid_email", "key_of", "needs_smtputf8", "normalise_email",
           "normalise_key", "search_form", "wire_address"]

# The common case, an ASCII dot-atom local part (RFC 5322 3.2.3): only its domain needs
# email-validator's full check, and a file of a million addresses has few domains.
_DOT_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")


@functools.lru_cache(maxsize=4096)
def _domain(domain: str) -> tuple[str, str]:
    """(the domain as shown, its A-label) for a domain email-validator accepts."""
    checked = validate_email(f"a@{domain}", check_deliverability=False)
    return checked.domain, checked.ascii_domain.lower()


def _split(value: str) -> tuple[str, str, str]:
    """(local part, shown domain, A-label domain) of a valid address, else EmailNotValidError."""
    value = value.strip()
    local, at, domain = value.rpartition("@")
    if at and len(value) <= 254 and len(local) <= 64 and _DOT_ATOM.fullmatch(local):
        try:
            shown, ascii_domain = _domain(domain)
            return local, shown, ascii_domain
        except EmailNotValidError:
            pass  # let the full check below say what is wrong
    checked = validate_email(value, check_deliverability=False)
    return checked.local_part, checked.domain, checked.ascii_domain.lower()


def normalise_email(value: str) -> str:
    """The address as stored and sent to: checked without DNS, the local part as given
    (NFC), the domain lower-cased in its Unicode form."""
    local, shown, _ascii = _split(value)
    return f"{local}@{shown}"


def normalise_key(value: str) -> tuple[str, str]:
    """(address as stored, match key) in one check."""
    local, shown, ascii_domain = _split(value)
    return f"{local}@{shown}", f"{_fold(local)}@{ascii_domain}"


def email_key(value: str) -> str:
    """The match key of an address: what every comparison of people uses."""
    return normalise_key(value)[1]


def key_of(address: str) -> str:
    """The key of an address already stored: the same as `email_key` for every address
    email-validator accepts, and a plain case fold for one it now refuses (a reserved
    domain such as .test, rules that changed), so a stored address always has a key."""
    try:
        return email_key(address)
    except EmailNotValidError:
        local, _, domain = address.strip().rpartition("@")
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError:
            pass
        return f"{_fold(local)}@{domain.lower()}"


def _fold(local: str) -> str:
    return local.lower() if local.isascii() else unicodedata.normalize("NFC", local).lower()


def is_valid_email(value: str) -> bool:
    try:
        _split(value)
    except EmailNotValidError:
        return False
    return True


def needs_smtputf8(address: str) -> bool:
    """True when the local part is not ASCII: only a relay offering SMTPUTF8 can take it."""
    return not address.rpartition("@")[0].isascii()


@functools.lru_cache(maxsize=4096)
def _a_label(domain: str) -> str:
    try:
        return _domain(domain)[1]
    except EmailNotValidError:
        return domain.encode("idna").decode("ascii")  # UnicodeError when it cannot be written


def wire_address(address: str) -> str:
    """The address as RCPT TO and the To header carry it: the domain as its A-label."""
    if address.isascii():
        return address
    local, _, domain = address.rpartition("@")
    return f"{local}@{domain if domain.isascii() else _a_label(domain)}"


def search_form(q: str) -> str:
    """What a search for `q` looks for among keys: a whole address as its key, else the
    text lower-cased."""
    q = q.strip()
    if "@" in q and is_valid_email(q):
        return email_key(q)
    return q.lower()
