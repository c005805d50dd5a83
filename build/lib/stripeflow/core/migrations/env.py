"""Alembic environment: run with the connection `Ledger.migrate()` hands over."""

from alembic import context

from stripeflow.core.ledger import Base

connection = context.config.attributes.get("connection")
if connection is None:  # `alembic` CLI: build an engine from the configured URL
    from stripeflow.core.ledger import make_engine

    engine = make_engine(context.config.get_main_option("sqlalchemy.url") or "")
    connection = engine.connect()

context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
