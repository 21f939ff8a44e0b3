"""Contact queries the sending engine needs."""

from __future__ import annotations

import sqlalchemy as sa

from ..extensions import db
from ..models import Contact


def letter_values(contact_ids: list[int], wanted: set[str]) -> dict[int, dict[str, str]]:
    """The phone and custom fields a letter uses, for one claimed chunk: one query by
    primary key. Only the fields the letter names are kept, so a wide contact costs
    no more."""
    if not contact_ids:
        return {}
    rows = db.session.execute(sa.select(Contact.id, Contact.phone, Contact.attributes)
                              .where(Contact.id.in_(contact_ids))).all()
    out: dict[int, dict[str, str]] = {}
    for cid, phone, attrs in rows:
        values = {k: str(v) for k, v in (attrs or {}).items() if k in wanted and v is not None}
        if phone and "phone" in wanted:
            values["phone"] = phone
        out[cid] = values
    return out
