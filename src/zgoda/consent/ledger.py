"""The consent ledger: recording events (one or a batch) and keeping the state table equal to a replay."""

from __future__ import annotations

import secrets
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from zgoda.consent.models import (
    ConsentEvent,
    ConsentEvidence,
    ConsentState,
    EventType,
    LegalBasis,
    Method,
    Notice,
    Purpose,
    Source,
)
from zgoda.consent.state import Fact, StateValue, apply, order_key, replay, replay_until
from zgoda.contacts.models import Contact
from zgoda.core.chain import link_rows
from zgoda.core.clock import utcnow
from zgoda.core.crypto import canonical_json, sha256_hex
from zgoda.core.errors import InvalidInput
from zgoda.core.tenancy import current_actor, current_workspace_id

CLOCK_SKEW = timedelta(minutes=5)
EVIDENCE_LIMITS = {"ip": 64, "user_agent": 1000, "page_url": 2048, "note": 4000}
EVIDENCE_FIELDS = ("ip", "user_agent", "page_url", "file_sha256", "file_row", "note")


@dataclass(frozen=True)
class Evidence:
    """How an event was observed. Personal data: kept in an erasable table, hashed into the chain salted."""

    ip: str | None = None
    user_agent: str | None = None
    page_url: str | None = None
    file_sha256: str | None = None
    file_row: int | None = None
    note: str | None = None

    def fields(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in EVIDENCE_FIELDS}

    def is_empty(self) -> bool:
        return all(value is None for value in self.fields().values())


def evidence_digest(salt: str, fields: dict[str, Any]) -> str:
    """SHA-256 of ``salt + "\\n" + canonical_json(fields)``; what the chain covers of the evidence."""
    return sha256_hex(salt + "\n" + canonical_json({name: fields.get(name) for name in EVIDENCE_FIELDS}))


@dataclass
class NewEvent:
    """One event to record. ``occurred_at`` defaults to now; ``notice`` must belong to ``purpose``."""

    contact: Contact
    purpose: Purpose
    event_type: str
    method: str
    legal_basis: str = LegalBasis.CONSENT.value
    source: Source | None = None
    notice: Notice | None = None
    occurred_at: datetime | None = None
    requires_confirmation: bool = False
    evidence: Evidence = field(default_factory=Evidence)
    reference: str | None = None


def _enum(value: str, allowed: type[Any], field_name: str) -> str:
    try:
        return str(allowed(value).value)
    except ValueError as error:
        choices = ", ".join(member.value for member in allowed)
        raise InvalidInput(
            f"Unknown {field_name.replace('_', ' ')} '{value}'; use one of {choices}.", field=field_name
        ) from error


def _validate(event: NewEvent, now: datetime) -> datetime:
    _enum(event.event_type, EventType, "type")
    _enum(event.method, Method, "method")
    _enum(event.legal_basis, LegalBasis, "legal_basis")
    occurred = event.occurred_at or now
    if occurred.tzinfo is None:
        raise InvalidInput("occurred_at needs a time zone (e.g. 2026-05-01T10:00:00Z).", field="occurred_at")
    if occurred > now + CLOCK_SKEW:
        raise InvalidInput("occurred_at is in the future.", field="occurred_at")
    if event.notice is not None and event.notice.purpose_id != event.purpose.id:
        raise InvalidInput(
            f"Notice {event.notice.id} belongs to another purpose, not '{event.purpose.key}'.", field="notice_id"
        )
    if event.requires_confirmation and event.event_type != EventType.GRANT:
        raise InvalidInput("Only a grant can await confirmation.", field="requires_confirmation")
    if event.contact.erased_at is not None and event.event_type != EventType.WITHDRAW:
        raise InvalidInput("This contact was erased; only a withdrawal can be recorded.", field="contact")
    for name, limit in EVIDENCE_LIMITS.items():
        value = getattr(event.evidence, name)
        if value is not None and len(value) > limit:
            raise InvalidInput(f"Evidence {name} is at most {limit} characters.", field=f"evidence.{name}")
    if event.evidence.file_sha256 is not None and (len(event.evidence.file_sha256) != 64):
        raise InvalidInput("Evidence file_sha256 is 64 hexadecimal characters.", field="evidence.file_sha256")
    if event.reference is not None and len(event.reference) > 120:
        raise InvalidInput("A reference is at most 120 characters.", field="reference")
    return occurred


def record_events(session: Session, events: Sequence[NewEvent], *, now: datetime | None = None) -> list[int]:
    """Append ``events`` to the workspace's ledger in one go and bring the state table up to date.

    Validates everything first, so a bad event leaves nothing written. Returns the new event ids
    in the order given.
    """
    if not events:
        return []
    workspace_id = current_workspace_id(session)
    actor = current_actor(session)
    now = now or utcnow()
    occurred = [_validate(event, now) for event in events]
    rows: list[dict[str, Any]] = []
    evidence_rows: list[dict[str, Any]] = []
    for event, occurred_at in zip(events, occurred, strict=True):
        digest = None
        if not event.evidence.is_empty():
            salt = secrets.token_hex(16)
            fields = event.evidence.fields()
            digest = evidence_digest(salt, fields)
            evidence_rows.append({"salt": salt, **fields})
        else:
            evidence_rows.append({})
        rows.append(
            {
                "workspace_id": workspace_id,
                "contact_id": event.contact.id,
                "contact_ref": event.contact.ref,
                "purpose_id": event.purpose.id,
                "event_type": event.event_type,
                "requires_confirmation": event.requires_confirmation,
                "legal_basis": event.legal_basis,
                "method": event.method,
                "source_id": event.source.id if event.source else None,
                "notice_id": event.notice.id if event.notice else None,
                "notice_sha256": event.notice.sha256 if event.notice else None,
                "occurred_at": occurred_at,
                "recorded_at": now,
                "actor": actor.label,
                "actor_user_id": actor.user_id,
                "reference": event.reference,
                "evidence_digest": digest,
            }
        )
    link_rows(session, ConsentEvent, rows, chain_key=workspace_id)
    ids = list(session.scalars(insert(ConsentEvent).returning(ConsentEvent.id, sort_by_parameter_order=True), rows))
    evidence = [
        {"event_id": event_id, "workspace_id": workspace_id, **extra}
        for event_id, extra in zip(ids, evidence_rows, strict=True)
        if extra
    ]
    if evidence:
        session.execute(insert(ConsentEvidence), evidence)
    notice_ids = {event.notice.id for event in events if event.notice is not None}
    if notice_ids:
        session.execute(
            update(Notice).where(Notice.id.in_(notice_ids), Notice.first_used_at.is_(None)).values(first_used_at=now),
            execution_options={"synchronize_session": False},
        )
    facts = [
        (
            row["contact_id"],
            row["purpose_id"],
            Fact(
                event_id=event_id,
                seq=row["seq"],
                event_type=row["event_type"],
                requires_confirmation=row["requires_confirmation"],
                legal_basis=row["legal_basis"],
                occurred_at=row["occurred_at"],
            ),
        )
        for event_id, row in zip(ids, rows, strict=True)
    ]
    validity = {event.purpose.id: _validity(event.purpose) for event in events}
    _materialise(session, facts, validity, now)
    return ids


def record_event(session: Session, event: NewEvent) -> ConsentEvent:
    """Record one event; see :func:`record_events`."""
    [event_id] = record_events(session, [event])
    recorded = session.get(ConsentEvent, event_id)
    assert recorded is not None
    return recorded


def _validity(purpose: Purpose) -> timedelta | None:
    return timedelta(days=purpose.validity_days) if purpose.validity_days else None


def _state_value(state: ConsentState) -> StateValue:
    return StateValue(
        status=state.status,
        legal_basis=state.legal_basis,
        event_id=state.event_id,
        decided_at=state.decided_at,
        last_occurred_at=state.last_occurred_at,
        expires_at=state.expires_at,
    )


def _comes_after(fact: Fact, state: StateValue) -> bool:
    """Whether ``fact`` sorts after every event already folded into ``state`` (so folding it is exact)."""
    return fact.occurred_at > state.last_occurred_at or (
        fact.occurred_at == state.last_occurred_at and fact.event_type == EventType.WITHDRAW
    )


def _materialise(
    session: Session, facts: Iterable[tuple[int, int, Fact]], validity: dict[int, timedelta | None], now: datetime
) -> None:
    by_pair: dict[tuple[int, int], list[Fact]] = defaultdict(list)
    for contact_id, purpose_id, fact in facts:
        by_pair[(contact_id, purpose_id)].append(fact)
    contact_ids = {contact_id for contact_id, _ in by_pair}
    purpose_ids = {purpose_id for _, purpose_id in by_pair}
    existing = {
        (state.contact_id, state.purpose_id): state
        for state in session.scalars(
            select(ConsentState).where(
                ConsentState.contact_id.in_(contact_ids), ConsentState.purpose_id.in_(purpose_ids)
            )
        )
    }
    inserts: list[dict[str, Any]] = []
    for (contact_id, purpose_id), new_facts in by_pair.items():
        new_facts.sort(key=order_key)
        row = existing.get((contact_id, purpose_id))
        current = _state_value(row) if row is not None else None
        if current is None or _comes_after(new_facts[0], current):
            value = current
            for fact in new_facts:
                value = apply(value, fact, validity[purpose_id])
        else:  # a late arrival: replay the pair from the ledger
            value = replay(pair_facts(session, contact_id=contact_id, purpose_id=purpose_id), validity[purpose_id])
        assert value is not None
        values = {
            "status": value.status,
            "legal_basis": value.legal_basis,
            "event_id": value.event_id,
            "decided_at": value.decided_at,
            "last_occurred_at": value.last_occurred_at,
            "expires_at": value.expires_at,
            "updated_at": now,
        }
        if row is None:
            inserts.append(
                {
                    "contact_id": contact_id,
                    "purpose_id": purpose_id,
                    "workspace_id": current_workspace_id(session),
                    **values,
                }
            )
        else:
            for name, column_value in values.items():
                setattr(row, name, column_value)
    if inserts:
        session.execute(insert(ConsentState), inserts)
    session.flush()


def pair_facts(session: Session, *, contact_id: int, purpose_id: int, until: datetime | None = None) -> list[Fact]:
    """Every ledger event of one contact and purpose, as facts for the fold."""
    statement = select(
        ConsentEvent.id,
        ConsentEvent.seq,
        ConsentEvent.event_type,
        ConsentEvent.requires_confirmation,
        ConsentEvent.legal_basis,
        ConsentEvent.occurred_at,
    ).where(ConsentEvent.contact_id == contact_id, ConsentEvent.purpose_id == purpose_id)
    if until is not None:
        statement = statement.where(ConsentEvent.occurred_at <= until)
    return [
        Fact(event_id=r[0], seq=r[1], event_type=r[2], requires_confirmation=r[3], legal_basis=r[4], occurred_at=r[5])
        for r in session.execute(statement)
    ]


def state_at(session: Session, *, contact: Contact, purpose: Purpose, moment: datetime) -> str:
    """The consent status of ``contact`` for ``purpose`` at any past moment, from the ledger."""
    facts = pair_facts(session, contact_id=contact.id, purpose_id=purpose.id, until=moment)
    return replay_until(facts, _validity(purpose), moment)


def states_of(session: Session, *, contact_id: int) -> Sequence[ConsentState]:
    return session.scalars(select(ConsentState).where(ConsentState.contact_id == contact_id)).all()


def events_of(session: Session, *, contact_id: int) -> Sequence[ConsentEvent]:
    """A contact's events in the order they occurred."""
    return session.scalars(
        select(ConsentEvent)
        .where(ConsentEvent.contact_id == contact_id)
        .order_by(ConsentEvent.occurred_at, ConsentEvent.seq)
    ).all()


def evidence_of(session: Session, *, event_ids: Sequence[int]) -> dict[int, ConsentEvidence]:
    if not event_ids:
        return {}
    rows = session.scalars(select(ConsentEvidence).where(ConsentEvidence.event_id.in_(event_ids)))
    return {row.event_id: row for row in rows}
