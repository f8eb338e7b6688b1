"""models, answer cache, append-only answer lineage

Revision ID: 0002
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'models',
        sa.Column('name', sa.String(length=200), nullable=False),
        sa.Column('kind', sa.String(length=20), nullable=False),
        sa.Column('path', sa.Text(), nullable=True),
        sa.Column('sha256', sa.String(length=64), nullable=True),
        sa.Column('size', sa.Integer(), nullable=True),
        sa.Column('url', sa.Text(), nullable=True),
        sa.Column('served_name', sa.String(length=200), nullable=True),
        sa.Column('api_key_env', sa.String(length=200), nullable=True),
        sa.Column('context_window', sa.Integer(), nullable=True),
        sa.Column('origin', sa.String(length=200), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('name'),
    )
    op.create_table(
        'answer_cache',
        sa.Column('key', sa.String(length=64), nullable=False),
        sa.Column('answer', sa.JSON(), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('key'),
    )
    op.create_table(
        'answer_lineage',
        sa.Column('id', sa.String(length=32), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('user_id', sa.String(length=200), nullable=False),
        sa.Column('principal', sa.JSON(), nullable=False),
        sa.Column('question', sa.Text(), nullable=False),
        sa.Column('rewritten_question', sa.Text(), nullable=True),
        sa.Column('mode', sa.String(length=20), nullable=False),
        sa.Column('decision', sa.String(length=40), nullable=False),
        sa.Column('reason', sa.Text(), nullable=True),
        sa.Column('record', sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_answer_lineage_created_at', 'answer_lineage', ['created_at'])
    op.create_index('ix_answer_lineage_user_id', 'answer_lineage', ['user_id'])
    # the lineage is an audit trail: the database itself refuses to rewrite or erase it
    if op.get_bind().dialect.name == 'sqlite':
        op.execute("CREATE TRIGGER answer_lineage_no_update BEFORE UPDATE ON answer_lineage "
                   "BEGIN SELECT RAISE(ABORT, 'answer_lineage is append-only'); END")
        op.execute("CREATE TRIGGER answer_lineage_no_delete BEFORE DELETE ON answer_lineage "
                   "BEGIN SELECT RAISE(ABORT, 'answer_lineage is append-only'); END")
    elif op.get_bind().dialect.name == 'postgresql':
        op.execute("CREATE FUNCTION answer_lineage_append_only() RETURNS trigger AS $$ "
                   "BEGIN RAISE EXCEPTION 'answer_lineage is append-only'; END; $$ LANGUAGE plpgsql")
        op.execute("CREATE TRIGGER answer_lineage_no_change BEFORE UPDATE OR DELETE ON answer_lineage "
                   "FOR EACH ROW EXECUTE FUNCTION answer_lineage_append_only()")


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == 'sqlite':
        op.execute("DROP TRIGGER IF EXISTS answer_lineage_no_update")
        op.execute("DROP TRIGGER IF EXISTS answer_lineage_no_delete")
    elif dialect == 'postgresql':
        op.execute("DROP TRIGGER IF EXISTS answer_lineage_no_change ON answer_lineage")
        op.execute("DROP FUNCTION IF EXISTS answer_lineage_append_only()")
    op.drop_index('ix_answer_lineage_user_id', table_name='answer_lineage')
    op.drop_index('ix_answer_lineage_created_at', table_name='answer_lineage')
    op.drop_table('answer_lineage')
    op.drop_table('answer_cache')
    op.drop_table('models')
