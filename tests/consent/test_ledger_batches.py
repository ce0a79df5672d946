"""Large batches: on PostgreSQL they write on a helper thread (``ledger.OVERLAP_MIN_EVENTS``), and the
result must be exactly what the inline path writes; a failure on the helper surfaces as its own error."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from tests.support.consent import workspace_with_contact
from zgoda.consent import ledger, purposes
from zgoda.consent.models import ConsentEvent, ConsentEvidence, ConsentState
from zgoda.consent.verify import verify_ledger_chains, verify_states
from zgoda.contacts import service as contacts
from zgoda.contacts.models import Contact

START = datetime(2025, 3, 3, 8, 0, tzinfo=UTC)
KINDS = ["grant", "refresh", "withdraw", "expire", "grant"]


def _batch(session: Session, people: list[Contact], size: int, seed: int) -> list[ledger.NewEvent]:
    """Events over a few contacts and two purposes; some with evidence, some dated before events of
    their pair recorded earlier (late arrivals, which make the ledger replay the pair)."""
    rng = random.Random(seed)
    targets = [purposes.purpose_by_key(session, "email_marketing"), purposes.purpose_by_key(session, "sms_marketing")]
    return [
        ledger.NewEvent(
            contact=rng.choice(people),
            purpose=rng.choice(targets),
            event_type=rng.choice(KINDS),
            method="import",
            occurred_at=START + timedelta(minutes=rng.randrange(10_000)),
            evidence=ledger.Evidence(file_sha256="cd" * 32, file_row=n) if n % 3 == 0 else ledger.Evidence(),
        )
        for n in range(size)
    ]


def _states(session: Session) -> dict[tuple[int, int], tuple[str, int]]:
    rows = session.execute(
        select(ConsentState.contact_id, ConsentState.purpose_id, ConsentState.status, ConsentState.event_id)
    )
    return {(contact_id, purpose_id): (status, event_id) for contact_id, purpose_id, status, event_id in rows}


@pytest.mark.parametrize("overlap_min", [1, 10_000])  # every batch on the helper thread; none
def test_large_batches_leave_the_ledger_and_states_a_replay_would(
    session: Session, monkeypatch: pytest.MonkeyPatch, overlap_min: int
) -> None:
    monkeypatch.setattr(ledger, "OVERLAP_MIN_EVENTS", overlap_min)
    workspace, first = workspace_with_contact(session)
    people = [first] + [
        contacts.upsert_contact(session, contacts.ContactData(email=f"p{n}@example.com")).contact for n in range(7)
    ]
    all_ids: list[int] = []
    for seed in range(3):  # later batches find states to update, and events older than those states
        batch = _batch(session, people, 300, seed)
        ids = ledger.record_events(session, batch)
        assert len(ids) == len(set(ids)) == len(batch)
        all_ids += ids
    session.flush()

    events = session.scalars(select(ConsentEvent).order_by(ConsentEvent.seq)).all()
    assert [event.id for event in events] == sorted(all_ids)  # ids ascend with the chain's order
    assert [event.seq for event in events] == list(range(1, 901))
    [report] = verify_ledger_chains(session)
    assert report.ok and report.entries == 900
    count, problem = verify_states(session)[workspace.id]
    assert problem is None and count == len(_states(session))
    evidence = {row.event_id: row.file_row for row in session.scalars(select(ConsentEvidence))}
    assert len(evidence) == 3 * 100
    by_id = {event.id: event for event in events}
    for position, event_id in enumerate(all_ids):  # each evidence row belongs to the event it was given with
        if position % 300 % 3 == 0:
            assert evidence[event_id] == position % 300
            assert by_id[event_id].evidence_digest is not None
        else:
            assert event_id not in evidence and by_id[event_id].evidence_digest is None


def test_a_failure_on_the_helper_thread_is_raised_as_itself(session: Session, monkeypatch: pytest.MonkeyPatch) -> None:
    """A contact that is not in the database passes validation (its workspace matches) but not the
    foreign key: the error names that key, not the aborted transaction the next statements meet."""
    monkeypatch.setattr(ledger, "OVERLAP_MIN_EVENTS", 1)
    workspace, contact = workspace_with_contact(session)
    ghost = Contact(id=contact.id + 10_000, workspace_id=workspace.id, ref="f" * 32, erased_at=None)
    batch = _batch(session, [contact], 50, seed=7)
    batch[25].contact = ghost
    savepoint = session.begin_nested()
    with pytest.raises((DBAPIError, psycopg.Error)) as raised:  # the helper uses the driver directly
        ledger.record_events(session, batch)
    assert "foreign key" in str(raised.value).lower()
    assert "aborted" not in str(raised.value).lower()
    savepoint.rollback()
    assert session.scalars(select(ConsentEvent)).all() == []


def test_evidence_fields_are_every_field_in_the_documented_order() -> None:
    """``Evidence.fields`` copies the dataclass's ``__dict__``: it must stay exactly EVIDENCE_FIELDS."""
    evidence = ledger.Evidence(ip="192.0.2.1", file_row=7, note="n")
    assert tuple(evidence.fields()) == ledger.EVIDENCE_FIELDS
    assert evidence.fields() == {name: getattr(evidence, name) for name in ledger.EVIDENCE_FIELDS}
    assert evidence.fields() is not evidence.fields()  # a copy: the caller may add the salt
