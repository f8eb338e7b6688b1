"""identity origin: users and groups remember where they come from (local, ldap, scim, oidc)

A user synced from a directory or provisioned over SCIM carries its origin and the id it has
there, and can be disabled (``active`` false) without losing its history.

Revision ID: 0009
Revises: 0008
"""
import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # plain ADD COLUMN (no table rebuild: rebuilding `users` on SQLite would cascade into memberships)
    op.add_column('users', sa.Column('origin', sa.String(length=20), nullable=False, server_default='local'))
    op.add_column('users', sa.Column('external_id', sa.String(length=400), nullable=True))
    op.add_column('users', sa.Column('email', sa.String(length=320), nullable=True))
    op.add_column('users', sa.Column('active', sa.Boolean(), nullable=False, server_default=sa.true()))
    op.add_column('users', sa.Column('updated_at', sa.DateTime(), nullable=True))
    op.create_index('ix_users_origin_external_id', 'users', ['origin', 'external_id'])
    op.add_column('groups', sa.Column('origin', sa.String(length=20), nullable=False, server_default='local'))
    op.add_column('groups', sa.Column('external_id', sa.String(length=400), nullable=True))
    op.add_column('groups', sa.Column('display_name', sa.String(length=400), nullable=True))
    op.add_column('groups', sa.Column('updated_at', sa.DateTime(), nullable=True))
    op.create_index('ix_groups_origin_external_id', 'groups', ['origin', 'external_id'])


def downgrade() -> None:
    op.drop_index('ix_groups_origin_external_id', 'groups')
    with op.batch_alter_table('groups') as b:
        for c in ('updated_at', 'display_name', 'external_id', 'origin'):
            b.drop_column(c)
    op.drop_index('ix_users_origin_external_id', 'users')
    with op.batch_alter_table('users') as b:
        for c in ('updated_at', 'active', 'email', 'external_id', 'origin'):
            b.drop_column(c)
