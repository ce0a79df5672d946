"""Consent state as a pure fold over ledger events.

The rules, in one place (the materialised table, ``verify`` and ``state_at`` all use them):

- events apply in the order they *occurred*; at the same instant a withdrawal applies last,
  so it wins, and an expiry applies after any grant, confirmation or refresh (the outcome then
  never depends on which of them the ledger received first); the ledger sequence breaks
  remaining ties;
- a late-arriving event is slotted into its place in time: it never overrides a newer one;
- ``grant``/``refresh``/``confirm`` give ``granted`` (a grant that awaits double opt-in gives
  ``pending``, but never downgrades an existing ``granted``); a grant whose legal basis is
  ``unknown`` (a contact imported without consent evidence) records ``none`` and never
  downgrades anything;
- ``withdraw`` gives ``withdrawn`` whatever came before;
- ``expire`` turns ``granted``/``pending`` into ``expired``; a granted consent also reads as
  ``expired`` once its purpose's validity period has passed (``expires_at``).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from zgoda.consent.models import ConsentStatus, EventType, LegalBasis


class Fact(NamedTuple):
    """What the fold needs of one ledger event (a named tuple: the ledger makes thousands per batch)."""

    event_id: int
    seq: int
    event_type: str
    requires_confirmation: bool
    legal_basis: str
    occurred_at: datetime


class StateValue(NamedTuple):
    """A (contact, purpose) state: what the ``consent_states`` row holds."""

    status: str
    legal_basis: str
    event_id: int
    decided_at: datetime
    last_occurred_at: datetime
    expires_at: datetime | None

    def status_at(self, moment: datetime) -> str:
        """The status as seen at ``moment`` (a granted consent past its validity reads as expired)."""
        if self.status == ConsentStatus.GRANTED and self.expires_at is not None and moment >= self.expires_at:
            return ConsentStatus.EXPIRED.value
        return self.status


_TIE_RANK = {EventType.WITHDRAW.value: 2, EventType.EXPIRE.value: 1}


def order_key(fact: Fact) -> tuple[datetime, int, int]:
    """Time order; at one instant grants, confirmations and refreshes, then expiries, then withdrawals."""
    return (fact.occurred_at, _TIE_RANK.get(fact.event_type, 0), fact.seq)


_WITHDRAW, _EXPIRE, _GRANT = EventType.WITHDRAW.value, EventType.EXPIRE.value, EventType.GRANT.value
_GRANTED, _PENDING = ConsentStatus.GRANTED.value, ConsentStatus.PENDING.value
_WITHDRAWN, _EXPIRED, _NONE = ConsentStatus.WITHDRAWN.value, ConsentStatus.EXPIRED.value, ConsentStatus.NONE.value
_UNKNOWN = LegalBasis.UNKNOWN.value


def apply(state: StateValue | None, fact: Fact, validity: timedelta | None) -> StateValue:
    """The state after ``fact``, given the state before it.

    Written without helper closures (the ledger folds every recorded event through it); a decision gives
    ``StateValue(status, fact's legal basis, fact's event, occurred, occurred, expires)`` and "unchanged"
    keeps the state, moving only ``last_occurred_at`` forward.
    """
    kind = fact.event_type
    occurred = fact.occurred_at
    if kind == _WITHDRAW:
        return StateValue(_WITHDRAWN, fact.legal_basis, fact.event_id, occurred, occurred, None)
    if kind == _EXPIRE:
        if state is None:
            return StateValue(_NONE, fact.legal_basis, fact.event_id, occurred, occurred, None)
        if state.status in (_GRANTED, _PENDING):
            return StateValue(_EXPIRED, fact.legal_basis, fact.event_id, occurred, occurred, None)
        return _moved_on(state, occurred)
    # grant, refresh, confirm
    if fact.legal_basis == _UNKNOWN:
        if state is None or state.status == _NONE:
            return StateValue(_NONE, fact.legal_basis, fact.event_id, occurred, occurred, None)
        return _moved_on(state, occurred)
    if kind == _GRANT and fact.requires_confirmation:
        if state is not None and state.status_at(occurred) == _GRANTED:
            return _moved_on(state, occurred)
        return StateValue(_PENDING, fact.legal_basis, fact.event_id, occurred, occurred, None)
    # in UTC: adding days to a zoned time would shift the instant across a DST change
    expires = occurred.astimezone(UTC) + validity if validity else None
    return StateValue(_GRANTED, fact.legal_basis, fact.event_id, occurred, occurred, expires)


def _moved_on(state: StateValue, occurred: datetime) -> StateValue:
    """``state`` unchanged but for ``last_occurred_at``, moved forward to ``occurred`` if later (built
    directly: ``_replace`` costs several times more)."""
    status, basis, event_id, decided, last, expires = state
    return StateValue(status, basis, event_id, decided, occurred if occurred > last else last, expires)


def replay(facts: Iterable[Fact], validity: timedelta | None) -> StateValue | None:
    """The state after every fact, applied in time order."""
    state: StateValue | None = None
    for fact in sorted(facts, key=order_key):
        state = apply(state, fact, validity)
    return state


def replay_until(facts: Iterable[Fact], validity: timedelta | None, moment: datetime) -> str:
    """The status at ``moment``: only events that had occurred by then count."""
    state = replay((f for f in facts if f.occurred_at <= moment), validity)
    return state.status_at(moment) if state else ConsentStatus.NONE.value
