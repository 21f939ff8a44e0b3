"""The letter package's one row: take units for a claim, give back what was not spent.

Every statement is a single conditional UPDATE on that row, run inside the caller's
transaction beside the delivery rows it accounts for, so the balance and the recipients
in `sending` move together or not at all (see models.LetterPackage). On PostgreSQL the
row lock serialises runners taking units, and READ COMMITTED re-checks `balance >= n`
after the wait, so two runners can never take the same units; SQLite has one writer.
"""

from __future__ import annotations

import sqlalchemy as sa

from ..extensions import db
from ..models import LetterPackage

package = LetterPackage.__table__
_ROW = package.c.id == 1


def balance() -> int:
    return int(db.session.scalar(sa.select(package.c.balance).where(_ROW)) or 0)


def take(n: int) -> int:
    """Take up to `n` units; returns how many were taken (0 when the package is empty).
    A runner that loses a race for the last units retries with what is left."""
    for _attempt in range(5):
        want = min(n, balance())
        if want <= 0:
            return 0
        taken = db.session.execute(
            sa.update(package).where(_ROW, package.c.balance >= want).values(balance=package.c.balance - want))
        if taken.rowcount:
            return want
    return 0


def give_back(n: int) -> None:
    if n > 0:
        db.session.execute(sa.update(package).where(_ROW).values(balance=package.c.balance + n))


def top_up(n: int) -> int:
    """Add `n` units; returns the new balance."""
    give_back(n)
    return balance()
