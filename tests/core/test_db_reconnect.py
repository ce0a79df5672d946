"""A pooled PostgreSQL connection killed while idle is replaced before a request can see it."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from tests.support.databases import current_backend
from zgoda.core import db as core_db
from zgoda.core.db import Database


def test_an_idle_connection_killed_by_the_server_is_replaced(
    fresh_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if current_backend() != "postgresql":
        pytest.skip("the idle ping is PostgreSQL's (SQLite has no server to drop connections)")
    monkeypatch.setattr(core_db, "IDLE_PING_SECONDS", 0.0)
    database = Database.from_url(fresh_database_url)
    try:
        with database.transaction() as session:
            victim = session.scalar(text("SELECT pg_backend_pid()"))
        other = Database.from_url(fresh_database_url)
        with other.transaction() as session:
            assert session.scalar(text("SELECT pg_terminate_backend(:pid)"), {"pid": victim})
        other.engine.dispose()
        with database.transaction() as session:  # the same pool: its one connection is dead
            fresh = session.scalar(text("SELECT pg_backend_pid()"))
        assert fresh != victim
    finally:
        database.engine.dispose()
