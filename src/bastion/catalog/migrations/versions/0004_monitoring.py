"""data observability: run metrics, per-version text stats, alerts, webhook outbox, accepted schemas, embedder canaries

Revision ID: 0004
Revises: 0003
"""
import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('ingest_runs') as b:
        b.add_column(sa.Column('metrics', sa.JSON(), nullable=True))
    with op.batch_alter_table('document_versions') as b:
        b.add_column(sa.Column('stats', sa.JSON(), nullable=True))
    op.create_table(
        'alerts',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('source', sa.String(length=200), nullable=False),
        sa.Column('kind', sa.String(length=20), nullable=False),
        sa.Column('check_name', sa.String(length=300), nullable=False),
        sa.Column('severity', sa.String(length=10), nullable=False),
        sa.Column('status', sa.String(length=20), nullable=False),
        sa.Column('message', sa.Text(), nullable=False),
        sa.Column('detail', sa.JSON(), nullable=False),
        sa.Column('run_id', sa.Integer(), nullable=True),
        sa.Column('opened_at', sa.DateTime(), nullable=False),
        sa.Column('last_seen_at', sa.DateTime(), nullable=False),
        sa.Column('acknowledged_at', sa.DateTime(), nullable=True),
        sa.Column('acknowledged_by', sa.String(length=200), nullable=True),
        sa.Column('resolved_at', sa.DateTime(), nullable=True),
        sa.Column('resolved_by', sa.String(length=200), nullable=True),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_alerts_source_status', 'alerts', ['source', 'status'])
    op.create_table(
        'alert_deliveries',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('alert_id', sa.Integer(), nullable=False),
        sa.Column('event', sa.String(length=20), nullable=False),
        sa.Column('url', sa.Text(), nullable=False),
        sa.Column('payload', sa.JSON(), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('delivered_at', sa.DateTime(), nullable=True),
        sa.Column('last_error', sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_alert_deliveries_pending', 'alert_deliveries', ['delivered_at'])
    op.create_table(
        'source_schemas',
        sa.Column('source', sa.String(length=200), nullable=False),
        sa.Column('object', sa.Text(), nullable=False),
        sa.Column('columns', sa.JSON(), nullable=False),
        sa.Column('accepted_at', sa.DateTime(), nullable=False),
        sa.Column('run_id', sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint('source', 'object'),
    )
    op.create_table(
        'embedder_canaries',
        sa.Column('embedder_id', sa.String(length=200), nullable=False),
        sa.Column('vectors', sa.LargeBinary(), nullable=False),
        sa.Column('dimension', sa.Integer(), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('embedder_id'),
    )


def downgrade() -> None:
    op.drop_table('embedder_canaries')
    op.drop_table('source_schemas')
    op.drop_index('ix_alert_deliveries_pending', 'alert_deliveries')
    op.drop_table('alert_deliveries')
    op.drop_index('ix_alerts_source_status', 'alerts')
    op.drop_table('alerts')
    with op.batch_alter_table('document_versions') as b:
        b.drop_column('stats')
    with op.batch_alter_table('ingest_runs') as b:
        b.drop_column('metrics')
