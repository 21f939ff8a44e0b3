"""dkim keys

DKIM keys per sender domain.

Revision ID: a1d3e7c0f021
Revises: a1d3e7c0f018
Create Date: 2026-11-23 23:40:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'a1d3e7c0f021'
down_revision = 'a1d3e7c0f018'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'dkim_keys',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('domain', sa.String(length=253), nullable=False),
        sa.Column('selector', sa.String(length=63), nullable=False),
        sa.Column('algorithm', sa.String(length=16), nullable=False),
        sa.Column('private_key_sealed', sa.Text(), nullable=False),
        sa.Column('public_key', sa.Text(), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('active', sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_dkim_keys')),
        sa.UniqueConstraint('domain', 'selector', name='uq_dkim_keys_domain_selector'),
    )
    with op.batch_alter_table('dkim_keys', schema=None) as batch_op:
        batch_op.create_index('ix_dkim_keys_domain_active', ['domain', 'active'], unique=False)


def downgrade():
    op.drop_table('dkim_keys')
