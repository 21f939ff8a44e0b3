"""chains, copy, resend

Issues get their place in a chain (the previous step, the first step, the step's number,
its delay or date and its audience rule) and the issue they were resent from. Journal
rows outlive their issue: the foreign key becomes ON DELETE SET NULL and each row can keep
the issue's title.

Revision ID: a1d3e7c0f024
Revises: a1d3e7c0f023
Create Date: 2026-12-02 10:00:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'a1d3e7c0f024'
down_revision = 'a1d3e7c0f023'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('issues', schema=None) as batch_op:
        batch_op.add_column(sa.Column('chain_parent_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('chain_root_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('chain_step', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('chain_delay_seconds', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('chain_at', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('chain_audience', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('resent_from_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('resend_audience', sa.String(length=16), nullable=True))
        batch_op.create_foreign_key('fk_issues_chain_parent_id_issues', 'issues', ['chain_parent_id'], ['id'])
        batch_op.create_foreign_key('fk_issues_chain_root_id_issues', 'issues', ['chain_root_id'], ['id'])
        batch_op.create_foreign_key('fk_issues_resent_from_id_issues', 'issues', ['resent_from_id'], ['id'],
                                    ondelete='SET NULL')
        batch_op.create_index('ix_issues_chain_root_id', ['chain_root_id'], unique=False)

    with op.batch_alter_table('journal_events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('issue_title', sa.String(length=300), nullable=True))
        batch_op.drop_constraint('fk_journal_events_issue_id_issues', type_='foreignkey')
        batch_op.create_foreign_key('fk_journal_events_issue_id_issues', 'issues', ['issue_id'], ['id'],
                                    ondelete='SET NULL')


def downgrade():
    # Rows of deleted issues have no issue any more; CASCADE cannot hold them.
    op.execute("DELETE FROM journal_events WHERE issue_id IS NULL AND issue_title IS NOT NULL")
    with op.batch_alter_table('journal_events', schema=None) as batch_op:
        batch_op.drop_constraint('fk_journal_events_issue_id_issues', type_='foreignkey')
        batch_op.create_foreign_key('fk_journal_events_issue_id_issues', 'issues', ['issue_id'], ['id'],
                                    ondelete='CASCADE')
        batch_op.drop_column('issue_title')

    with op.batch_alter_table('issues', schema=None) as batch_op:
        batch_op.drop_index('ix_issues_chain_root_id')
        batch_op.drop_constraint('fk_issues_resent_from_id_issues', type_='foreignkey')
        batch_op.drop_constraint('fk_issues_chain_root_id_issues', type_='foreignkey')
        batch_op.drop_constraint('fk_issues_chain_parent_id_issues', type_='foreignkey')
        batch_op.drop_column('resend_audience')
        batch_op.drop_column('resent_from_id')
        batch_op.drop_column('chain_audience')
        batch_op.drop_column('chain_at')
        batch_op.drop_column('chain_delay_seconds')
        batch_op.drop_column('chain_step')
        batch_op.drop_column('chain_root_id')
        batch_op.drop_column('chain_parent_id')
