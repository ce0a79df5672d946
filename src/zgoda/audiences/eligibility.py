"""Who a campaign may reach: the audience, and for each member the reason it is excluded, if any.

The send-eligible audience is always: in the list or segment AND holding a valid consent for the
campaign's purpose at that moment (or, only where the workspace switched the soft opt-in on, a
recorded legitimate interest) AND not suppressed AND not restricted AND the list not blocked AND
the workspace allowed to send. One SQL ``CASE`` gives the first reason that applies, in the order of
:data:`REASONS`; the preview counts with it, and the send gate asks it again for every message at
send time, so both always agree.

A consent request (double opt-in, re-permission, refresh) reaches the same audience plus those whose
consent is pending: it asks them to confirm what they started. It never reaches anyone without
consent or who withdrew it: an email asking for marketing consent is itself marketing (ICO v. Honda
and Flybe, 2017; the Polish regulators read it the same way), see docs/consent-requests.md.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, case, exists, func, literal, null, or_, select
from sqlalchemy.orm import Session, aliased

from zgoda.accounts.models import Workspace
from zgoda.audiences.filters import Definition, compile_definition
from zgoda.audiences.models import ContactList, ListMember, Segment
from zgoda.consent.models import ConsentState, ConsentStatus, LegalBasis
from zgoda.contacts.models import Contact
from zgoda.core.clock import utcnow
from zgoda.core.tenancy import current_workspace_id, get_scoped
from zgoda.feedback.models import PlatformSuppression, Suppression


class Exclusion(StrEnum):
    """Why a member of the audience gets no message (first match wins, in this order)."""

    NO_ADDRESS = "no_address"  # no email address, or the contact was erased
    RESTRICTED = "restricted"  # processing restricted by a data-subject request (Art. 18)
    WORKSPACE_SUSPENDED = "workspace_suspended"
    LIST_BLOCKED = "list_blocked"
    SUPPRESSED = "suppressed"  # on the workspace's or the platform's suppression list
    NO_CONSENT = "no_consent"
    CONSENT_PENDING = "consent_pending"  # awaiting double opt-in
    CONSENT_WITHDRAWN = "consent_withdrawn"
    CONSENT_EXPIRED = "consent_expired"
    SOFT_OPT_IN_OFF = "soft_opt_in_off"  # legitimate interest recorded, but the workspace has not allowed it


REASONS = tuple(Exclusion)
SOFT_OPT_IN_BASES = (LegalBasis.LEGITIMATE_INTEREST.value, LegalBasis.CONTRACT.value)


@dataclass(frozen=True)
class Audience:
    """What a campaign sends to: a list or a segment, for one purpose, as the workspace stands now."""

    purpose_id: int
    list_id: int | None = None
    segment: Definition | None = None
    list_blocked: bool = False
    workspace_suspended: bool = False
    soft_opt_in: bool = False
    consent_request: bool = False
    """A campaign that asks for the consent: a pending double opt-in is whom it is for, not a reason to skip."""


def soft_opt_in_enabled(workspace: Workspace) -> bool:
    """Whether the workspace allows the soft opt-in (off unless the owner switched it on)."""
    sending = (workspace.settings or {}).get("sending") or {}
    return bool(sending.get("soft_opt_in", False))


def audience_for(
    session: Session,
    *,
    purpose_id: int,
    list_id: int | None = None,
    segment_id: int | None = None,
    consent_request: bool = False,
) -> Audience:
    """The audience of a list or a segment for a purpose, with the workspace's current standing.

    With ``consent_request`` it is the audience of a campaign asking for that purpose's consent.
    """
    from zgoda.audiences.filters import check_definition

    workspace = session.get(Workspace, current_workspace_id(session))
    assert workspace is not None
    blocked = False
    definition = None
    if list_id is not None:
        contact_list = get_scoped(session, ContactList, list_id)
        blocked = contact_list is not None and contact_list.blocked_at is not None
    if segment_id is not None:
        segment = get_scoped(session, Segment, segment_id)
        assert segment is not None
        definition = check_definition(session, segment.definition)
    return Audience(
        purpose_id=purpose_id,
        list_id=list_id,
        segment=definition,
        list_blocked=blocked,
        workspace_suspended=workspace.sending_suspended_at is not None,
        soft_opt_in=soft_opt_in_enabled(workspace),
        consent_request=consent_request,
    )


def _reason(audience: Audience, state: Any, workspace_id: int, now: datetime) -> ColumnElement[Any]:
    suppressed = or_(
        exists().where(Suppression.workspace_id == workspace_id, Suppression.address_hash == Contact.email_hash),
        exists().where(PlatformSuppression.address_hash == Contact.email_hash),
    )
    soft_basis = state.legal_basis.in_(SOFT_OPT_IN_BASES)
    whens: list[tuple[ColumnElement[bool], str]] = [
        (or_(Contact.email.is_(None), Contact.erased_at.is_not(None)), Exclusion.NO_ADDRESS),
        (Contact.restricted_at.is_not(None), Exclusion.RESTRICTED),
    ]
    if audience.workspace_suspended:
        whens.append((literal(True), Exclusion.WORKSPACE_SUSPENDED))
    if audience.list_blocked:
        whens.append((literal(True), Exclusion.LIST_BLOCKED))
    whens += [
        (suppressed, Exclusion.SUPPRESSED),
        (or_(state.status.is_(None), state.status == ConsentStatus.NONE), Exclusion.NO_CONSENT),
    ]
    if not audience.consent_request:
        whens.append((state.status == ConsentStatus.PENDING, Exclusion.CONSENT_PENDING))
    whens += [
        (state.status == ConsentStatus.WITHDRAWN, Exclusion.CONSENT_WITHDRAWN),
        (
            or_(
                state.status == ConsentStatus.EXPIRED,
                and_(state.expires_at.is_not(None), state.expires_at <= now),
            ),
            Exclusion.CONSENT_EXPIRED,
        ),
    ]
    if not audience.soft_opt_in:
        whens.append((soft_basis, Exclusion.SOFT_OPT_IN_OFF))
    return case(*whens, else_=null())


def decision_query(
    session: Session, audience: Audience, *, now: datetime | None = None, contact_ids: Sequence[int] | None = None
) -> Select[Any]:
    """``(contact_id, list_member_source_id, reason, consent_event_id)`` for every member of the audience.

    ``reason`` is ``None`` for a contact the campaign may reach; ``consent_event_id`` is the ledger
    event behind its consent state (the one a send row records). With ``contact_ids`` the query asks
    only about those contacts (the send gate's batch).
    """
    now = now or utcnow()
    workspace_id = current_workspace_id(session)
    assert workspace_id is not None
    state = aliased(ConsentState)
    reason = _reason(audience, state, workspace_id, now).label("reason")
    columns: list[Any] = [Contact.id.label("contact_id")]
    if audience.list_id is not None:
        columns.append(ListMember.source_id.label("member_source_id"))
    else:
        columns.append(Contact.source_id.label("member_source_id"))
    columns += [reason, state.event_id.label("consent_event_id")]
    query = select(*columns).select_from(Contact)
    if audience.list_id is not None:
        query = query.join(
            ListMember, and_(ListMember.contact_id == Contact.id, ListMember.list_id == audience.list_id)
        )
    query = query.outerjoin(state, and_(state.contact_id == Contact.id, state.purpose_id == audience.purpose_id))
    if audience.segment is not None:
        query = query.where(compile_definition(session, audience.segment))
    if contact_ids is not None:
        query = query.where(Contact.id.in_(contact_ids))
    return query


@dataclass
class Preview:
    """How many a campaign would reach now, and how many it would not, by reason."""

    total: int = 0
    eligible: int = 0
    excluded: dict[str, int] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"total": self.total, "eligible": self.eligible, "excluded": dict(self.excluded)}


def preview(session: Session, audience: Audience) -> Preview:
    """Counts of the audience by outcome (one grouped query)."""
    decisions = decision_query(session, audience).subquery()
    rows = session.execute(select(decisions.c.reason, func.count()).group_by(decisions.c.reason)).all()
    result = Preview(excluded={reason.value: 0 for reason in REASONS})
    for reason, count in rows:
        result.total += count
        if reason is None:
            result.eligible += count
        else:
            result.excluded[reason] = count
    return result


def stream_eligible(session: Session, audience: Audience, *, batch_size: int = 5000) -> Iterator[tuple[int, str]]:
    """``(contact_id, email)`` of every contact the campaign may reach now, streamed in id order."""
    # The address comes with the decision (no second join of contacts), and the rows stream as plain
    # rows: ``yield_per`` on an ORM statement runs every batch through the ORM's loading, which
    # doubled the time of fetching a million rows (benchmarks/audience.py). ``stream_results`` with a
    # bounded buffer keeps the memory as flat.
    decisions = decision_query(session, audience).add_columns(Contact.email.label("email")).subquery()
    query = (
        select(decisions.c.contact_id, decisions.c.email)
        .where(decisions.c.reason.is_(None))
        .order_by(decisions.c.contact_id)
        .execution_options(stream_results=True, max_row_buffer=batch_size)
    )
    for contact_id, email in session.execute(query):
        yield contact_id, str(email)
