"""Alembic, driven from code: ``zgoda db upgrade`` and ``serve`` call :func:`upgrade`.

The migration scripts live inside the package (``zgoda/migrations``) so an installed
wheel can migrate its database without the source tree.
"""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from zgoda.core.db import make_engine


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", "zgoda:migrations")
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the database at ``url`` up to ``revision``."""
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    """Take the database at ``url`` back to ``revision`` (tests check that each migration reverses)."""
    command.downgrade(alembic_config(url), revision)


def pending_revisions(url: str) -> list[str]:
    """Revisions not yet applied (empty when the database is current)."""
    config = alembic_config(url)
    script = ScriptDirectory.from_config(config)
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            current = set(MigrationContext.configure(connection).get_current_heads())
    finally:
        engine.dispose()
    heads = set(script.get_heads())
    if current == heads:
        return []
    return [rev.revision for rev in script.walk_revisions() if rev.revision not in current]
