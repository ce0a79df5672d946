"""Property tests: any events, in any arrival order and any batches, leave the state table equal to a replay.

Events are drawn from every type, with double opt-in on some grants and every legal basis (unknown
included), at a handful of instants so that ties happen, for a purpose with a validity period and one
without. They are recorded through ``consent.ledger.record_events`` in a random arrival order split into
random batches, twice (for two copies of the same contacts, in two different orders), and then:

- the ``consent_states`` row of every (contact, purpose) equals ``consent.state.replay`` of its events,
  and ``verify_states`` reports the workspace clean;
- both arrival orders end in the same status, expiry and decision time;
- a withdrawal beats every grant, confirmation and refresh that occurred at or before it;
- ``ledger.state_at`` agrees at every interesting moment with the naive reference below.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from itertools import pairwise

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tests.support.factories import as_system, make_workspace
from zgoda.audit.models import AuditEntry
from zgoda.consent import ledger, purposes
from zgoda.consent.ledger import _comes_after
from zgoda.consent.models import ConsentEvent, ConsentState, ConsentStatus, EventType, LegalBasis, Purpose
from zgoda.consent.state import Fact, StateValue, apply, order_key, replay, replay_until
from zgoda.consent.verify import verify_ledger_chains, verify_states
from zgoda.contacts import service as contacts
from zgoda.contacts.models import Contact
from zgoda.core.chain import (
    ChainedEntry,
    _hash_text,
    _naive_utc_text,
    _payload_json,
    _payload_layout,
    _payload_texts,
    chain_payload,
    entry_hash,
)
from zgoda.core.clock import isoformat_z

BASE = datetime(2025, 3, 3, 8, 30, tzinfo=UTC)
VALIDITY_DAYS = 30
VALIDITY = timedelta(days=VALIDITY_DAYS)
# A few instants, so that ties happen; 31 and 62 days are past the validity of a grant on day 0 or 31.
DAYS = (0, 1, 31, 62)
TIMES = tuple(BASE + timedelta(days=day) for day in DAYS)
KINDS = tuple(kind.value for kind in EventType)
BASES = tuple(basis.value for basis in LegalBasis)
CONTACTS = 2  # per copy; the second copy receives the same events in another order
PURPOSE_KEYS = ("email_marketing", "sms_marketing")  # with a validity period, without one
POSITIVE = {EventType.GRANT.value, EventType.CONFIRM.value, EventType.REFRESH.value}
ACTIVE = {ConsentStatus.GRANTED.value, ConsentStatus.PENDING.value}


@dataclass(frozen=True)
class Ev:
    contact: int
    purpose: int
    kind: str
    basis: str
    confirm: bool
    at: datetime


@st.composite
def events(draw: st.DrawFn, max_size: int = 12) -> list[Ev]:
    items = draw(
        st.lists(
            st.tuples(
                st.integers(0, CONTACTS - 1),
                st.integers(0, len(PURPOSE_KEYS) - 1),
                st.sampled_from(KINDS),
                st.sampled_from(BASES),
                st.booleans(),
                st.sampled_from(TIMES),
            ),
            min_size=1,
            max_size=max_size,
        )
    )
    return [Ev(c, p, kind, basis, confirm and kind == EventType.GRANT, at) for c, p, kind, basis, confirm, at in items]


@st.composite
def arrivals(draw: st.DrawFn, count: int) -> list[list[int]]:
    """A random arrival order of ``count`` events, cut into random batches (each one record_events call)."""
    order = draw(st.permutations(range(count)))
    cuts = draw(st.lists(st.booleans(), min_size=count - 1, max_size=count - 1))
    batches: list[list[int]] = [[order[0]]]
    for index, cut in zip(order[1:], cuts, strict=True):
        if cut:
            batches.append([])
        batches[-1].append(index)
    return batches


# -- the naive reference: the rules of consent/state.py, written out again without its helpers --------------

RANK = {EventType.WITHDRAW.value: 2, EventType.EXPIRE.value: 1}


def naive_status_at(history: list[tuple[int, Ev]], validity: timedelta | None, moment: datetime) -> str:
    """``history``: (ledger seq, event). Only events that had occurred by ``moment`` count."""
    happened = sorted(
        (item for item in history if item[1].at <= moment), key=lambda i: (i[1].at, RANK.get(i[1].kind, 0), i[0])
    )
    status, expires = "none", None
    for _, event in happened:
        if event.kind == "withdraw":
            status, expires = "withdrawn", None
        elif event.kind == "expire":
            if status in ("granted", "pending"):
                status, expires = "expired", None
        elif event.basis == "unknown":
            pass  # an import without evidence records "none" and never downgrades anything
        elif event.kind == "grant" and event.confirm:
            still_granted = status == "granted" and (expires is None or event.at < expires)
            if not still_granted:
                status, expires = "pending", None
        else:
            status, expires = "granted", (event.at + validity if validity else None)
    if status == "granted" and expires is not None and moment >= expires:
        return "expired"
    return status


# -- pure functions ------------------------------------------------------------------------------------------


def _facts(items: list[Ev]) -> list[Fact]:
    return [
        Fact(
            event_id=100 + seq,
            seq=seq,
            event_type=item.kind,
            requires_confirmation=item.confirm,
            legal_basis=item.basis,
            occurred_at=item.at,
        )
        for seq, item in enumerate(items, start=1)
    ]


def _outcome(value: StateValue | None) -> tuple[str, datetime | None, datetime | None] | None:
    return (value.status, value.expires_at, value.decided_at) if value else None


@settings(max_examples=300, deadline=None)
@given(items=events(max_size=10), validity=st.sampled_from([VALIDITY, None]), data=st.data())
def test_replay_does_not_depend_on_arrival_order(
    items: list[Ev], validity: timedelta | None, data: st.DataObject
) -> None:
    """The ledger numbers events as they arrive; the outcome must not depend on those numbers."""
    shuffled = data.draw(st.permutations(items))
    assert _outcome(replay(_facts(items), validity)) == _outcome(replay(_facts(shuffled), validity))


@settings(max_examples=300, deadline=None)
@given(items=events(max_size=10), validity=st.sampled_from([VALIDITY, None]), split=st.integers(0, 10))
def test_folding_new_events_onto_a_state_equals_the_replay(
    items: list[Ev], validity: timedelta | None, split: int
) -> None:
    """The ledger's fast path: when new events sort after the state, applying them equals replaying all."""
    facts = _facts(items)
    old, new = facts[:split], sorted(facts[split:], key=order_key)
    state = replay(old, validity)
    if not new or (state is not None and not _comes_after(new[0], state)):
        return
    for fact in new:
        state = apply(state, fact, validity)
    assert state == replay(facts, validity)


@settings(max_examples=300, deadline=None)
@given(items=events(max_size=10), validity=st.sampled_from([VALIDITY, None]))
def test_replay_until_matches_the_naive_reference(items: list[Ev], validity: timedelta | None) -> None:
    facts = _facts(items)
    history = list(enumerate(items, start=1))
    for moment in _moments():
        assert replay_until(facts, validity, moment) == naive_status_at(history, validity, moment), moment


def _moments(*, exhaustive: bool = True) -> list[datetime]:
    """Just before, at and after each instant, and where a grant made then expires."""
    edges = {BASE - timedelta(days=1)}
    for at in TIMES:
        edges |= {at - timedelta(microseconds=1), at, at + VALIDITY}
        if exhaustive:
            edges |= {at + timedelta(seconds=1), at + VALIDITY - timedelta(microseconds=1)}
    return sorted(edges)


# -- the faster canonical JSON of core.chain gives the very bytes the first release hashed -----------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
moments = st.datetimes(  # inside datetime's range by more than a day: every zone below converts to UTC
    min_value=datetime(2, 1, 1),
    max_value=datetime(9999, 12, 30),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-7, minutes=-30))]),
)
chain_values = st.one_of(json_values, moments, st.sampled_from(list(EventType)))


def _first_release_hash(prev_hash: str, model: type[ChainedEntry], values: dict[str, object]) -> str:
    """How entries were hashed before the performance work: strftime and a json.dumps per entry."""
    payload = {
        name: value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ") if isinstance(value, datetime) else value
        for name, value in ((name, values[name]) for name in model.chain_fields)
    }
    payload["seq"] = values["seq"]
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256((prev_hash + "\n" + text).encode()).hexdigest()


@settings(max_examples=300, deadline=None)
@given(data=st.data(), model=st.sampled_from([ConsentEvent, AuditEntry]))
def test_chain_hashes_are_byte_identical_to_the_first_release(data: st.DataObject, model: type[ChainedEntry]) -> None:
    """Every way core.chain now builds a payload's JSON gives the bytes the first release hashed."""
    values: dict[str, object] = {name: data.draw(chain_values, label=name) for name in model.chain_fields}
    values["seq"] = data.draw(st.integers(1, 2**62), label="seq")
    expected = _first_release_hash("p" * 64, model, values)
    assert entry_hash("p" * 64, chain_payload(model, values)) == expected
    assert _hash_text("p" * 64, _payload_json(model, values)) == expected
    [text] = _payload_texts(model, [values])  # appending: column by column
    assert _hash_text("p" * 64, text) == expected
    # verifying: timestamps read back as the naive UTC the database stores
    names, template, encoders = _payload_layout(model, naive_utc=True)
    stored = {k: v.astimezone(UTC).replace(tzinfo=None) if isinstance(v, datetime) else v for k, v in values.items()}
    fragments = tuple(encode([stored[name]])[0] for name, encode in zip(names, encoders, strict=True))
    assert _hash_text("p" * 64, template % fragments) == expected


@settings(max_examples=300, deadline=None)
@given(moment=moments)
def test_timestamps_read_back_naive_give_the_same_text(moment: datetime) -> None:
    """Verification reads timestamps as the naive UTC the database stores."""
    assert _naive_utc_text(moment.astimezone(UTC).replace(tzinfo=None)) == isoformat_z(moment)


# -- through the database ------------------------------------------------------------------------------------


@dataclass
class Copy:
    """One set of contacts and the ledger ids its events received."""

    people: list[Contact]
    ids: dict[int, int]  # generated event index -> consent_events.id
    seqs: dict[int, int]  # generated event index -> seq


def _setup(session: Session) -> tuple[int, list[Purpose]]:
    workspace = make_workspace(session)
    as_system(session, workspace)
    email = purposes.purpose_by_key(session, PURPOSE_KEYS[0])
    purposes.update_purpose(session, purpose_id=email.id, validity_days=VALIDITY_DAYS)
    return workspace.id, [email, purposes.purpose_by_key(session, PURPOSE_KEYS[1])]


def _record(session: Session, items: list[Ev], batches: list[list[int]], targets: list[Purpose], label: str) -> Copy:
    people = [
        contacts.upsert_contact(session, contacts.ContactData(email=f"{label}{n}@example.com")).contact
        for n in range(CONTACTS)
    ]
    ids: dict[int, int] = {}
    for batch in batches:
        new = [
            ledger.NewEvent(
                contact=people[items[i].contact],
                purpose=targets[items[i].purpose],
                event_type=items[i].kind,
                method="api",
                legal_basis=items[i].basis,
                occurred_at=items[i].at,
                requires_confirmation=items[i].confirm,
            )
            for i in batch
        ]
        ids.update(zip(batch, ledger.record_events(session, new), strict=True))
    statement = select(ConsentEvent.id, ConsentEvent.seq).where(ConsentEvent.id.in_(ids.values()))
    seq_of = {row.id: row.seq for row in session.execute(statement)}
    return Copy(people, ids, {index: seq_of[event_id] for index, event_id in ids.items()})


def _stored(session: Session, contact: Contact, purpose: Purpose) -> StateValue | None:
    row = session.scalars(
        select(ConsentState).where(ConsentState.contact_id == contact.id, ConsentState.purpose_id == purpose.id)
    ).one_or_none()
    if row is None:
        return None
    return StateValue(
        status=row.status,
        legal_basis=row.legal_basis,
        event_id=row.event_id,
        decided_at=row.decided_at,
        last_occurred_at=row.last_occurred_at,
        expires_at=row.expires_at,
    )


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(items=events(), data=st.data())
def test_any_arrival_order_leaves_the_state_equal_to_the_replay(
    session: Session, items: list[Ev], data: st.DataObject
) -> None:
    workspace_id, targets = _setup(session)
    first = _record(session, items, data.draw(arrivals(len(items)), label="first"), targets, "a")
    second = _record(session, items, data.draw(arrivals(len(items)), label="second"), targets, "b")
    validities = [VALIDITY, None]

    pairs_with_events = 0
    for c in range(CONTACTS):
        for p, purpose in enumerate(targets):
            indexes = [i for i, item in enumerate(items) if item.contact == c and item.purpose == p]
            outcomes = []
            for copy in (first, second):
                facts = [
                    Fact(
                        event_id=copy.ids[i],
                        seq=copy.seqs[i],
                        event_type=items[i].kind,
                        requires_confirmation=items[i].confirm,
                        legal_basis=items[i].basis,
                        occurred_at=items[i].at,
                    )
                    for i in indexes
                ]
                stored = _stored(session, copy.people[c], purpose)
                assert stored == replay(facts, validities[p])
                outcomes.append(_outcome(stored))
                if stored is not None:
                    pairs_with_events += 1
                    _check_withdrawals_win(stored, [items[i] for i in indexes])
            assert outcomes[0] == outcomes[1], "two arrival orders of the same events disagree"
            if indexes:  # state_at from the ledger, at every moment that matters, against the reference
                history = [(first.seqs[i], items[i]) for i in indexes]
                for moment in _moments(exhaustive=False):
                    status = ledger.state_at(session, contact=first.people[c], purpose=purpose, moment=moment)
                    assert status == naive_status_at(history, validities[p], moment), (moment, history)

    assert verify_states(session)[workspace_id] == (pairs_with_events, None)
    [chain] = [report for report in verify_ledger_chains(session) if report.chain_key == workspace_id]
    assert chain.ok and chain.entries == 2 * len(items)


def _check_withdrawals_win(state: StateValue, history: list[Ev]) -> None:
    withdrawals = [item.at for item in history if item.kind == EventType.WITHDRAW]
    if not withdrawals:
        return
    latest = max(withdrawals)
    if state.status in ACTIVE:
        assert state.decided_at > latest, "a grant at or before a withdrawal left the consent active"
    if all(item.at <= latest for item in history if item.kind in POSITIVE):
        assert state.status not in ACTIVE


def test_the_naive_reference_agrees_on_a_hand_made_case() -> None:
    """Guards the reference itself: grant, double opt-in, expiry, withdrawal at a tie."""
    grant = Ev(0, 0, "grant", "consent", False, TIMES[0])
    again = Ev(0, 0, "grant", "consent", True, TIMES[2])  # after the validity: asks again
    withdraw = Ev(0, 0, "withdraw", "consent", False, TIMES[2])
    history = [(1, grant), (2, again)]
    assert naive_status_at(history, VALIDITY, TIMES[0]) == "granted"
    assert naive_status_at(history, VALIDITY, TIMES[1]) == "granted"
    assert naive_status_at(history, VALIDITY, TIMES[0] + VALIDITY) == "expired"
    assert naive_status_at(history, VALIDITY, TIMES[2]) == "pending"
    assert naive_status_at([*history, (3, withdraw)], VALIDITY, TIMES[2]) == "withdrawn"
    assert [a <= b for a, b in pairwise(_moments())] == [True] * (len(_moments()) - 1)


def test_bulk_written_rows_are_stored_as_sqlalchemy_stores_them(session: Session) -> None:
    """The ledger bypasses SQLAlchemy's executemany for speed; values must land in the very same form.

    On SQLite a timestamp is text, so a different rendering (say without ``.000000``) would break
    equality and range comparisons against values SQLAlchemy binds.
    """
    _, targets = _setup(session)
    person = contacts.upsert_contact(session, contacts.ContactData(email="exact@example.com")).contact
    at = BASE.replace(microsecond=0)
    now = BASE + timedelta(days=90, microseconds=7)
    ledger.record_events(
        session,
        [ledger.NewEvent(contact=person, purpose=targets[0], event_type="grant", method="api", occurred_at=at)],
        now=now,
    )
    ledger.record_events(
        session,
        [ledger.NewEvent(contact=person, purpose=targets[0], event_type="refresh", method="api", occurred_at=at)],
        now=now,
    )
    assert session.scalar(select(func.count()).where(ConsentEvent.occurred_at == at)) == 2
    assert session.scalar(select(func.count()).where(ConsentEvent.recorded_at == now)) == 2
    assert session.scalar(select(func.count()).where(ConsentEvent.requires_confirmation.is_(False))) == 2
    state = select(func.count()).where(
        ConsentState.decided_at == at,
        ConsentState.last_occurred_at == at,
        ConsentState.expires_at == at + VALIDITY,
        ConsentState.updated_at == now,
    )
    assert session.scalar(state) == 1  # inserted by the first batch, updated by the second
