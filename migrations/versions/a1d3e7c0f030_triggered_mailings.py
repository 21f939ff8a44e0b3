"""triggered mailings

An issue's kind ("issue" or "triggered") and whether joining its list makes a participant;
the participants of triggered mailings with their idempotency keys and letter fields.

Revision ID: a1d3e7c0f030
Revises: a1d3e7c0f028
Create Date: 2026-12-03 12:00:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'a1d3e7c0f030'
down_revision = 'a1d3e7c0f028'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('issues', schema=None) as batch_op:
        batch_op.add_column(sa.Column('kind', sa.String(length=16), server_default='issue', nullable=False))
        batch_op.add_column(sa.Column('trigger_on_join', sa.Boolean(), server_default=sa.false(), nullable=False))
    op.create_table(
        'trigger_participants',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('issue_id', sa.Integer(), nullable=False),
        sa.Column('delivery_id', sa.Integer(), nullable=False),
        sa.Column('contact_id', sa.Integer(), nullable=True),
        sa.Column('idempotency_key', sa.String(length=200), nullable=True),
        sa.Column('fields', sa.JSON(), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(['issue_id'], ['issues.id'], name='fk_trigger_participants_issue_id_issues',
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name='pk_trigger_participants'),
        sa.UniqueConstraint('delivery_id', name='uq_trigger_participants_delivery_id'),
        sa.UniqueConstraint('issue_id', 'idempotency_key', name='uq_trigger_participants_key'),
    )


def downgrade():
    op.drop_table('trigger_participants')
    with op.batch_alter_table('issues', schema=None) as batch_op:
        batch_op.drop_column('trigger_on_join')
        batch_op.drop_column('kind')
