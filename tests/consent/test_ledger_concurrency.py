"""Eight threads recording consent events into one workspace leave one valid chain and a true state table.

Like ``tests/audit/test_concurrency.py``: a fresh database, real commits, one transaction per batch.
Threads share contacts, so the state rows of one (contact, purpose) are written by several threads,
and the occurred-at times interleave, so some events arrive late and make the ledger replay a pair.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from tests.support.databases import drop_postgres_database, new_database, pg_admin_url
from zgoda.accounts import service as accounts
from zgoda.consent import ledger, purposes
from zgoda.consent.models import ConsentEvent, ConsentState, EventType, Purpose
from zgoda.consent.verify import verify_ledger_chains, verify_states
from zgoda.contacts import service as contacts
from zgoda.contacts.models import Contact
from zgoda.core.db import Database
from zgoda.core.migrate import upgrade
from zgoda.core.tenancy import Actor, bind_scope

THREADS = 8
PER_THREAD = 25
CONTACTS = 6  # fewer than threads: several threads write the same contacts' states
START = datetime(2025, 6, 2, 9, 0, tzinfo=UTC)
KINDS = [EventType.GRANT.value, EventType.REFRESH.value, EventType.WITHDRAW.value, EventType.EXPIRE.value]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_eight_threads_recording_events_leave_one_valid_chain(backend: str, tmp_path: Path) -> None:
    url = new_database(backend, tmp_path)
    upgrade(url)
    database = Database.from_url(url)
    try:
        with database.transaction() as session:
            bind_scope(session, workspace_id=None, actor=Actor.system("test"))
            workspace_id = accounts.create_workspace(session, slug="busy", name="Busy").id
        with database.transaction() as session:
            bind_scope(session, workspace_id=workspace_id, actor=Actor.system("test"))
            people: list[Contact] = [
                contacts.upsert_contact(session, contacts.ContactData(email=f"p{n}@example.com")).contact
                for n in range(CONTACTS)
            ]
            targets: list[Purpose] = [
                purposes.purpose_by_key(session, "email_marketing"),
                purposes.purpose_by_key(session, "sms_marketing"),
            ]
        barrier = threading.Barrier(THREADS)
        errors: list[BaseException] = []

        def writer(number: int) -> None:
            rng = random.Random(number)
            try:
                barrier.wait()
                step = 0
                while step < PER_THREAD:
                    size = min(rng.randint(1, 4), PER_THREAD - step)  # a few single events, a few small batches
                    batch = [
                        ledger.NewEvent(
                            contact=rng.choice(people),
                            purpose=rng.choice(targets),
                            event_type=rng.choice(KINDS),
                            method="api",
                            occurred_at=START + timedelta(minutes=rng.randrange(500)),
                        )
                        for _ in range(size)
                    ]
                    with database.transaction() as session:
                        bind_scope(session, workspace_id=workspace_id, actor=Actor.system(f"thread-{number}"))
                        ledger.record_events(session, batch)
                    step += size
            except BaseException as error:  # noqa: BLE001 - reported below
                errors.append(error)

        threads = [threading.Thread(target=writer, args=(n,)) for n in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors, errors

        total = THREADS * PER_THREAD
        with database.transaction() as session:
            bind_scope(session, workspace_id=workspace_id, actor=Actor.system("test"))
            seqs = session.scalars(select(ConsentEvent.seq).order_by(ConsentEvent.seq)).all()
            actors = Counter(session.scalars(select(ConsentEvent.actor)).all())
            pairs = session.scalar(select(func.count()).select_from(ConsentState))
            [report] = verify_ledger_chains(session)
            states = verify_states(session)
        assert list(seqs) == list(range(1, total + 1)), "the sequence has gaps or repeats"
        assert actors == {f"thread-{n}": PER_THREAD for n in range(THREADS)}
        assert report.chain_key == workspace_id
        assert report.ok, report.problem
        assert report.entries == total
        assert states == {workspace_id: (pairs, None)}
        assert pairs == CONTACTS * len(targets)
    finally:
        database.engine.dispose()
        if backend == "postgresql":
            drop_postgres_database(pg_admin_url(), url)
