"""deliveries without foreign keys

Deliveries are written only by the launch's INSERT … SELECT from the issue's list, so
their issue and contact ids are right by construction; the per-row foreign-key checks
cost PostgreSQL 40 % of a million-recipient launch. Deleting a contact now clears its
deliveries' contact_id in the use case (mailing.contacts.delete_contact).

Revision ID: a1d3e7c0f018
Revises: a1d3e7c0f017
Create Date: 2026-11-23 18:30:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'a1d3e7c0f018'
down_revision = 'a1d3e7c0f017'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.drop_constraint('fk_deliveries_issue_id_issues', type_='foreignkey')
        batch_op.drop_constraint('fk_deliveries_contact_id_contacts', type_='foreignkey')


def downgrade():
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.create_foreign_key('fk_deliveries_contact_id_contacts', 'contacts', ['contact_id'], ['id'],
                                    ondelete='SET NULL')
        batch_op.create_foreign_key('fk_deliveries_issue_id_issues', 'issues', ['issue_id'], ['id'],
                                    ondelete='CASCADE')
