"""sessions that can be ended, disabled users, token expiry and scope

Revision ID: a1d3e7c0f016
Revises: a1d3e7c0f010
Create Date: 2026-11-23 17:30:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'a1d3e7c0f016'
down_revision = 'a1d3e7c0f010'
branch_labels = None
depends_on = None


def upgrade():
    # batch_alter_table: SQLite cannot ALTER most things in place; on PostgreSQL it is a plain ALTER.
    with op.batch_alter_table('users', schema=None) as batch_op:
        # Existing sessions (whose cookie holds only the id) end once: users log in again.
        batch_op.add_column(sa.Column('session_version', sa.Integer(), server_default='1', nullable=False))
        batch_op.add_column(sa.Column('disabled_at', sa.DateTime(), nullable=True))

    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.add_column(sa.Column('expires_at', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('read_only', sa.Boolean(), server_default=sa.false(), nullable=False))


def downgrade():
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.drop_column('read_only')
        batch_op.drop_column('expires_at')

    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('disabled_at')
        batch_op.drop_column('session_version')
