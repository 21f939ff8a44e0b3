"""letter package, rate interrupts

The account's letter package (one row holding the balance, never negative) and the reason
kind of an interrupted issue, which decides who may resume it.

Revision ID: a1d3e7c0f028
Revises: a1d3e7c0f024
Create Date: 2026-12-03 09:00:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'a1d3e7c0f028'
down_revision = 'a1d3e7c0f024'
branch_labels = None
depends_on = None


def upgrade():
    package = op.create_table(
        'letter_package',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('balance', sa.BigInteger(), nullable=False),
        sa.CheckConstraint('balance >= 0', name='ck_letter_package_balance'),
        sa.PrimaryKeyConstraint('id', name='pk_letter_package'),
    )
    op.bulk_insert(package, [{'id': 1, 'balance': 0}])
    with op.batch_alter_table('issues', schema=None) as batch_op:
        batch_op.add_column(sa.Column('interrupt_kind', sa.String(length=16), nullable=True))


def downgrade():
    with op.batch_alter_table('issues', schema=None) as batch_op:
        batch_op.drop_column('interrupt_kind')
    op.drop_table('letter_package')
