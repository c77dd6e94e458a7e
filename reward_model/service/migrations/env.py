"""Alembic environment: runs on the connection the service hands over (see db.migrate)."""

from alembic import context
from sqlalchemy import create_engine

from reward_model.service.models import Base

config = context.config
connection = config.attributes.get("connection")


def run(conn) -> None:
    context.configure(connection=conn, target_metadata=Base.metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


if connection is not None:
    run(connection)
else:  # plain `alembic -x` use: the URL comes from the ini
    with create_engine(config.get_main_option("sqlalchemy.url")).connect() as conn:
        run(conn)
