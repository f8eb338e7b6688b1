"""Alembic environment: Bastion passes an open connection in ``config.attributes``."""
from alembic import context

from bastion.catalog.models import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=True,  # SQLite needs batch mode for ALTER
)
with context.begin_transaction():
    context.run_migrations()
