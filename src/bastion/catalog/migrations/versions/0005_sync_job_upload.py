"""sync jobs remember the file an upload put in the source (a member's view of the job shows only it)

Revision ID: 0005
Revises: 0004
"""
import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('sync_jobs') as b:
        b.add_column(sa.Column('upload_path', sa.String(length=1000), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('sync_jobs') as b:
        b.drop_column('upload_path')
