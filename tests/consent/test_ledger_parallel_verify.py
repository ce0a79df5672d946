"""Verifying the ledger in worker processes gives the very reports one process gives, tampered or not.

A fresh database with committed data (workers read through connections of their own), two workspaces,
``PARALLEL_MIN_ENTRIES`` lowered so a few dozen entries are split into ranges. Each tampering is
committed (triggers dropped first) and placed so that it falls inside a later range or on the border
between two ranges: the parallel run must name the same first bad entry, with the same reason, as
a walk in one process. And a session that has begun a transaction (SQLite) or written (PostgreSQL)
is never verified through other connections.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text

from tests.support.databases import drop_postgres_database, new_database, pg_admin_url
from zgoda.accounts import service as accounts
from zgoda.consent import ledger, purposes
from zgoda.consent.models import ConsentEvent
from zgoda.consent.verify import verify_ledger_chains
from zgoda.contacts import service as contacts
from zgoda.core import chain
from zgoda.core.chain import ChainReport, drop_append_only_ddl, verify_chain
from zgoda.core.db import Database
from zgoda.core.migrate import upgrade
from zgoda.core.tenancy import Actor, bind_scope

START = datetime(2025, 3, 3, 8, 0, tzinfo=UTC)
PER_WORKSPACE = (40, 25)


@dataclass
class Setup:
    database: Database
    workspaces: list[int]


@pytest.fixture(params=["sqlite", "postgresql"])
def setup(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Setup]:
    url = new_database(request.param, tmp_path)
    upgrade(url)
    database = Database.from_url(url)
    monkeypatch.setattr(chain, "PARALLEL_MIN_ENTRIES", 1)
    try:
        workspaces = [_filled_workspace(database, f"ws{n}", count) for n, count in enumerate(PER_WORKSPACE)]
        yield Setup(database, workspaces)
    finally:
        database.engine.dispose()
        if request.param == "postgresql":
            drop_postgres_database(pg_admin_url(), url)


def _filled_workspace(database: Database, slug: str, count: int) -> int:
    with database.transaction() as session:
        bind_scope(session, workspace_id=None, actor=Actor.system("test"))
        workspace_id = accounts.create_workspace(session, slug=slug, name=slug).id
    with database.transaction() as session:
        bind_scope(session, workspace_id=workspace_id, actor=Actor.system("test"))
        people = [
            contacts.upsert_contact(session, contacts.ContactData(email=f"{slug}-{n}@example.com")).contact
            for n in range(4)
        ]
        targets = [
            purposes.purpose_by_key(session, "email_marketing"),
            purposes.purpose_by_key(session, "sms_marketing"),
        ]
        kinds = ["grant", "refresh", "withdraw", "expire"]
        for start in range(0, count, 10):  # several transactions, several batches
            ledger.record_events(
                session,
                [
                    ledger.NewEvent(
                        contact=people[n % 4],
                        purpose=targets[n % 2],
                        event_type=kinds[n % 4],
                        method="api",
                        occurred_at=START + timedelta(minutes=n),
                        evidence=ledger.Evidence(ip=f"203.0.113.{n}") if n % 3 == 0 else ledger.Evidence(),
                        reference="ref-ż" if n % 5 == 0 else None,
                    )
                    for n in range(start, min(count, start + 10))
                ],
            )
    return workspace_id


def _reports(database: Database, workers: int) -> list[ChainReport]:
    with database.transaction() as session:
        return verify_chain(session, ConsentEvent, workers=workers)


def _parallel_ran(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Records, per verification, whether the worker processes gave the answer."""
    ran: list[bool] = []
    original = chain._Verifier.in_parallel

    def spy(self: Any, *args: Any) -> Any:
        reports = original(self, *args)
        ran.append(reports is not None)
        return reports

    monkeypatch.setattr(chain._Verifier, "in_parallel", spy)
    return ran


def _tamper(database: Database, *statements: tuple[str, dict[str, Any]]) -> None:
    with database.engine.begin() as connection:
        for statement in drop_append_only_ddl("consent_events", connection.dialect.name):
            connection.execute(text(statement))
        for sql, params in statements:
            connection.execute(text(sql), params)


def _event_id(database: Database, workspace_id: int, seq: int) -> int:
    with database.engine.connect() as connection:
        found = connection.execute(
            select(ConsentEvent.id).where(ConsentEvent.workspace_id == workspace_id, ConsentEvent.seq == seq)
        ).scalar_one()
        return int(found)


def _summary(reports: list[ChainReport]) -> list[tuple[Any, ...]]:
    return [(r.chain_key, r.entries, r.head_hash, r.problem) for r in reports]


@pytest.mark.parametrize("workers", [2, 3, 7])
def test_an_untouched_ledger_gives_the_same_reports(
    setup: Setup, workers: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran = _parallel_ran(monkeypatch)
    parallel = _reports(setup.database, workers)
    assert ran == [True]
    assert [r.ok for r in parallel] == [True, True]
    assert [r.entries for r in parallel] == list(PER_WORKSPACE)
    assert _summary(parallel) == _summary(_reports(setup.database, 1))
    with setup.database.transaction() as session:
        assert _summary(verify_ledger_chains(session)) == _summary(parallel)


# Two workers split the 65 entries into 1..33 of the first workspace, then 34..40 and all of the second.
TAMPERINGS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "edited inside the second range": [("UPDATE consent_events SET event_type = 'grant' WHERE id = :id", {"at": 36})],
    "edited on the border": [("UPDATE consent_events SET method = 'import' WHERE id = :id", {"at": 34})],
    "hash rewritten at the end of the first range": [
        ("UPDATE consent_events SET hash = :h WHERE id = :id", {"at": 33})
    ],
    "prev_hash rewritten at the border": [("UPDATE consent_events SET prev_hash = :h WHERE id = :id", {"at": 34})],
    "deleted at the border": [
        ("DELETE FROM consent_evidence WHERE event_id = :id", {"at": 34}),
        ("DELETE FROM consent_events WHERE id = :id", {"at": 34}),
    ],
    "deleted inside the second range": [("DELETE FROM consent_events WHERE id = :id", {"at": 35})],
    "reordered across the border": [
        ("UPDATE consent_events SET seq = -1 WHERE id = :id", {"at": 33}),
        ("UPDATE consent_events SET seq = 33 WHERE id = :id", {"at": 34}),
        ("UPDATE consent_events SET seq = 34 WHERE seq = -1 AND workspace_id = :ws", {}),
    ],
    "inserted copy at the start": [
        ("UPDATE consent_events SET seq = 0 WHERE id = :id", {"at": 1}),
    ],
}


@pytest.mark.parametrize("case", sorted(TAMPERINGS))
def test_a_tampered_ledger_names_the_same_first_bad_entry(
    setup: Setup, case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = setup.workspaces[0]
    statements = []
    for sql, where in TAMPERINGS[case]:
        params: dict[str, Any] = {"ws": first, "h": "f" * 64}
        if "at" in where:
            params["id"] = _event_id(setup.database, first, where["at"])
        statements.append((sql, params))
    _tamper(setup.database, *statements)
    serial = _reports(setup.database, 1)
    assert not serial[0].ok and serial[1].ok
    ran = _parallel_ran(monkeypatch)
    for workers in (2, 3):
        assert _summary(_reports(setup.database, workers)) == _summary(serial)
    assert ran == [True, True]


def test_a_tampered_second_workspace_leaves_the_first_verified(setup: Setup) -> None:
    second = setup.workspaces[1]
    _tamper(
        setup.database,
        ("UPDATE consent_events SET occurred_at = occurred_at WHERE id = :id", {"id": 0}),
        (
            "UPDATE consent_events SET reference = 'forged' WHERE id = :id",
            {"id": _event_id(setup.database, second, 20)},
        ),
    )
    parallel = _reports(setup.database, 2)
    assert _summary(parallel) == _summary(_reports(setup.database, 1))
    assert parallel[0].ok and parallel[1].problem is not None and parallel[1].problem.seq == 20


def test_a_session_that_may_hold_uncommitted_changes_verifies_alone(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran = _parallel_ran(monkeypatch)
    first = setup.workspaces[0]
    dialect = setup.database.engine.dialect.name
    with setup.database.transaction() as session:
        for statement in drop_append_only_ddl("consent_events", dialect):
            session.execute(text(statement))
        session.execute(
            text("UPDATE consent_events SET actor = 'forged' WHERE workspace_id = :ws AND seq = 30"), {"ws": first}
        )
        reports = verify_chain(session, ConsentEvent, workers=2)  # sees its own change
        assert reports[0].problem is not None and reports[0].problem.seq == 30
        session.rollback()
    assert ran == [False]
    with setup.database.transaction() as session:
        session.execute(text("SELECT 1"))  # a transaction is open (read only)
        reports = verify_chain(session, ConsentEvent, workers=2)
    assert all(r.ok for r in reports)
    # SQLite cannot tell whether an open transaction wrote; PostgreSQL can (no transaction id yet)
    assert ran == [False, dialect == "postgresql"]


def test_workers_that_fail_leave_the_verification_to_this_process(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(self: Any) -> Any:
        raise OSError("too many connections")

    monkeypatch.setattr(chain._Job, "connect", refuse)  # inherited by the forked workers
    ran = _parallel_ran(monkeypatch)
    calls: list[int] = []
    with setup.database.transaction() as session:
        reports = verify_chain(session, ConsentEvent, workers=2, alongside=lambda: calls.append(1))
    assert ran == [False] and calls == [1]
    assert _summary(reports) == _summary(_reports(setup.database, 1))
