"""Alembic environment: runs migrations on the URL set by zgoda.core.migrate."""

from __future__ import annotations

from alembic import context

from zgoda.core.db import make_engine
from zgoda.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    url = config.get_main_option("sqlalchemy.url")
    assert url, "sqlalchemy.url is not set"
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            if connection.dialect.name == "sqlite":
                # A migration that rebuilds a table (SQLite cannot add or drop a foreign key any other way)
                # must not let SQLite check or rewrite the keys of the tables pointing at it while the copy
                # replaces the original; the pragma works only outside a transaction, so it is set here,
                # on this connection alone, before the first one. Such a migration checks its tables'
                # keys itself (PRAGMA foreign_key_check) before it commits: as Django does on SQLite.
                driver = connection.connection.driver_connection
                assert driver is not None
                driver.execute("PRAGMA foreign_keys=OFF")
            context.configure(
                connection=connection,
                target_metadata=target_metadata,
                render_as_batch=connection.dialect.name == "sqlite",
                compare_type=True,
            )
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


run_migrations_online()
