"""Checking the ledger: its hash chains, and the state table against a full replay."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from itertools import groupby
from operator import itemgetter
from typing import Any

from sqlalchemy import Connection, Table, func, select
from sqlalchemy.orm import Session

from zgoda.consent.models import ConsentEvent, ConsentState, Purpose
from zgoda.consent.state import Fact, replay
from zgoda.contacts.models import Contact
from zgoda.core.chain import GENESIS_HASH, ChainProblem, ChainReport, verify_chain
from zgoda.core.tenancy import unscoped


def verify_ledger_chains(session: Session, *, workers: int | None = None) -> list[ChainReport]:
    """Every workspace's ledger chain, and that each event still names the contact its hash was made for.

    The hash covers ``contact_ref`` (a random reference, never personal data), not the ``contact_id``
    the application joins on; an event moved to another contact is reported here as its first bad entry.
    ``workers``: see :func:`zgoda.core.chain.verify_chain` (default: one process per available CPU).
    """
    first_bad: list[tuple[int, int]] = []

    def find_moved_events() -> None:  # one query, run while worker processes check the hashes
        with unscoped(session):
            first_bad.extend(
                (row[0], row[1])
                for row in session.execute(
                    select(ConsentEvent.workspace_id, func.min(ConsentEvent.seq))
                    .join(Contact, Contact.id == ConsentEvent.contact_id)
                    .where(Contact.ref != ConsentEvent.contact_ref)
                    .group_by(ConsentEvent.workspace_id)
                )
            )

    reports = verify_chain(session, ConsentEvent, workers=workers, alongside=find_moved_events)
    _check_contact_refs(session, reports, first_bad)
    return reports


def _check_contact_refs(session: Session, reports: list[ChainReport], first_bad: list[tuple[int, int]]) -> None:
    with unscoped(session):
        by_workspace = {report.chain_key: report for report in reports}
        for workspace_id, seq in first_bad:
            report = by_workspace.get(workspace_id)
            if report is None or (report.problem is not None and report.problem.seq <= seq):
                continue
            entry_id, contact_id = session.execute(
                select(ConsentEvent.id, ConsentEvent.contact_id).where(
                    ConsentEvent.workspace_id == workspace_id, ConsentEvent.seq == seq
                )
            ).one()
            previous = session.scalar(
                select(ConsentEvent.hash).where(ConsentEvent.workspace_id == workspace_id, ConsentEvent.seq == seq - 1)
            )
            report.entries = seq - 1
            report.head_hash = previous or GENESIS_HASH
            report.problem = ChainProblem(
                seq=seq,
                entry_id=entry_id,
                reason=f"entry #{seq} names contact {contact_id}, whose reference is not the one its hash covers",
            )


@dataclass(frozen=True)
class StateMismatch:
    workspace_id: int
    contact_id: int
    purpose_id: int
    stored: str
    replayed: str


def _describe(value: Any) -> str:
    if value is None:
        return "no state"
    status, event_id, expires_at = value
    suffix = f", expires {expires_at:%Y-%m-%d}" if expires_at else ""
    return f"{status} (event {event_id}{suffix})"


def verify_states(session: Session) -> dict[int, tuple[int, StateMismatch | None]]:
    """Per workspace: how many (contact, purpose) states were checked and the first that differs from a replay."""
    session.flush()
    connection = session.connection()
    purposes: Table = Purpose.__table__  # type: ignore[assignment]
    states: Table = ConsentState.__table__  # type: ignore[assignment]
    validity = {
        row[0]: timedelta(days=row[1]) if row[1] else None
        for row in connection.execute(select(purposes.c.id, purposes.c.validity_days))
    }
    stored: dict[tuple[int, int], tuple[int, tuple[str, int, Any]]] = {
        (row[1], row[2]): (row[0], (row[3], row[4], row[5]))
        for row in connection.execute(
            select(
                states.c.workspace_id,
                states.c.contact_id,
                states.c.purpose_id,
                states.c.status,
                states.c.event_id,
                states.c.expires_at,
            )
        )
    }
    counts: dict[int, int] = defaultdict(int)
    problems: dict[int, StateMismatch] = {}
    for (workspace_id, contact_id, purpose_id), facts in _grouped_facts(connection):
        key = (contact_id, purpose_id)
        found = stored.pop(key, None)
        counts[workspace_id] += 1
        if workspace_id in problems:
            continue
        value = replay(facts, validity.get(purpose_id))
        replayed = (value.status, value.event_id, value.expires_at) if value else None
        if found is None or found[1] != replayed:
            problems[workspace_id] = StateMismatch(
                workspace_id,
                contact_id,
                purpose_id,
                _describe(found[1] if found else None),
                _describe(replayed),
            )
    for (contact_id, purpose_id), (workspace_id, orphan) in sorted(stored.items()):  # states without events
        counts[workspace_id] += 1
        if workspace_id not in problems:
            problems[workspace_id] = StateMismatch(workspace_id, contact_id, purpose_id, _describe(orphan), "no events")
    return {workspace_id: (count, problems.get(workspace_id)) for workspace_id, count in counts.items()}


def _grouped_facts(connection: Connection) -> Iterator[tuple[tuple[int, int, int], list[Fact]]]:
    events: Table = ConsentEvent.__table__  # type: ignore[assignment]
    statement = (
        select(
            events.c.workspace_id,
            events.c.contact_id,
            events.c.purpose_id,
            events.c.id,
            events.c.seq,
            events.c.event_type,
            events.c.requires_confirmation,
            events.c.legal_basis,
            events.c.occurred_at,
        )
        .order_by(events.c.workspace_id, events.c.contact_id, events.c.purpose_id)
        .execution_options(yield_per=10_000)
    )
    for key, group in groupby(connection.execute(statement), key=itemgetter(0, 1, 2)):
        yield key, [Fact(*row[3:]) for row in group]
