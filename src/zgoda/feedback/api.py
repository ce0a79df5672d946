"""JSON API for staff: the suppression list, a campaign's feedback figures, a contact's messages and
their events, and the owner's soft-bounce rule."""

from __future__ import annotations

from collections import defaultdict
from typing import Annotated

from fastapi import APIRouter, Query, Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from zgoda.campaigns import service as campaigns
from zgoda.campaigns.models import Campaign, Send
from zgoda.contacts import service as contacts
from zgoda.contacts.service import normalise_email
from zgoda.core.errors import InvalidInput, NotFound
from zgoda.core.tenancy import get_scoped
from zgoda.feedback import settings_service, suppression
from zgoda.feedback.models import SendEvent, Suppression
from zgoda.feedback.schemas import (
    BouncesOut,
    CampaignFeedbackOut,
    ContactEventsPage,
    ContactSendOut,
    FeedbackSettingsIn,
    FeedbackSettingsOut,
    RatesOut,
    SendEventOut,
    SuppressionIn,
    SuppressionOut,
    SuppressionPage,
    SuppressionRemoveIn,
)
from zgoda.feedback.service import send_figures
from zgoda.web.context import RequestContext, require, require_existing

router = APIRouter(tags=["feedback"])
MAX_PAGE = 200


def get_suppression(session: Session, *, suppression_id: int) -> Suppression:
    """One entry of the workspace's list (``NotFound`` naming ``suppression_id`` otherwise)."""
    entry = get_scoped(session, Suppression, suppression_id)
    if entry is None:
        raise NotFound(f"There is no suppression {suppression_id} in this workspace.", field="suppression_id")
    return entry


def _suppression(session: Session, suppression_id: int) -> object:
    return get_suppression(session, suppression_id=suppression_id)


def suppression_out(entry: Suppression) -> SuppressionOut:
    """An entry as staff see it (the hint, never the address)."""
    return SuppressionOut.model_validate(entry, from_attributes=True)


def search_filters(address: str | None, reason: str | None) -> tuple[str | None, str | None]:
    """The search's address (normalised) and reason, or ``InvalidInput`` naming the field."""
    address = address.strip() if address else None
    reason = reason.strip() if reason else None
    if address:
        address = normalise_email(address, field_name="address")
    if reason and reason not in suppression.REASONS:
        raise InvalidInput(f"A suppression reason is one of {', '.join(suppression.REASONS)}.", field="reason")
    return address or None, reason or None


def _rate(count: int, sent: int) -> float | None:
    return round(count / sent, 6) if sent else None


def campaign_feedback(session: Session, *, campaign_id: int) -> CampaignFeedbackOut:
    """The campaign's feedback figures with the rates against the messages sent."""
    sent = campaigns.progress(session, campaign_id=campaign_id)["sent"]
    figures = send_figures(session, campaign_id=campaign_id)
    bounced = figures["bounced"]["hard"] + figures["bounced"]["soft"]
    return CampaignFeedbackOut(
        campaign_id=campaign_id,
        sent=sent,
        delivered=figures["delivered"],
        bounced=BouncesOut(**figures["bounced"]),
        bounce_reasons=dict(sorted(figures["bounce_reasons"].items(), key=lambda item: (-item[1], item[0]))),
        complaints=figures["complaints"],
        unsubscribes=figures["unsubscribes"],
        opens=figures["opens"],
        clicks=figures["clicks"],
        rates=RatesOut(
            bounce_rate=_rate(bounced, sent),
            complaint_rate=_rate(figures["complaints"], sent),
            unsubscribe_rate=_rate(figures["unsubscribes"], sent),
        ),
    )


def contact_sends(
    session: Session, *, contact_id: int, limit: int = 20, offset: int = 0
) -> tuple[list[ContactSendOut], int]:
    """A page of the messages to one contact (newest first), each with its events (newest first), and the total."""
    total = session.scalar(select(func.count(Send.id)).where(Send.contact_id == contact_id)) or 0
    rows = session.execute(
        select(Send, Campaign.name)
        .join(Campaign, Campaign.id == Send.campaign_id)
        .where(Send.contact_id == contact_id)
        .order_by(func.coalesce(Send.sent_at, Send.created_at).desc(), Send.id.desc())
        .limit(limit)
        .offset(offset)
    ).all()
    events: dict[int, list[SendEventOut]] = defaultdict(list)
    send_ids = [send.id for send, _ in rows]
    if send_ids:
        for event in session.scalars(
            select(SendEvent)
            .where(SendEvent.send_id.in_(send_ids))
            .order_by(SendEvent.occurred_at.desc(), SendEvent.id.desc())
        ):
            detail = dict(event.detail or {})
            via = detail.get("via")
            events[event.send_id or 0].append(
                SendEventOut(
                    id=event.id,
                    kind=event.kind,
                    occurred_at=event.occurred_at,
                    bounce_class=event.bounce_class,
                    reason=event.reason,
                    status=event.status,
                    via=str(via) if via is not None else None,
                    detail=detail,
                )
            )
    items = [
        ContactSendOut(
            send_id=send.id,
            campaign_id=send.campaign_id,
            campaign_name=name,
            status=send.status,
            reason=send.reason,
            smtp_reply=send.smtp_reply,
            sent_at=send.sent_at,
            created_at=send.created_at,
            events=events.get(send.id, []),
        )
        for send, name in rows
    ]
    return items, total


# --- suppressions -----------------------------------------------------------------------------


@router.get("/suppressions", response_model=SuppressionPage)
def list_suppressions(
    ctx: RequestContext = require("suppressions.read"),
    address: Annotated[str | None, Query(max_length=320, description="Find this exact address.")] = None,
    reason: Annotated[str | None, Query(max_length=32, description="Only entries with this reason.")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> SuppressionPage:
    """The suppression list, newest first: one exact address (any case) and/or one reason."""
    address, reason = search_filters(address, reason)
    rows, total = suppression.list_suppressions(ctx.session, address=address, reason=reason, limit=limit, offset=offset)
    return SuppressionPage(items=[suppression_out(e) for e in rows], total=total, limit=limit, offset=offset)


@router.post(
    "/suppressions", response_model=SuppressionOut, status_code=201, responses={200: {"model": SuppressionOut}}
)
def add_suppression(
    body: SuppressionIn, response: Response, ctx: RequestContext = require("suppressions.manage")
) -> SuppressionOut:
    """Put an address on the list (201; audited). Already there: 200 with the entry as it was."""
    entry, created = suppression.suppress(ctx.session, address=body.address, reason=body.reason, detail=body.detail)
    response.status_code = 201 if created else 200
    return suppression_out(entry)


@router.get("/suppressions/{suppression_id}", response_model=SuppressionOut)
def get_suppression_entry(suppression_id: int, ctx: RequestContext = require("suppressions.read")) -> SuppressionOut:
    """One entry of the list."""
    return suppression_out(get_suppression(ctx.session, suppression_id=suppression_id))


@router.post("/suppressions/{suppression_id}:remove", status_code=204)
def remove_suppression(
    suppression_id: int,
    body: SuppressionRemoveIn | None = None,
    ctx: RequestContext = require_existing("suppressions.manage", suppression_id=_suppression),
) -> Response:
    """Take an entry off the list (204; audited with the note).

    409 for a complaint while no consent was granted after it, and for an erased subject's entry.
    """
    suppression.remove_suppression(ctx.session, suppression_id=suppression_id, note=body.note if body else "")
    return Response(status_code=204)


# --- campaign figures and a contact's messages ------------------------------------------------


@router.get("/campaigns/{campaign_id}/feedback", response_model=CampaignFeedbackOut)
def get_campaign_feedback(campaign_id: int, ctx: RequestContext = require("campaigns.read")) -> CampaignFeedbackOut:
    """Delivered, bounces (hard/soft, by reason), complaints, unsubscribes, opens and clicks, with the rates."""
    campaigns.get_campaign(ctx.session, campaign_id=campaign_id)
    return campaign_feedback(ctx.session, campaign_id=campaign_id)


@router.get("/contacts/{contact_id}/events", response_model=ContactEventsPage)
def get_contact_events(
    contact_id: int,
    ctx: RequestContext = require("contacts.read"),
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 20,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> ContactEventsPage:
    """The messages sent (or refused) to one contact, newest first, each with its events."""
    contacts.get_contact(ctx.session, contact_id=contact_id)
    items, total = contact_sends(ctx.session, contact_id=contact_id, limit=limit, offset=offset)
    return ContactEventsPage(items=items, total=total, limit=limit, offset=offset)


# --- settings ---------------------------------------------------------------------------------


@router.get("/feedback-settings", response_model=FeedbackSettingsOut)
def get_feedback_settings(ctx: RequestContext = require("workspace.settings")) -> FeedbackSettingsOut:
    """The soft-bounce rule: this many soft bounces within this many days suppress the address."""
    return FeedbackSettingsOut(**settings_service.feedback_settings(ctx.workspace_required).as_json())


@router.put("/feedback-settings", response_model=FeedbackSettingsOut)
def put_feedback_settings(
    body: FeedbackSettingsIn, ctx: RequestContext = require("workspace.settings")
) -> FeedbackSettingsOut:
    """Replace the soft-bounce rule (the owner's decision; audited with before and after)."""
    stored = settings_service.update_feedback_settings(
        ctx.session,
        workspace=ctx.workspace_required,
        soft_bounce_limit=body.soft_bounce_limit,
        soft_bounce_days=body.soft_bounce_days,
    )
    return FeedbackSettingsOut(**stored.as_json())
