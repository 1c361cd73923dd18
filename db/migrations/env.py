"""Alembic environment. carrierpay.migrate hands us a connection already inside its transaction."""

from alembic import context

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `carrierpay db migrate`, which provides the connection")

context.configure(
    connection=connection,
    target_metadata=None,
    version_table="alembic_version",
    version_table_schema="carrierpay_meta",
    transactional_ddl=True,
)
with context.begin_transaction():
    context.run_migrations()
