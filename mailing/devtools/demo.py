"""Demo data for an empty database: users of every role, senders, 1,000 contacts, a draft issue."""

from __future__ import annotations

import random
from pathlib import Path

import sqlalchemy as sa

from mailing.cli import create_user
from mailing.extensions import db
from mailing.models import Contact, ContactList, Issue, Role, Sender, User, list_members
from mailing.stoplists import ensure_system_lists

FIRST = ["Anna", "Boris", "Chloé", "Dmitri", "Elena", "François", "Grace", "Håkon", "Irina", "José",
         "Анна", "Иван", "Мария", "Пётр", "Ольга", "Сергей", "Zoë", "Łukasz", "Noël", "Sven"]
LAST = ["Smith", "Иванов", "Müller", "García", "Петрова", "O'Brien", "Dubois", "Kowalski", "Rossi", "Ли"]


def seed(instance: Path) -> list[tuple[str, str, str]]:
    """Seed once; returns the demo logins (read back from instance/ on later runs)."""
    logins_file = instance / "demo-logins.txt"
    ensure_system_lists()
    db.session.commit()
    if db.session.scalar(sa.select(sa.func.count()).select_from(User)):
        if logins_file.exists():
            return [tuple(line.split("\t")) for line in logins_file.read_text().splitlines() if line]  # type: ignore[misc]
        return []
    logins = []
    for role in Role:
        email = f"{role.value}@outbox.local"
        _u, pw = create_user(email, role.value)
        logins.append((email, role.value, pw))
    logins_file.write_text("".join(f"{e}\t{r}\t{p}\n" for e, r, p in logins))
    logins_file.chmod(0o600)
    news = Sender(name="Outbox News", email="news@outbox.local")
    db.session.add_all([news, Sender(name="Outbox Support", email="support@outbox.local")])
    demo = ContactList(name="Demo subscribers")
    db.session.add(demo)
    db.session.flush()
    rng = random.Random(7)
    contacts = [
        {"email": f"reader{i:04d}@example.org", "name": f"{rng.choice(FIRST)} {rng.choice(LAST)}",
         "attributes": {}}
        for i in range(1, 1001)
    ]
    db.session.execute(sa.insert(Contact), contacts)
    ids = db.session.scalars(sa.select(Contact.id).where(Contact.email.like("reader%@example.org")))
    db.session.execute(sa.insert(list_members), [{"list_id": demo.id, "contact_id": i} for i in ids])
    admin = db.session.scalar(sa.select(User).where(User.role == Role.ADMIN))
    db.session.add(Issue(
        subject="Our November news", sender_id=news.id, list_id=demo.id, created_by_id=admin.id if admin else None,
        body_html=(
            "<h1>Hello, {{ name }}!</h1>\n<p>This month at Outbox: faster sending and a pause "
            "that really stops.</p>\n<p><small>This letter was sent to {{ email }}. "
            '<a href="{{ unsubscribe_url }}">Unsubscribe</a></small></p>'
        ),
    ))
    db.session.commit()
    return logins
