"""Concurrent writers never fork a chain: threads, real commits, a fresh database."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import select

from tests.support.databases import drop_postgres_database, new_database, pg_admin_url
from zgoda.accounts import service as accounts
from zgoda.audit import service as audit
from zgoda.audit.models import AuditEntry
from zgoda.core.db import Database
from zgoda.core.migrate import upgrade
from zgoda.core.tenancy import Actor, bind_scope

THREADS = 8
PER_THREAD = 25


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_eight_threads_leave_one_valid_chain(backend: str, tmp_path: object) -> None:
    url = new_database(backend, tmp_path)  # type: ignore[arg-type]
    upgrade(url)
    database = Database.from_url(url)
    try:
        with database.transaction() as session:
            bind_scope(session, workspace_id=None, actor=Actor.system("test"))
            workspace_id = accounts.create_workspace(session, slug="busy", name="Busy").id
        barrier = threading.Barrier(THREADS)
        errors: list[BaseException] = []

        def writer(number: int) -> None:
            try:
                barrier.wait()
                for step in range(PER_THREAD):
                    with database.transaction() as session:
                        bind_scope(session, workspace_id=workspace_id, actor=Actor.system(f"thread-{number}"))
                        audit.record(session, action="test.concurrent", summary={"thread": number, "step": step})
            except BaseException as error:  # noqa: BLE001 - reported below
                errors.append(error)

        threads = [threading.Thread(target=writer, args=(n,)) for n in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors, errors
        with database.transaction() as session:
            bind_scope(session, workspace_id=workspace_id, actor=Actor.system("test"))
            seqs = session.scalars(select(AuditEntry.seq).order_by(AuditEntry.seq)).all()
            report = audit.verify_workspace(session, workspace_id=workspace_id)
        assert list(seqs) == list(range(1, THREADS * PER_THREAD + 1))
        assert report.ok, report.problem
        assert report.entries == THREADS * PER_THREAD
    finally:
        database.engine.dispose()
        if backend == "postgresql":
            drop_postgres_database(pg_admin_url(), url)
