"""Alembic environment: runs on the connection KIWIspray hands over."""

from alembic import context
from sqlalchemy import create_engine

from ks.records.models import Base

config = context.config
target_metadata = Base.metadata


def run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=True,  # SQLite cannot ALTER most things in place
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    run(connection)
else:  # plain `alembic` command line with -x/ini url
    with create_engine(config.get_main_option("sqlalchemy.url")).connect() as conn:
        run(conn)
        conn.commit()
