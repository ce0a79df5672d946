"""What comes back, applied: each observation is tied to its send, stored once, and the rules run.

Every intake (a bounce mailbox, the sink's Maildir, provider webhooks, unsubscribe links) becomes an
:class:`Observation` and goes through :func:`apply`, so the rules live in one place:

- a **hard bounce** suppresses the address at once;
- **soft bounces**: ``soft_bounce_limit`` of them within ``soft_bounce_days`` suppress it (default 3 in 30);
- a **complaint** suppresses the address and withdraws the consent of the campaign's purpose
  (method ``complaint``);
- an **unsubscribe** withdraws the consent of the campaign's purpose (it does not suppress: the person
  may still want other purposes);
- deliveries, opens and clicks are only stored (for rates and segments).

An observation must name its send (the per-send ref); one that does not, or whose recipient is not the
address the send went to, is ignored with a logged reason and nothing is written. Each is stored under
a dedupe key (the provider's event id, or a digest of the parsed message), so a redelivered webhook or a
re-read mailbox changes nothing.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, bindparam, func, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from zgoda.accounts.models import Workspace
from zgoda.campaigns.models import Campaign, Send
from zgoda.consent import ledger
from zgoda.consent.models import ConsentState, ConsentStatus, EventType, Method, Purpose
from zgoda.contacts.models import Contact
from zgoda.core.clock import utcnow
from zgoda.core.db import NUL
from zgoda.core.tenancy import Actor, bind_scope, current_scope
from zgoda.feedback import suppression
from zgoda.feedback.kinds import BounceClass, FeedbackKind
from zgoda.feedback.models import SendEvent

log = logging.getLogger("zgoda.feedback")

DEFAULT_SOFT_BOUNCE_LIMIT = 3
DEFAULT_SOFT_BOUNCE_DAYS = 30
STORED_KINDS = {
    FeedbackKind.BOUNCE,
    FeedbackKind.COMPLAINT,
    FeedbackKind.DELIVERY,
    FeedbackKind.UNSUBSCRIBE,
    FeedbackKind.OPEN,
    FeedbackKind.CLICK,
}


@dataclass(frozen=True)
class Observation:
    """One thing that happened to one send, whatever reported it."""

    kind: FeedbackKind
    send_ref: str | None
    dedupe_key: str
    recipient: str | None = None
    occurred_at: datetime | None = None
    bounce_class: BounceClass | None = None
    reason: str | None = None
    status: str | None = None
    feedback_type: str | None = None
    via: str = "mailbox"  # mailbox, ses, sendgrid, mailgun, postmark, one_click, unsubscribe_link, ...
    detail: dict[str, Any] = field(default_factory=dict)
    user_agent: str | None = None
    ip: str | None = None

    def __post_init__(self) -> None:
        """Text from outside (a provider's webhook, a report's fields) with every NUL character as U+FFFD:
        PostgreSQL's text refuses NUL, and an event that failed to store would be retried forever."""
        for name, value in self.__dict__.items():
            object.__setattr__(self, name, _without_nul(value))


def _without_nul(value: Any) -> Any:
    """``value`` with NUL replaced in every string, in lists and mappings too (an enum member, a string
    without NUL, stays the very object)."""
    if isinstance(value, str):
        return value.replace(NUL, "\ufffd") if NUL in value else value
    if isinstance(value, list):
        return [_without_nul(item) for item in value]
    if isinstance(value, dict):
        return {_without_nul(key): _without_nul(item) for key, item in value.items()}
    return value


@dataclass
class Applied:
    """What :func:`apply` did with one observation."""

    outcome: str  # "recorded", "duplicate", "ignored"
    why: str = ""
    workspace_id: int | None = None
    send_id: int | None = None
    suppressed: bool = False
    withdrawn: bool = False


def feedback_rules(workspace: Workspace) -> tuple[int, int]:
    """The workspace's soft-bounce rule: (bounces, days)."""
    rules = (workspace.settings or {}).get("feedback") or {}
    limit = rules.get("soft_bounce_limit", DEFAULT_SOFT_BOUNCE_LIMIT)
    days = rules.get("soft_bounce_days", DEFAULT_SOFT_BOUNCE_DAYS)
    return int(limit), int(days)


def message_dedupe_key(raw: bytes, recipient: str | None) -> str:
    """The dedupe key of a report parsed from a message: the same message read twice is one event."""
    digest = hashlib.sha256(raw).hexdigest()[:40]
    return f"msg:{digest}:{recipient or ''}"


def apply(session: Session, observation: Observation) -> Applied:
    """Tie ``observation`` to its send, store it once and run the rules (in the caller's transaction).

    The session may be scoped to one workspace (a per-workspace endpoint): an observation naming
    another workspace's send is then ignored.
    """
    if observation.kind not in STORED_KINDS:
        return Applied("ignored", f"{observation.kind.value} is not feedback about a send")
    if not observation.send_ref:
        log.info("feedback ignored: no send ref (%s, %s)", observation.kind.value, observation.via)
        return Applied("ignored", "it names no send of ours")
    scope = current_scope(session)
    found = session.connection().execute(_SEND_BY_REF, {"ref": observation.send_ref}).first()
    if found is None:
        log.info("feedback ignored: unknown send ref %s", observation.send_ref)
        return Applied("ignored", "unknown send")
    send = _SendFacts(*found)
    if scope.workspace_id is not None and scope.workspace_id != send.workspace_id:
        log.warning("feedback ignored: send %s belongs to another workspace", send.id)
        return Applied("ignored", "the send belongs to another workspace")
    bind_scope(session, workspace_id=send.workspace_id, actor=Actor.system(f"feedback:{observation.via}"))
    try:
        return _apply_to_send(session, observation, send)
    finally:
        bind_scope(session, workspace_id=scope.workspace_id, actor=scope.actor)


@dataclass(frozen=True)
class _SendFacts:
    """What the rules need of a send and its contact (read in one core query: intake is hot)."""

    id: int
    workspace_id: int
    contact_id: int
    email: str | None


_SENDS = cast(Table, Send.__table__)
_CONTACTS = cast(Table, Contact.__table__)
# a core statement over the platform-wide ref (no tenant filter applies: the ref decides the workspace)
_SEND_BY_REF = (
    select(_SENDS.c.id, _SENDS.c.workspace_id, _SENDS.c.contact_id, _CONTACTS.c.email)
    .join(_CONTACTS, _CONTACTS.c.id == _SENDS.c.contact_id)
    .where(_SENDS.c.ref == bindparam("ref"))
)


def _apply_to_send(session: Session, observation: Observation, send: _SendFacts) -> Applied:
    if observation.recipient and send.email and observation.recipient.lower() != send.email.lower():
        log.warning("feedback ignored: recipient does not match send %s", send.id)
        return Applied("ignored", "the recipient is not the address this send went to", send.workspace_id, send.id)
    occurred_at = observation.occurred_at or utcnow()
    row = {
        "workspace_id": send.workspace_id,
        "send_id": send.id,
        "contact_id": send.contact_id,
        "kind": observation.kind.value,
        "occurred_at": occurred_at,
        "recorded_at": utcnow(),
        "dedupe_key": observation.dedupe_key[:200],
        "bounce_class": observation.bounce_class.value if observation.bounce_class else None,
        "reason": observation.reason,
        "status": observation.status,
        "detail": {"via": observation.via, "feedback_type": observation.feedback_type, **observation.detail},
    }
    if not _insert_once(session, row):  # stored before, or a moment ago through another request
        return Applied("duplicate", "already recorded", send.workspace_id, send.id)
    applied = Applied("recorded", "", send.workspace_id, send.id)
    address = send.email
    if observation.kind == FeedbackKind.BOUNCE and address:
        applied.suppressed = _after_bounce(session, observation, send, address, occurred_at)
    elif observation.kind == FeedbackKind.COMPLAINT:
        if address:
            _, applied.suppressed = suppression.suppress(
                session, address=address, reason="complaint", detail=f"{observation.via}: {observation.feedback_type}"
            )
        applied.withdrawn = withdraw_for_send(
            session, _send(session, send), method=Method.COMPLAINT, observation=observation
        )
    elif observation.kind == FeedbackKind.UNSUBSCRIBE:
        method = Method.ONE_CLICK if observation.via == "one_click" else Method.UNSUBSCRIBE_LINK
        applied.withdrawn = withdraw_for_send(session, _send(session, send), method=method, observation=observation)
    return applied


def _send(session: Session, facts: _SendFacts) -> Send:
    send = session.get(Send, facts.id)
    assert send is not None
    return send


def _after_bounce(
    session: Session, observation: Observation, send: _SendFacts, address: str, occurred_at: datetime
) -> bool:
    if observation.bounce_class == BounceClass.HARD:
        _, new = suppression.suppress(
            session, address=address, reason="hard_bounce", detail=f"{observation.status or ''} {observation.reason}"
        )
        return new
    workspace = session.get(Workspace, send.workspace_id)
    assert workspace is not None
    limit, days = feedback_rules(workspace)
    since = occurred_at - timedelta(days=days)
    soft = session.scalar(
        select(func.count(SendEvent.id)).where(
            SendEvent.contact_id == send.contact_id,
            SendEvent.kind == FeedbackKind.BOUNCE.value,
            SendEvent.bounce_class == BounceClass.SOFT.value,
            SendEvent.occurred_at >= since,
        )
    )
    if (soft or 0) >= limit:
        _, new = suppression.suppress(
            session, address=address, reason="soft_bounces", detail=f"{soft} soft bounces in {days} days"
        )
        return new
    return False


_EVENTS = cast(Table, SendEvent.__table__)
_INSERT_ONCE = {
    dialect: insert_(_EVENTS)
    .on_conflict_do_nothing(index_elements=["workspace_id", "dedupe_key"])
    .returning(_EVENTS.c.id)
    for dialect, insert_ in (("postgresql", postgresql_insert), ("sqlite", sqlite_insert))
}


def _insert_once(session: Session, row: dict[str, Any]) -> bool:
    """Insert one send event unless its dedupe key is stored already (one statement, no savepoint)."""
    statement = _INSERT_ONCE[session.get_bind().dialect.name]
    return session.connection().execute(statement, row).first() is not None


def withdraw_for_send(session: Session, send: Send, *, method: str, observation: Observation | None = None) -> bool:
    """Record a withdrawal of the campaign's purpose for the send's contact (nothing if already withdrawn)."""
    campaign = session.get(Campaign, send.campaign_id)
    contact = session.get(Contact, send.contact_id)
    assert campaign is not None
    assert contact is not None
    purpose = session.get(Purpose, campaign.purpose_id)
    assert purpose is not None
    state = session.scalar(
        select(ConsentState).where(ConsentState.contact_id == contact.id, ConsentState.purpose_id == purpose.id)
    )
    if state is not None and state.status == ConsentStatus.WITHDRAWN:
        return False
    ledger.record_event(
        session,
        ledger.NewEvent(
            contact=contact,
            purpose=purpose,
            event_type=EventType.WITHDRAW,
            method=method,
            occurred_at=observation.occurred_at if observation and observation.occurred_at else None,
            evidence=ledger.Evidence(
                user_agent=observation.user_agent if observation else None,
                ip=observation.ip if observation else None,
                note=f"send {send.id} of campaign {campaign.id}",
            ),
            reference=f"send:{send.id}",
        ),
    )
    return True


def send_figures(session: Session, *, campaign_id: int) -> dict[str, Any]:
    """Per-campaign feedback: delivered, bounces by class and reason, complaints, unsubscribes, opens, clicks."""
    rows = session.execute(
        select(SendEvent.kind, SendEvent.bounce_class, SendEvent.reason, func.count(func.distinct(SendEvent.send_id)))
        .join(Send, Send.id == SendEvent.send_id)
        .where(Send.campaign_id == campaign_id)
        .group_by(SendEvent.kind, SendEvent.bounce_class, SendEvent.reason)
    ).all()
    figures: dict[str, Any] = {
        "delivered": 0,
        "bounced": {"hard": 0, "soft": 0},
        "bounce_reasons": {},
        "complaints": 0,
        "unsubscribes": 0,
        "opens": 0,
        "clicks": 0,
    }
    plural = {"delivery": "delivered", "complaint": "complaints", "unsubscribe": "unsubscribes"}
    plural |= {"open": "opens", "click": "clicks"}
    for kind, bounce_class, reason, count in rows:
        if kind == "bounce":
            figures["bounced"][bounce_class or "soft"] += count
            key = f"{bounce_class or 'soft'}:{reason or 'other'}"
            figures["bounce_reasons"][key] = figures["bounce_reasons"].get(key, 0) + count
        elif kind in plural:
            figures[plural[kind]] += count
    return figures
