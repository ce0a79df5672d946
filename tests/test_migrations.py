"""The migrations produce exactly the schema the models describe."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect, text

from zgoda.core.db import make_engine
from zgoda.core.migrate import downgrade, upgrade
from zgoda.models import Base


def test_models_and_migrations_agree(engine: Engine) -> None:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, Base.metadata)
    assert differences == [], f"run alembic revision --autogenerate: {differences}"


def _ledger_schema(engine: Engine) -> tuple[dict[str, tuple[str | None, ...]], set[str]]:
    """The ledger tables' indexes (name: columns) and the append-only triggers on consent_events."""
    inspector = inspect(engine)
    indexes = {
        index["name"] or "": tuple(index["column_names"])
        for table in ("consent_events", "consent_evidence", "consent_states")
        for index in inspector.get_indexes(table)
    }
    query = (
        "SELECT tgname FROM pg_trigger WHERE tgrelid = 'consent_events'::regclass AND NOT tgisinternal"
        if engine.dialect.name == "postgresql"
        else "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'consent_events'"
    )
    with engine.connect() as connection:
        triggers = set(connection.execute(text(query)).scalars())
    return indexes, triggers


def test_ledger_index_migration_downgrades_and_upgrades(fresh_database_url: str) -> None:
    """0006 drops three workspace_id indexes and narrows one, and reverses; the triggers stay untouched."""
    engine = make_engine(fresh_database_url)
    try:
        indexes, triggers = _ledger_schema(engine)
        names = ("ix_consent_events_workspace_id", "ix_consent_evidence_workspace_id", "ix_consent_states_workspace_id")
        dropped = dict.fromkeys(names, ("workspace_id",))
        assert not indexes.keys() & dropped.keys()
        assert indexes["ix_consent_events_contact_purpose"] == ("contact_id", "purpose_id")
        assert len(triggers) == 2
        downgrade(fresh_database_url, "0005")
        wide = ("contact_id", "purpose_id", "occurred_at")
        assert _ledger_schema(engine) == ({**indexes, **dropped, "ix_consent_events_contact_purpose": wide}, triggers)
        upgrade(fresh_database_url)
        assert _ledger_schema(engine) == (indexes, triggers)
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
    finally:
        engine.dispose()
