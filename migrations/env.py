"""Alembic environment: the database URL comes from the project's settings, never from alembic.ini."""

from alembic import context
from sqlalchemy import create_engine

from worker.settings import get_settings

config = context.config


def run() -> None:
    url = config.attributes.get("database_url") or get_settings().database_url
    engine = create_engine(url)
    with engine.connect() as connection:
        context.configure(connection=connection, transactional_ddl=True)
        with context.begin_transaction():
            # Two processes starting at once must not both migrate.
            connection.exec_driver_sql("SELECT pg_advisory_xact_lock(7355608)")
            context.run_migrations()
    engine.dispose()


run()
