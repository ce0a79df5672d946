"""What a subject (a contact, no login) can do from a message: unsubscribe, and manage their consents.

Everything hangs on the signed link token (:mod:`zgoda.campaigns.links`): it names the workspace,
contact, purpose and send, and cannot be forged or changed into another contact's. A withdrawal is
recorded in the ledger with the method, the time, the user agent and the send it came from; doing it
twice changes nothing.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from zgoda.accounts import service as accounts
from zgoda.accounts.models import Workspace
from zgoda.campaigns.links import CONSENT_REQUEST_SALT, UNSUBSCRIBE_SALT, LinkToken, read_token
from zgoda.campaigns.models import Campaign, CampaignKind, CampaignStatus, Send
from zgoda.consent import ledger
from zgoda.consent.models import (
    Channel,
    ConsentEvent,
    ConsentState,
    ConsentStatus,
    EventType,
    Method,
    Notice,
    Purpose,
)
from zgoda.contacts.models import Contact
from zgoda.core.clock import utcnow
from zgoda.core.errors import NotFound
from zgoda.core.tenancy import Actor, bind_scope, unscoped
from zgoda.feedback.kinds import FeedbackKind
from zgoda.feedback.service import Applied, Observation, apply


@dataclass(frozen=True)
class Subject:
    """The contact a valid link names, with the send and purpose it came from."""

    token: LinkToken
    workspace: Workspace
    contact: Contact
    purpose: Purpose
    send: Send


def resolve(session: Session, secret: bytes, value: str, *, salt: str = UNSUBSCRIBE_SALT) -> Subject:
    """The subject of a link; a forged token, or one naming rows that do not match, is a 404."""
    token = read_token(secret, value, salt=salt)
    bind_scope(session, workspace_id=None, actor=Actor(label="subject", via="public"))
    with unscoped(session):
        workspace = session.get(Workspace, token.workspace_id)
        send = session.get(Send, token.send_id)
    if workspace is None or send is None or send.workspace_id != workspace.id or send.contact_id != token.contact_id:
        raise NotFound("This link is not valid.", field="token")
    bind_scope(session, workspace_id=workspace.id, actor=Actor(label="subject", via="public"))
    contact = session.get(Contact, token.contact_id)
    purpose = session.get(Purpose, token.purpose_id)
    if contact is None or purpose is None or contact.erased_at is not None:
        raise NotFound("This link is not valid.", field="token")
    return Subject(token=token, workspace=workspace, contact=contact, purpose=purpose, send=send)


def unsubscribe(
    subject: Subject, session: Session, *, one_click: bool, user_agent: str | None, ip: str | None
) -> Applied:
    """Withdraw the consent the message relied on (RFC 8058 one-click, or the footer link's button)."""
    via = "one_click" if one_click else "unsubscribe_link"
    assert subject.send.ref is not None
    bind_scope(session, workspace_id=subject.workspace.id, actor=Actor(label=f"subject:{via}", via="public", ip=ip))
    return apply(
        session,
        Observation(
            kind=FeedbackKind.UNSUBSCRIBE,
            send_ref=subject.send.ref,
            dedupe_key=f"{via}:{subject.send.id}:{uuid.uuid4().hex}",  # each click is its own event
            via=via,
            user_agent=(user_agent or "")[:300] or None,
            ip=ip,
        ),
    )


@dataclass(frozen=True)
class Choice:
    """One email purpose on the preference centre: its current status and the notice the subject reads."""

    purpose: Purpose
    status: str
    notice: Notice | None

    @property
    def granted(self) -> bool:
        return self.status == ConsentStatus.GRANTED


def latest_notice(session: Session, purpose: Purpose, language: str) -> Notice | None:
    """The newest notice of ``purpose`` in ``language`` (or in any language when it has none in that one)."""
    notices = list(
        session.scalars(select(Notice).where(Notice.purpose_id == purpose.id).order_by(Notice.version.desc()))
    )
    return next((n for n in notices if n.language == language), notices[0] if notices else None)


def choices(subject: Subject, session: Session, language: str) -> list[Choice]:
    """The workspace's email purposes with the subject's status for each."""
    purposes = session.scalars(select(Purpose).where(Purpose.channel == Channel.EMAIL).order_by(Purpose.id)).all()
    states = {
        state.purpose_id: state
        for state in session.scalars(select(ConsentState).where(ConsentState.contact_id == subject.contact.id))
    }
    result = []
    for purpose in purposes:
        state = states.get(purpose.id)
        status = ConsentStatus.NONE.value
        if state is not None:
            expired = state.expires_at is not None and state.expires_at <= utcnow()
            status = ConsentStatus.EXPIRED.value if state.status == ConsentStatus.GRANTED and expired else state.status
        result.append(Choice(purpose=purpose, status=status, notice=latest_notice(session, purpose, language)))
    return result


def save_preferences(
    subject: Subject,
    session: Session,
    *,
    wanted: set[int],
    language: str,
    user_agent: str | None,
    ip: str | None,
    page_url: str,
) -> dict[str, list[str]]:
    """Grant the chosen purposes not yet granted, withdraw the granted ones not chosen (method preference centre)."""
    bind_scope(
        session, workspace_id=subject.workspace.id, actor=Actor(label="subject:preferences", via="public", ip=ip)
    )
    events: list[ledger.NewEvent] = []
    changed: dict[str, list[str]] = {"granted": [], "withdrawn": []}
    evidence = ledger.Evidence(ip=ip, user_agent=(user_agent or "")[:300] or None, page_url=page_url)
    for choice in choices(subject, session, language):
        if choice.purpose.id in wanted and not choice.granted:
            events.append(
                ledger.NewEvent(
                    contact=subject.contact,
                    purpose=choice.purpose,
                    event_type=EventType.GRANT,
                    method=Method.PREFERENCE_CENTRE,
                    notice=choice.notice,
                    evidence=evidence,
                    reference=f"send:{subject.send.id}",
                )
            )
            changed["granted"].append(choice.purpose.key)
        elif choice.purpose.id not in wanted and choice.granted:
            events.append(
                ledger.NewEvent(
                    contact=subject.contact,
                    purpose=choice.purpose,
                    event_type=EventType.WITHDRAW,
                    method=Method.PREFERENCE_CENTRE,
                    evidence=evidence,
                    reference=f"send:{subject.send.id}",
                )
            )
            changed["withdrawn"].append(choice.purpose.key)
    ledger.record_events(session, events)
    return changed


def controller_name(workspace: Workspace) -> str:
    """Who the subject deals with: the controller's legal name, or the workspace's name."""
    controller: dict[str, Any] = accounts.controller_of(workspace) or {}
    return str(controller.get("legal_name") or workspace.name)


@dataclass(frozen=True)
class ConsentRequest:
    """A consent request's link: who, which campaign, the notice it asked with, and where the consent stands."""

    subject: Subject
    campaign: Campaign
    notice: Notice
    status: str  # the subject's consent status for the purpose now
    answered: bool  # already given through this very message (whatever happened since)
    expired: bool  # older than CONFIRMATION_DAYS, or its campaign was cancelled: it records nothing


CONFIRMATION_DAYS = 30
"""How long a consent request's link can give consent after its message went out. A yes weeks later
from an old message is weak evidence; a new request is the way."""


def consent_request(session: Session, secret: bytes, value: str) -> ConsentRequest:
    """What a confirmation link asks; a forged link, or one of a campaign that asks nothing, is a 404."""
    subject = resolve(session, secret, value, salt=CONSENT_REQUEST_SALT)
    campaign = session.get(Campaign, subject.send.campaign_id)
    notice_id = (campaign.content or {}).get("notice_id") if campaign is not None else None
    notice = session.get(Notice, notice_id) if isinstance(notice_id, int) else None
    if (
        campaign is None
        or campaign.kind != CampaignKind.CONSENT_REQUEST
        or campaign.purpose_id != subject.purpose.id
        or notice is None
        or subject.contact.restricted_at is not None  # processing restricted (Art. 18): no new consent recorded
    ):
        raise NotFound("This link is not valid.", field="token")
    now = utcnow()
    state = session.scalar(
        select(ConsentState).where(
            ConsentState.contact_id == subject.contact.id, ConsentState.purpose_id == subject.purpose.id
        )
    )
    status = ConsentStatus.NONE.value if state is None else state.status
    expires_at = state.expires_at if state is not None else None
    if status == ConsentStatus.GRANTED and expires_at is not None and expires_at <= now:
        status = ConsentStatus.EXPIRED.value
    answered = (
        session.scalar(
            select(ConsentEvent.id)
            .where(
                ConsentEvent.contact_id == subject.contact.id,
                ConsentEvent.reference == _reference(subject),
                ConsentEvent.method == Method.DOUBLE_OPT_IN,
            )
            .limit(1)
        )
        is not None
    )
    sent_at = subject.send.sent_at
    expired = (
        campaign.status == CampaignStatus.CANCELLED
        or sent_at is None
        or now - sent_at > timedelta(days=CONFIRMATION_DAYS)
    )
    return ConsentRequest(
        subject=subject, campaign=campaign, notice=notice, status=status, answered=answered, expired=expired
    )


def _reference(subject: Subject) -> str:
    return f"send:{subject.send.id}"


def give_consent(
    request: ConsentRequest,
    session: Session,
    *,
    user_agent: str | None,
    ip: str | None,
    page_url: str,
) -> ConsentEvent | None:
    """Record the subject's yes, with the notice the message and the page showed (method ``double_opt_in``).

    A pending double opt-in becomes a ``confirm``, a consent still granted a ``refresh``, anything
    else (withdrawn or expired since the message went out) a new ``grant``: the page shows the
    notice's full text and the subject pressed the button, from the address the message reached.
    Pressing it again for the same message records nothing (None), whatever happened since; nor does
    an expired link.
    """
    if request.answered or request.expired:
        return None
    subject = request.subject
    bind_scope(
        session, workspace_id=subject.workspace.id, actor=Actor(label="subject:consent_request", via="public", ip=ip)
    )
    event_type = {
        ConsentStatus.PENDING.value: EventType.CONFIRM,
        ConsentStatus.GRANTED.value: EventType.REFRESH,
    }.get(request.status, EventType.GRANT)
    return ledger.record_event(
        session,
        ledger.NewEvent(
            contact=subject.contact,
            purpose=subject.purpose,
            event_type=event_type,
            method=Method.DOUBLE_OPT_IN,
            notice=request.notice,
            evidence=ledger.Evidence(
                ip=ip,
                user_agent=(user_agent or "")[:300] or None,
                page_url=page_url,
                note=f"Confirmation link of campaign '{request.campaign.name}' (send {subject.send.ref}).",
            ),
            reference=_reference(subject),
        ),
    )
