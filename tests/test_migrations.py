"""The migrations produce exactly the schema the models describe."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, insert, inspect, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from tests.support.consent import record, workspace_with_contact
from zgoda.consent import ledger
from zgoda.consent.models import ConsentState
from zgoda.consent.verify import verify_ledger_chains, verify_states
from zgoda.core.db import Database, make_engine
from zgoda.core.migrate import downgrade, upgrade
from zgoda.core.tenancy import unscoped
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


def _ledger_keys(engine: Engine) -> dict[str, set[tuple[tuple[str, ...], str, tuple[str, ...]]]]:
    """Each ledger table's foreign keys as (columns, referred table, referred columns)."""
    inspector = inspect(engine)
    return {
        table: {
            (tuple(key["constrained_columns"]), key["referred_table"], tuple(key["referred_columns"]))
            for key in inspector.get_foreign_keys(table)
        }
        for table in ("consent_events", "consent_states")
    }


def _two_workspaces(url: str) -> tuple[int, int]:
    """Workspace A with a contact and two recorded events (one with evidence); workspace B with a contact.
    Returns A's state row id and B's contact id."""
    database = Database(make_engine(url))
    try:
        with database.transaction() as session:
            _, contact = workspace_with_contact(session, "anna@example.pl")
            record(session, contact, "grant", evidence=ledger.Evidence(ip="203.0.113.7"))
            record(session, contact, "withdraw")
            state_id = session.scalars(select(ConsentState.id).where(ConsentState.contact_id == contact.id)).one()
        with database.transaction() as session:
            _, other = workspace_with_contact(session, "bartek@example.pl")
        return state_id, other.id
    finally:
        database.engine.dispose()


def _crossed_state(engine: Engine, state_id: int, other_contact_id: int) -> None:
    """Insert a copy of a state row naming another workspace's contact (the new keys refuse it)."""
    with engine.begin() as connection:
        row = dict(connection.execute(select(ConsentState.__table__).where(text(f"id = {state_id}"))).mappings().one())
        row.pop("id")
        connection.execute(insert(ConsentState.__table__), {**row, "contact_id": other_contact_id})


def _ledger_verifies(url: str) -> bool:
    database = Database(make_engine(url))
    try:
        with database.transaction() as session, unscoped(session):
            states = verify_states(session)
            return (
                all(report.ok for report in verify_ledger_chains(session))
                and all(mismatch is None for _, mismatch in states.values())
                and sum(checked for checked, _ in states.values()) == 1
            )
    finally:
        database.engine.dispose()


def test_ledger_names_contact_and_purpose_of_its_own_workspace(fresh_database_url: str) -> None:
    """0007: events and states reference (id, workspace_id) of contacts and purposes, so the database
    refuses a row naming another workspace's contact; the migration keeps every row and the triggers,
    stops (nothing changed) on a row the new keys refuse, and reverses."""
    engine = make_engine(fresh_database_url)
    try:
        state_id, other_contact_id = _two_workspaces(fresh_database_url)
        own = ("workspace_id",)
        composite = {(("contact_id", *own), "contacts", ("id", *own)), (("purpose_id", *own), "purposes", ("id", *own))}
        keys, (indexes, triggers) = _ledger_keys(engine), _ledger_schema(engine)
        assert composite <= keys["consent_events"] and composite <= keys["consent_states"]
        assert not any(referred == "workspaces" for table in keys.values() for _, referred, _ in table)
        assert len(triggers) == 2
        with pytest.raises(IntegrityError):
            _crossed_state(engine, state_id, other_contact_id)

        downgrade(fresh_database_url, "0006")
        old = _ledger_keys(engine)
        for table in old.values():
            assert {(("contact_id",), "contacts", ("id",)), ((own, "workspaces", ("id",)))} <= table
            assert not table & composite
        assert _ledger_schema(engine) == (indexes, triggers)
        assert _ledger_verifies(fresh_database_url)

        _crossed_state(engine, state_id, other_contact_id)  # the old keys let it in
        with pytest.raises((RuntimeError, IntegrityError), match="consent_states"):
            upgrade(fresh_database_url)
        assert _ledger_keys(engine) == old  # the failed migration changed nothing
        with engine.begin() as connection:
            connection.execute(text("DELETE FROM consent_states WHERE contact_id = :c"), {"c": other_contact_id})

        upgrade(fresh_database_url)
        assert _ledger_keys(engine) == keys
        assert _ledger_schema(engine) == (indexes, triggers)
        assert _ledger_verifies(fresh_database_url)
        with engine.begin() as connection, pytest.raises(DBAPIError, match="append-only"):
            connection.execute(text("UPDATE consent_events SET actor = 'x'"))
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
    finally:
        engine.dispose()
