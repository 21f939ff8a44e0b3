"""pacing and warmup

Receiving-domain groups with their pacing, and senders' warm-up schedules.

Revision ID: a1d3e7c0f023
Revises: a1d3e7c0f022
Create Date: 2026-11-23 23:40:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'a1d3e7c0f023'
down_revision = 'a1d3e7c0f022'
branch_labels = None
depends_on = None


def upgrade():
    groups = op.create_table(
        'domain_groups',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=60), nullable=False),
        sa.Column('domains', sa.Text(), nullable=False),
        sa.Column('rate_per_second', sa.Float(), nullable=False),
        sa.Column('catch_all', sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column('position', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_domain_groups')),
        sa.UniqueConstraint('name', name=op.f('uq_domain_groups_name')),
    )
    op.create_table(
        'sender_warmups',
        sa.Column('sender_id', sa.Integer(), nullable=False),
        sa.Column('start', sa.Integer(), nullable=False),
        sa.Column('factor', sa.Float(), nullable=False),
        sa.Column('started_on', sa.Date(), nullable=False),
        sa.ForeignKeyConstraint(['sender_id'], ['senders.id'], name=op.f('fk_sender_warmups_sender_id_senders'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('sender_id', name=op.f('pk_sender_warmups')),
    )
    # The large mailbox providers, with limits per relay well under what they tolerate
    # from a sender with a fresh reputation; admins change them on the Pacing page.
    op.bulk_insert(groups, [
        {'id': 1, 'name': 'Gmail', 'domains': 'gmail.com\ngooglemail.com', 'rate_per_second': 50.0,
         'catch_all': False, 'position': 1},
        {'id': 2, 'name': 'Outlook', 'domains': 'outlook.com\nhotmail.*\nlive.*\nmsn.com',
         'rate_per_second': 30.0, 'catch_all': False, 'position': 2},
        {'id': 3, 'name': 'Yahoo', 'domains': 'yahoo.*\nymail.com\nrocketmail.com\naol.com',
         'rate_per_second': 30.0, 'catch_all': False, 'position': 3},
        {'id': 4, 'name': 'Mail.ru', 'domains': 'mail.ru\nbk.ru\ninbox.ru\nlist.ru\ninternet.ru',
         'rate_per_second': 30.0, 'catch_all': False, 'position': 4},
        {'id': 5, 'name': 'Yandex', 'domains': 'yandex.ru\nya.ru\nyandex.com\nyandex.by\nyandex.kz\nyandex.ua\nnarod.ru',
         'rate_per_second': 30.0, 'catch_all': False, 'position': 5},
        {'id': 6, 'name': 'Everyone else', 'domains': '', 'rate_per_second': 0.0, 'catch_all': True,
         'position': 6},
    ])
    if op.get_bind().dialect.name == 'postgresql':  # the ids were given: move the sequence past them
        op.execute("SELECT setval(pg_get_serial_sequence('domain_groups', 'id'), 6)")


def downgrade():
    op.drop_table('sender_warmups')
    op.drop_table('domain_groups')
