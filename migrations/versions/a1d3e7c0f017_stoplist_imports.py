"""stop-list CSV imports as jobs

Revision ID: a1d3e7c0f017
Revises: a1d3e7c0f016
Create Date: 2026-11-23 17:30:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'a1d3e7c0f017'
down_revision = 'a1d3e7c0f016'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('stop_list_imports',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('list_id', sa.Integer(), nullable=False),
    sa.Column('path', sa.String(length=500), nullable=False),
    sa.Column('filename', sa.String(length=300), nullable=False),
    sa.Column('state', sa.String(length=12), nullable=False),
    sa.Column('size_bytes', sa.BigInteger(), nullable=False),
    sa.Column('read_bytes', sa.BigInteger(), nullable=False),
    sa.Column('lines', sa.Integer(), nullable=False),
    sa.Column('added', sa.Integer(), nullable=False),
    sa.Column('already', sa.Integer(), nullable=False),
    sa.Column('rejected', sa.JSON(), nullable=False),
    sa.Column('rejected_count', sa.Integer(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('created_by_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('finished_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['created_by_id'], ['users.id'], name=op.f('fk_stop_list_imports_created_by_id_users')),
    sa.ForeignKeyConstraint(['list_id'], ['stop_lists.id'], name=op.f('fk_stop_list_imports_list_id_stop_lists'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_stop_list_imports'))
    )
    op.create_index(op.f('ix_stop_list_imports_list_id'), 'stop_list_imports', ['list_id'], unique=False)


def downgrade():
    op.drop_index(op.f('ix_stop_list_imports_list_id'), table_name='stop_list_imports')
    op.drop_table('stop_list_imports')
