"""Checking the ledger: its hash chains, and the state table against a full replay."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from itertools import groupby
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from zgoda.consent.models import ConsentEvent, ConsentState, Purpose
from zgoda.consent.state import Fact, replay
from zgoda.core.chain import ChainReport, verify_chain
from zgoda.core.tenancy import unscoped


def verify_ledger_chains(session: Session) -> list[ChainReport]:
    return verify_chain(session, ConsentEvent)


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
    results: dict[int, tuple[int, StateMismatch | None]] = {}
    with unscoped(session):
        validity = {
            row.id: timedelta(days=row.validity_days) if row.validity_days else None
            for row in session.execute(select(Purpose.id, Purpose.validity_days))
        }
        stored: dict[tuple[int, int], tuple[str, int, Any]] = {
            (row.contact_id, row.purpose_id): (row.status, row.event_id, row.expires_at)
            for row in session.execute(
                select(
                    ConsentState.contact_id,
                    ConsentState.purpose_id,
                    ConsentState.status,
                    ConsentState.event_id,
                    ConsentState.expires_at,
                )
            )
        }
        seen: set[tuple[int, int]] = set()
        for (workspace_id, contact_id, purpose_id), facts in _grouped_facts(session):
            key = (contact_id, purpose_id)
            seen.add(key)
            value = replay(facts, validity.get(purpose_id))
            replayed = (value.status, value.event_id, value.expires_at) if value else None
            count, problem = results.get(workspace_id, (0, None))
            if problem is None and stored.get(key) != replayed:
                problem = StateMismatch(
                    workspace_id, contact_id, purpose_id, _describe(stored.get(key)), _describe(replayed)
                )
            results[workspace_id] = (count + 1, problem)
        orphans = set(stored) - seen
        if orphans:
            for row in session.execute(
                select(ConsentState.workspace_id, ConsentState.contact_id, ConsentState.purpose_id)
            ):
                if (row.contact_id, row.purpose_id) in orphans:
                    count, problem = results.get(row.workspace_id, (0, None))
                    if problem is None:
                        problem = StateMismatch(
                            row.workspace_id,
                            row.contact_id,
                            row.purpose_id,
                            _describe(stored[(row.contact_id, row.purpose_id)]),
                            "no events",
                        )
                    results[row.workspace_id] = (count + 1, problem)
    return results


def _grouped_facts(session: Session) -> Iterator[tuple[tuple[int, int, int], list[Fact]]]:
    statement = (
        select(
            ConsentEvent.workspace_id,
            ConsentEvent.contact_id,
            ConsentEvent.purpose_id,
            ConsentEvent.id,
            ConsentEvent.seq,
            ConsentEvent.event_type,
            ConsentEvent.requires_confirmation,
            ConsentEvent.legal_basis,
            ConsentEvent.occurred_at,
        )
        .order_by(ConsentEvent.workspace_id, ConsentEvent.contact_id, ConsentEvent.purpose_id)
        .execution_options(yield_per=10_000)
    )
    rows = session.execute(statement)
    for key, group in groupby(rows, key=lambda r: (r[0], r[1], r[2])):
        yield (
            key,
            [
                Fact(
                    event_id=r[3],
                    seq=r[4],
                    event_type=r[5],
                    requires_confirmation=r[6],
                    legal_basis=r[7],
                    occurred_at=r[8],
                )
                for r in group
            ],
        )
