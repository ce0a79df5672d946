"""SQLite transactions: writers queue on BEGIN IMMEDIATE; a transaction that only reads holds up no writer."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import exc, text

from zgoda.core.db import Database


@pytest.fixture
def database(tmp_path: Path) -> Database:
    database = Database.from_url(f"sqlite:///{tmp_path / 'transactions.db'}")
    with database.engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE counters (id INTEGER PRIMARY KEY, value INTEGER)")
        connection.exec_driver_sql("INSERT INTO counters VALUES (1, 0)")
    return database


def write_quickly(database: Database) -> None:
    """Increment the counter, giving up after 0.2 s of waiting for the write lock."""
    with database.engine.connect() as connection:
        connection.connection.dbapi_connection.execute("PRAGMA busy_timeout=200")  # type: ignore[union-attr]
        with connection.begin():
            connection.execute(text("UPDATE counters SET value = value + 1 WHERE id = 1"))


def test_a_transaction_that_only_reads_does_not_hold_up_a_writer(database: Database) -> None:
    with database.transaction(reads_only=True) as session:
        assert session.scalar(text("SELECT value FROM counters")) == 0
        write_quickly(database)  # would wait for the lock, and fail, under a BEGIN IMMEDIATE
        assert session.scalar(text("SELECT value FROM counters")) == 0  # its snapshot is kept
    with database.transaction() as session:
        assert session.scalar(text("SELECT value FROM counters")) == 1


def test_a_writing_transaction_holds_the_write_lock_from_its_start(database: Database) -> None:
    with database.transaction() as session:
        assert session.scalar(text("SELECT value FROM counters")) == 0
        with pytest.raises(exc.OperationalError, match="database is locked"):
            write_quickly(database)
