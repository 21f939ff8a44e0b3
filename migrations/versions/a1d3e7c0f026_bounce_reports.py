"""bounce reports

Every late bounce and complaint received, applied to its delivery or quarantined with the
reason, and the system stop-list Undeliverable.

Revision ID: a1d3e7c0f026
Revises: a1d3e7c0f030
Create Date: 2026-12-03 15:00:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'a1d3e7c0f026'
down_revision = 'a1d3e7c0f030'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'bounce_reports',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('digest', sa.String(length=64), nullable=False),
        sa.Column('outcome', sa.String(length=16), nullable=False),
        sa.Column('kind', sa.String(length=16), nullable=True),
        sa.Column('reason', sa.String(length=200), nullable=True),
        sa.Column('source', sa.String(length=16), nullable=False),
        sa.Column('delivery_id', sa.Integer(), nullable=True),
        sa.Column('issue_id', sa.Integer(), nullable=True),
        sa.Column('email_key', sa.String(length=254), nullable=True),
        sa.Column('status', sa.String(length=16), nullable=True),
        sa.Column('diagnostic', sa.Text(), nullable=True),
        sa.Column('raw', sa.Text(), nullable=True),
        sa.Column('received_at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('id', name='pk_bounce_reports'),
        sa.UniqueConstraint('digest', name='uq_bounce_reports_digest'),
    )
    op.create_index('ix_bounce_reports_issue_received', 'bounce_reports', ['issue_id', 'received_at'])
    op.create_index('ix_bounce_reports_key_kind', 'bounce_reports', ['email_key', 'kind'])
    op.create_index('ix_bounce_reports_outcome_id', 'bounce_reports', ['outcome', 'id'])
    op.execute("INSERT INTO stop_lists (code, name, created_at) "
               "SELECT 'undeliverable', 'Undeliverable', CURRENT_TIMESTAMP "
               "WHERE NOT EXISTS (SELECT 1 FROM stop_lists WHERE code = 'undeliverable')")


def downgrade():
    op.execute("DELETE FROM stop_lists WHERE code = 'undeliverable'")
    op.drop_index('ix_bounce_reports_outcome_id', table_name='bounce_reports')
    op.drop_index('ix_bounce_reports_key_kind', table_name='bounce_reports')
    op.drop_index('ix_bounce_reports_issue_received', table_name='bounce_reports')
    op.drop_table('bounce_reports')
