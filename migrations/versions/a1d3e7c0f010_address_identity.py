"""address identity keys and letter fields

One person is one address key (mailing.addresses): contacts, deliveries and stop-list
entries gain it, contacts that were case or IDN variants of one address are merged
(the oldest wins; lists, fields and deliveries move over; the merge is journalled), and
email stop-list entries are re-keyed. Issues gain a plain-text part, a preheader, a
From name and a Reply-To.

Revision ID: a1d3e7c0f010
Revises: 826ef1d11025
Create Date: 2026-11-23 17:30:00

"""
import json
from collections import defaultdict
from datetime import datetime, timezone

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'a1d3e7c0f010'
down_revision = '826ef1d11025'
branch_labels = None
depends_on = None


def _key(address):
    from mailing.addresses import key_of
    try:
        return key_of(address)
    except UnicodeError:
        return address.strip().lower()


def _now():
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _attrs(value):
    if isinstance(value, str):
        value = json.loads(value or "{}")
    return dict(value or {})


def upgrade():
    bind = op.get_bind()
    op.create_table('contact_fields',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_contact_fields'))
    )
    with op.batch_alter_table('issues', schema=None) as batch_op:
        batch_op.add_column(sa.Column('body_text', sa.Text(), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('preheader', sa.String(length=300), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('from_name', sa.String(length=200), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('reply_to', sa.String(length=254), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('custom_headers', sa.Text(), nullable=False, server_default=''))
    with op.batch_alter_table('contacts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('email_key', sa.String(length=254), nullable=True))
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.add_column(sa.Column('email_key', sa.String(length=254), nullable=True))

    contacts = sa.table('contacts', sa.column('id', sa.Integer), sa.column('email', sa.String),
                        sa.column('email_key', sa.String), sa.column('name', sa.String),
                        sa.column('phone', sa.String), sa.column('attributes', sa.JSON),
                        sa.column('created_at', sa.DateTime))
    members = sa.table('list_members', sa.column('list_id', sa.Integer), sa.column('contact_id', sa.Integer))
    deliveries = sa.table('deliveries', sa.column('id', sa.Integer), sa.column('issue_id', sa.Integer),
                          sa.column('contact_id', sa.Integer), sa.column('email', sa.String),
                          sa.column('email_key', sa.String))
    entries = sa.table('stop_entries', sa.column('id', sa.Integer), sa.column('list_id', sa.Integer),
                       sa.column('kind', sa.String), sa.column('value', sa.String),
                       sa.column('sender_id', sa.Integer))
    journal = sa.table('journal_events', sa.column('event', sa.String), sa.column('actor_label', sa.String),
                       sa.column('reason', sa.Text), sa.column('details', sa.JSON),
                       sa.column('created_at', sa.DateTime))
    fields = sa.table('contact_fields', sa.column('name', sa.String), sa.column('created_at', sa.DateTime))

    # Keys for every contact, then the groups that share one.
    groups = defaultdict(list)
    names = set()
    for cid, email, created, attrs in bind.execute(sa.select(
            contacts.c.id, contacts.c.email, contacts.c.created_at, contacts.c.attributes)
            .where(contacts.c.email.is_not(None))):
        groups[_key(email)].append((created, cid))
        names.update(k for k in _attrs(attrs) if k)
    for key, found in groups.items():
        found.sort()
        winner = found[0][1]
        if len(found) > 1:
            _merge(bind, contacts, members, deliveries, journal, key, winner, [cid for _c, cid in found[1:]])
        bind.execute(sa.update(contacts).where(contacts.c.id == winner).values(email_key=key))
    now = _now()
    valid = sorted(n for n in names if n.isidentifier() and len(n) <= 64)
    if valid:
        bind.execute(sa.insert(fields), [{"name": n, "created_at": now} for n in valid])

    # Deliveries: ASCII addresses key by lower(); the rest (IDN, Unicode local parts) in Python.
    bind.execute(sa.update(deliveries).values(email_key=sa.func.lower(deliveries.c.email)))
    odd = [(i, e) for i, e in bind.execute(sa.select(deliveries.c.id, deliveries.c.email))
           if not e.isascii() or "xn--" in e.lower()]
    for i, e in odd:
        bind.execute(sa.update(deliveries).where(deliveries.c.id == i).values(email_key=_key(e)))

    # Stop-list entries hold keys; variants that now collide keep the first entry.
    seen = set()
    for eid, list_id, value, sender_id in bind.execute(
            sa.select(entries.c.id, entries.c.list_id, entries.c.value, entries.c.sender_id)
            .where(entries.c.kind == 'email').order_by(entries.c.id)).all():
        key = _key(value)
        if (list_id, key, sender_id) in seen:
            bind.execute(sa.delete(entries).where(entries.c.id == eid))
            continue
        seen.add((list_id, key, sender_id))
        if key != value:
            bind.execute(sa.update(entries).where(entries.c.id == eid).values(value=key))

    # A unique index, not a constraint: on SQLite a new constraint means rebuilding the
    # contacts table, and dropping it would cascade to list memberships.
    op.create_index('ix_contacts_email_key', 'contacts', ['email_key'], unique=True)
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.alter_column('email_key', existing_type=sa.String(length=254), nullable=False)
        batch_op.drop_index('ix_deliveries_email')
        batch_op.create_index('ix_deliveries_email_key', ['email_key'], unique=False)


def _merge(bind, contacts, members, deliveries, journal, key, winner, losers):
    """Fold `losers` into `winner`: memberships, missing fields, name and phone, and the
    deliveries that do not clash with the winner's own in the same issue."""
    rows = {r.id: r for r in bind.execute(sa.select(contacts).where(contacts.c.id.in_([winner, *losers])))}
    keep = rows[winner]
    attrs = {}
    for cid in reversed(losers):
        attrs.update(_attrs(rows[cid].attributes))
    attrs.update(_attrs(keep.attributes))
    name = keep.name or next((rows[c].name for c in losers if rows[c].name), "")
    phone = keep.phone or next((rows[c].phone for c in losers if rows[c].phone), None)
    bind.execute(sa.update(contacts).where(contacts.c.id == winner).values(
        attributes=attrs, name=name, phone=phone))
    have = set(bind.execute(sa.select(members.c.list_id).where(members.c.contact_id == winner)).scalars())
    moved = sorted(set(bind.execute(sa.select(members.c.list_id).where(members.c.contact_id.in_(losers)))
                       .scalars()) - have)
    if moved:
        bind.execute(sa.insert(members), [{"list_id": lid, "contact_id": winner} for lid in moved])
    bind.execute(sa.delete(members).where(members.c.contact_id.in_(losers)))
    issues = set(bind.execute(sa.select(deliveries.c.issue_id).where(deliveries.c.contact_id == winner)).scalars())
    for did, issue_id in bind.execute(sa.select(deliveries.c.id, deliveries.c.issue_id)
                                      .where(deliveries.c.contact_id.in_(losers)).order_by(deliveries.c.id)).all():
        target = None if issue_id in issues else winner
        issues.add(issue_id)
        bind.execute(sa.update(deliveries).where(deliveries.c.id == did).values(contact_id=target))
    bind.execute(sa.delete(contacts).where(contacts.c.id.in_(losers)))
    bind.execute(sa.insert(journal).values(
        event="contacts_merged", actor_label="migration", created_at=_now(),
        reason=f"{len(losers) + 1} contacts were variants of {key}; kept #{winner} ({keep.email})",
        details={"key": key, "kept": winner, "kept_email": keep.email, "merged": losers,
                 "merged_emails": [rows[c].email for c in losers], "lists_moved": moved}))


def downgrade():
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.drop_index('ix_deliveries_email_key')
        batch_op.create_index('ix_deliveries_email', ['email'], unique=False)
        batch_op.drop_column('email_key')
    op.drop_index('ix_contacts_email_key', table_name='contacts')
    with op.batch_alter_table('contacts', schema=None) as batch_op:
        batch_op.drop_column('email_key')
    with op.batch_alter_table('issues', schema=None) as batch_op:
        batch_op.drop_column('custom_headers')
        batch_op.drop_column('reply_to')
        batch_op.drop_column('from_name')
        batch_op.drop_column('preheader')
        batch_op.drop_column('body_text')
    op.drop_table('contact_fields')
