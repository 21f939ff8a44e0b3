"""sender relays

A relay per sender, its credentials stored encrypted.

Revision ID: a1d3e7c0f022
Revises: a1d3e7c0f021
Create Date: 2026-11-23 23:40:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'a1d3e7c0f022'
down_revision = 'a1d3e7c0f021'
branch_labels = None
depends_on = None


def upgrade():
    # Every sender starts on the default relay (all three NULL).
    with op.batch_alter_table('senders') as batch:
        batch.add_column(sa.Column('relay_url_sealed', sa.Text(), nullable=True))
        batch.add_column(sa.Column('relay_tls', sa.String(length=16), nullable=True))
        batch.add_column(sa.Column('relay_rate_per_second', sa.Integer(), nullable=True))


def downgrade():
    with op.batch_alter_table('senders') as batch:
        batch.drop_column('relay_rate_per_second')
        batch.drop_column('relay_tls')
        batch.drop_column('relay_url_sealed')
