"""evaluation: question sets and their items, configurations, runs and per-item results, pinned
regression sets, decisions on feedback candidates

Revision ID: 0006
Revises: 0005
"""
import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'eval_sets',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('name', sa.String(length=200), nullable=False),
        sa.Column('version', sa.Integer(), nullable=False),
        sa.Column('description', sa.Text(), nullable=True),
        sa.Column('origin', sa.String(length=40), nullable=False),
        sa.Column('acl', sa.JSON(), nullable=False),
        sa.Column('default_asker', sa.String(length=200), nullable=True),
        sa.Column('item_count', sa.Integer(), nullable=False),
        sa.Column('created_by', sa.String(length=200), nullable=True),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('name', 'version'),
    )
    op.create_index('ix_eval_sets_name', 'eval_sets', ['name'])
    op.create_table(
        'eval_items',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('set_id', sa.Integer(), sa.ForeignKey('eval_sets.id', ondelete='CASCADE'), nullable=False),
        sa.Column('position', sa.Integer(), nullable=False),
        sa.Column('question', sa.Text(), nullable=False),
        sa.Column('kind', sa.String(length=20), nullable=False),
        sa.Column('answers', sa.JSON(), nullable=False),
        sa.Column('document', sa.Text(), nullable=True),
        sa.Column('sentence', sa.Text(), nullable=True),
        sa.Column('asker', sa.String(length=200), nullable=True),
        sa.Column('meta', sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_eval_items_set_id', 'eval_items', ['set_id'])
    op.create_table(
        'eval_configs',
        sa.Column('name', sa.String(length=200), nullable=False),
        sa.Column('spec', sa.JSON(), nullable=False),
        sa.Column('created_by', sa.String(length=200), nullable=True),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('updated_at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('name'),
    )
    op.create_table(
        'eval_runs',
        sa.Column('id', sa.String(length=32), nullable=False),
        sa.Column('set_id', sa.Integer(), nullable=False),
        sa.Column('status', sa.String(length=20), nullable=False),
        sa.Column('trigger', sa.String(length=80), nullable=False),
        sa.Column('started_by', sa.String(length=200), nullable=True),
        sa.Column('started_at', sa.DateTime(), nullable=False),
        sa.Column('finished_at', sa.DateTime(), nullable=True),
        sa.Column('configs', sa.JSON(), nullable=False),
        sa.Column('comparison', sa.JSON(), nullable=True),
        sa.Column('error', sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_eval_runs_set_id', 'eval_runs', ['set_id'])
    op.create_index('ix_eval_runs_started_at', 'eval_runs', ['started_at'])
    op.create_table(
        'eval_results',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('run_id', sa.String(length=32), sa.ForeignKey('eval_runs.id', ondelete='CASCADE'), nullable=False),
        sa.Column('config', sa.String(length=200), nullable=False),
        sa.Column('item_id', sa.Integer(), nullable=True),
        sa.Column('outcome', sa.JSON(), nullable=False),
        sa.Column('scores', sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_eval_results_run_id', 'eval_results', ['run_id'])
    op.create_table(
        'eval_pins',
        sa.Column('set_name', sa.String(length=200), nullable=False),
        sa.Column('config', sa.String(length=200), nullable=False),
        sa.Column('metrics', sa.JSON(), nullable=False),
        sa.Column('tolerance', sa.Float(), nullable=False),
        sa.Column('every', sa.String(length=40), nullable=True),
        sa.Column('sync_change', sa.Float(), nullable=False),
        sa.Column('baseline_run_id', sa.String(length=32), nullable=True),
        sa.Column('last_run_id', sa.String(length=32), nullable=True),
        sa.Column('last_run_at', sa.DateTime(), nullable=True),
        sa.Column('last_fingerprint', sa.String(length=64), nullable=True),
        sa.Column('pinned_by', sa.String(length=200), nullable=True),
        sa.Column('pinned_at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('set_name'),
    )
    op.create_table(
        'eval_candidates',
        sa.Column('feedback_id', sa.Integer(), nullable=False),
        sa.Column('status', sa.String(length=20), nullable=False),
        sa.Column('set_name', sa.String(length=200), nullable=True),
        sa.Column('decided_by', sa.String(length=200), nullable=True),
        sa.Column('decided_at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('feedback_id'),
    )


def downgrade() -> None:
    for table in ('eval_candidates', 'eval_pins', 'eval_results', 'eval_runs', 'eval_configs', 'eval_items', 'eval_sets'):
        op.drop_table(table)
