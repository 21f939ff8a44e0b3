"""The letter package (seed 004): the account's balance of letters, and its top-ups.

When the `package_unlimited` setting is off, every letter sent spends one unit: an issue
is launched only with a positive balance, is interrupted with "package exhausted" when
the units run out mid-send, and after a top-up Resume continues from where it stopped.
How units are taken and given back while sending is in store/package.py and the runner.
"""

from __future__ import annotations

from typing import Any

from flask_babel import gettext as _

from . import settings
from .extensions import db
from .fielderror import FieldError
from .states import record
from .store import package as store

MAX_TOP_UP = 1_000_000_000
EXHAUSTED = "package exhausted"  # the status reason of an issue the package stopped


class PackageError(FieldError):
    """A top-up that cannot be applied (HTTP 400), with its field."""


def unlimited() -> bool:
    return bool(settings.get("package_unlimited"))


def balance() -> int | None:
    """The balance, or None when letters are unlimited."""
    return None if unlimited() else store.balance()


def empty() -> bool:
    return not unlimited() and store.balance() <= 0


def top_up(amount: Any, actor: Any) -> int:
    """Add letters; journalled with the amount, who and the balance after. Commits."""
    try:
        n = int(str(amount).strip())
    except ValueError:
        raise PackageError("amount", _("Give the number of letters to add.")) from None
    if not 0 < n <= MAX_TOP_UP:
        raise PackageError("amount", _("Add between 1 and %(max)s letters.", max=f"{MAX_TOP_UP:,}"))
    after = store.top_up(n)
    record(None, "package_topped_up", actor=actor, details={"amount": n, "balance": after})
    db.session.commit()
    return after


def set_unlimited(on: bool, actor: Any) -> None:
    if bool(settings.get("package_unlimited")) == on:
        return
    settings.put("package_unlimited", on)
    record(None, "package_mode", actor=actor, details={"unlimited": on})
    db.session.commit()
