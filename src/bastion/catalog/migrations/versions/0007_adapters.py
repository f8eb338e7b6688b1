"""adapters: LoRA adapters of a base model with their audience, training lineage and status

Revision ID: 0007
Revises: 0006
"""
import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'adapters',
        sa.Column('name', sa.String(length=200), nullable=False),
        sa.Column('base_model', sa.String(length=200), nullable=False),
        sa.Column('path', sa.Text(), nullable=False),
        sa.Column('sha256', sa.String(length=64), nullable=False),
        sa.Column('size', sa.Integer(), nullable=False),
        sa.Column('audience', sa.JSON(), nullable=False),
        sa.Column('dataset', sa.String(length=200), nullable=True),
        sa.Column('documents', sa.JSON(), nullable=False),
        sa.Column('training', sa.JSON(), nullable=False),
        sa.Column('evaluation', sa.JSON(), nullable=False),
        sa.Column('status', sa.String(length=20), nullable=False),
        sa.Column('status_reason', sa.Text(), nullable=True),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('promoted_at', sa.DateTime(), nullable=True),
        sa.Column('promoted_by', sa.String(length=200), nullable=True),
        sa.PrimaryKeyConstraint('name'),
    )


def downgrade() -> None:
    op.drop_table('adapters')
