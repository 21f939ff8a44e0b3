"""materials and letter templates

A library of materials in sections, letter templates with a {{ materials }} block (two
shipped: a plain one and one with a header and footer), the sections an issue includes
and the template it was assembled with.

Revision ID: a1d3e7c0f025
Revises: a1d3e7c0f027
Create Date: 2026-12-03 18:00:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'a1d3e7c0f025'
down_revision = 'a1d3e7c0f027'
branch_labels = None
depends_on = None

PLAIN = """<div style="font-family: Arial, sans-serif; max-width: 640px">
{{ materials }}
<p style="font-size: 12px; color: #666"><a href="{{ unsubscribe_url }}">Unsubscribe</a></p>
</div>"""

FRAMED = """<table role="presentation" width="100%" style="font-family: Arial, sans-serif; background: #f4f4f5">
<tr><td style="padding: 16px 24px; background: #1e3a8a; color: #ffffff; font-size: 20px">Newsletter</td></tr>
<tr><td style="padding: 16px 24px; background: #ffffff">
<p>Hello, {{ name | default("reader") }}!</p>
{{ materials }}
</td></tr>
<tr><td style="padding: 12px 24px; font-size: 12px; color: #555">You get this letter because you subscribed.
<a href="{{ unsubscribe_url }}">Unsubscribe</a></td></tr>
</table>"""


def upgrade():
    op.create_table(
        'sections',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=100), nullable=False),
        sa.PrimaryKeyConstraint('id', name='pk_sections'),
        sa.UniqueConstraint('name', name='uq_sections_name'),
    )
    templates = op.create_table(
        'letter_templates',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=100), nullable=False),
        sa.Column('html', sa.Text(), nullable=False),
        sa.Column('shipped', sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.PrimaryKeyConstraint('id', name='pk_letter_templates'),
        sa.UniqueConstraint('name', name='uq_letter_templates_name'),
    )
    op.bulk_insert(templates, [{'name': 'Plain', 'html': PLAIN, 'shipped': True},
                               {'name': 'Header and footer', 'html': FRAMED, 'shipped': True}])
    op.create_table(
        'materials',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('section_id', sa.Integer(), nullable=False),
        sa.Column('title', sa.String(length=300), nullable=False),
        sa.Column('summary', sa.Text(), nullable=False),
        sa.Column('body_html', sa.Text(), nullable=False),
        sa.Column('link', sa.String(length=2000), nullable=False),
        sa.Column('image_url', sa.String(length=2000), nullable=False),
        sa.Column('published_at', sa.DateTime(), nullable=False),
        sa.Column('created_by_id', sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(['created_by_id'], ['users.id'], name='fk_materials_created_by_id_users',
                                ondelete='SET NULL'),
        sa.ForeignKeyConstraint(['section_id'], ['sections.id'], name='fk_materials_section_id_sections',
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name='pk_materials'),
    )
    op.create_index('ix_materials_section_published', 'materials', ['section_id', 'published_at'])
    op.create_table(
        'issue_sections',
        sa.Column('issue_id', sa.Integer(), nullable=False),
        sa.Column('section_id', sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(['issue_id'], ['issues.id'], name='fk_issue_sections_issue_id_issues',
                                ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['section_id'], ['sections.id'], name='fk_issue_sections_section_id_sections',
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('issue_id', 'section_id', name='pk_issue_sections'),
    )
    with op.batch_alter_table('issues', schema=None) as batch_op:
        batch_op.add_column(sa.Column('template_id', sa.Integer(), nullable=True))
        batch_op.create_foreign_key('fk_issues_template_id_letter_templates', 'letter_templates',
                                    ['template_id'], ['id'], ondelete='SET NULL')


def downgrade():
    with op.batch_alter_table('issues', schema=None) as batch_op:
        batch_op.drop_constraint('fk_issues_template_id_letter_templates', type_='foreignkey')
        batch_op.drop_column('template_id')
    op.drop_table('issue_sections')
    op.drop_index('ix_materials_section_published', table_name='materials')
    op.drop_table('materials')
    op.drop_table('letter_templates')
    op.drop_table('sections')
