"""a user's time zone

Every time on the pages is shown in the user's own zone (an IANA name such as
Europe/Moscow), and the date pickers read what is typed in it. Empty until the browser
sends its zone at the first page after sign-in, or the user picks one in Profile.

Revision ID: a1d3e7c0f027
Revises: a1d3e7c0f026
Create Date: 2026-12-03 10:00:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'a1d3e7c0f027'
down_revision = 'a1d3e7c0f026'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('time_zone', sa.String(length=64), nullable=True))


def downgrade():
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('time_zone')
