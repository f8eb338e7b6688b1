"""login failures and leases in the catalog: state every server on one catalog shares

The lockout counters lived in each server process's memory, so with several servers an attacker
got each server's allowance, and a lock on one server did not hold on another. They are now rows,
updated with one atomic upsert per failure (bastion.login_throttle). Leases (bastion.leases) let
one process at a time hold a name: a single-use sign-in state, a scheduled job's turn.

Revision ID: 0010
Revises: 0009
"""
import sqlalchemy as sa
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'login_failures',
        sa.Column('key', sa.String(length=64), nullable=False),
        sa.Column('kind', sa.String(length=10), nullable=False),
        sa.Column('user_hash', sa.String(length=64), nullable=True),
        sa.Column('failures', sa.Integer(), nullable=False),
        sa.Column('last_at', sa.Float(), nullable=False),
        sa.Column('locked_until', sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint('key'),
    )
    op.create_index('ix_login_failures_user_hash', 'login_failures', ['user_hash'])
    op.create_index('ix_login_failures_last_at', 'login_failures', ['last_at'])
    op.create_table(
        'leases',
        sa.Column('key', sa.String(length=200), nullable=False),
        sa.Column('holder', sa.String(length=100), nullable=False),
        sa.Column('expires_at', sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint('key'),
    )
    op.create_index('ix_leases_expires_at', 'leases', ['expires_at'])


def downgrade() -> None:
    op.drop_index('ix_leases_expires_at', 'leases')
    op.drop_table('leases')
    op.drop_index('ix_login_failures_last_at', 'login_failures')
    op.drop_index('ix_login_failures_user_hash', 'login_failures')
    op.drop_table('login_failures')
