"""JSON API: templates (checked when saved, previewed), campaigns (send, schedule, pause, resume, cancel,
progress), sending domains (DKIM key and the DNS record to publish) and the owner's sending settings."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from sqlalchemy.orm import Session

from zgoda.campaigns import domains, settings_service
from zgoda.campaigns import service as campaigns
from zgoda.campaigns.models import Campaign, SendingDomain, Template
from zgoda.campaigns.schemas import (
    CampaignCreate,
    CampaignOut,
    DnsRecordOut,
    ProgressOut,
    SendIn,
    SendingDomainCreate,
    SendingDomainOut,
    SendingSettingsIn,
    SendingSettingsOut,
    SendOut,
    TemplateCreate,
    TemplateOut,
    TemplatePreviewOut,
    TemplateUpdate,
)
from zgoda.consent import purposes
from zgoda.web.context import RequestContext, require, require_existing

router = APIRouter(tags=["campaigns"])
STARTED_ACTIONS = ("started", "scheduled", "resumed")


def _template(session: Session, template_id: int) -> object:
    return campaigns.get_template(session, template_id=template_id)


def _campaign(session: Session, campaign_id: int) -> object:
    return campaigns.get_campaign(session, campaign_id=campaign_id)


def template_out(template: Template) -> TemplateOut:
    """A template as the API shows it."""
    return TemplateOut.model_validate(template, from_attributes=True)


def progress_out(figures: dict[str, Any]) -> ProgressOut:
    """The service's progress figures as the API shows them."""
    return ProgressOut.model_validate({key: value for key, value in figures.items() if key != "campaign"})


def campaign_out(session: Session, campaign: Campaign, *, purpose_keys: dict[int, str] | None = None) -> CampaignOut:
    """A campaign with its purpose key and its live progress."""
    if purpose_keys is None:
        purpose_keys = {campaign.purpose_id: purposes.get_purpose(session, purpose_id=campaign.purpose_id).key}
    return CampaignOut(
        id=campaign.id,
        name=campaign.name,
        kind=campaign.kind,
        status=campaign.status,
        purpose=purpose_keys[campaign.purpose_id],
        list_id=campaign.list_id,
        segment_id=campaign.segment_id,
        template_id=campaign.template_id,
        from_name=campaign.from_name,
        from_email=campaign.from_email,
        reply_to=campaign.reply_to,
        language=campaign.language,
        scheduled_at=campaign.scheduled_at,
        started_at=campaign.started_at,
        finished_at=campaign.finished_at,
        created_by=campaign.created_by,
        created_at=campaign.created_at,
        progress=progress_out(campaigns.progress(session, campaign_id=campaign.id)),
    )


def domain_out(record: SendingDomain) -> SendingDomainOut:
    """A sending domain with the DNS TXT record that publishes its DKIM key (never the private key)."""
    name, value = domains.dns_txt(record)
    return SendingDomainOut(
        id=record.id,
        domain=record.domain,
        selector=record.selector,
        created_at=record.created_at,
        dns=DnsRecordOut(name=name, value=value),
    )


# --- templates --------------------------------------------------------------------------------


@router.get("/templates", response_model=list[TemplateOut])
def list_templates(ctx: RequestContext = require("campaigns.read")) -> list[TemplateOut]:
    """Every template, by name."""
    return [template_out(t) for t in campaigns.list_templates(ctx.session)]


@router.post("/templates", response_model=TemplateOut, status_code=201)
def create_template(body: TemplateCreate, ctx: RequestContext = require("campaigns.manage")) -> TemplateOut:
    """A template, compiled now: a broken one answers 422 naming the part (subject, html or text) and line."""
    template = campaigns.create_template(
        ctx.session, name=body.name, subject=body.subject, html=body.html, text=body.text
    )
    return template_out(template)


@router.get("/templates/{template_id}", response_model=TemplateOut)
def get_template(template_id: int, ctx: RequestContext = require("campaigns.read")) -> TemplateOut:
    """One template."""
    return template_out(campaigns.get_template(ctx.session, template_id=template_id))


@router.put("/templates/{template_id}", response_model=TemplateOut)
def update_template(
    template_id: int,
    body: TemplateUpdate,
    ctx: RequestContext = require_existing("campaigns.manage", template_id=_template),
) -> TemplateOut:
    """Change a template's parts; campaigns already sending keep the copy they started with."""
    template = campaigns.update_template(
        ctx.session, template_id=template_id, subject=body.subject, html=body.html, text=body.text
    )
    return template_out(template)


@router.get("/templates/{template_id}/preview", response_model=TemplatePreviewOut)
def preview_template(
    template_id: int,
    ctx: RequestContext = require("campaigns.read"),
    contact_id: Annotated[int | None, Query(description="Render for this contact; sample values otherwise.")] = None,
) -> TemplatePreviewOut:
    """The template rendered for one contact (without the platform's footer)."""
    campaigns.get_template(ctx.session, template_id=template_id)
    return TemplatePreviewOut(**campaigns.preview_template(ctx.session, template_id=template_id, contact_id=contact_id))


# --- campaigns --------------------------------------------------------------------------------


@router.get("/campaigns", response_model=list[CampaignOut])
def list_campaigns(ctx: RequestContext = require("campaigns.read")) -> list[CampaignOut]:
    """Every campaign, newest first, with its status and progress."""
    keys = {p.id: p.key for p in purposes.list_purposes(ctx.session)}
    return [campaign_out(ctx.session, c, purpose_keys=keys) for c in campaigns.list_campaigns(ctx.session)]


@router.post("/campaigns", response_model=CampaignOut, status_code=201)
def create_campaign(body: CampaignCreate, ctx: RequestContext = require("campaigns.manage")) -> CampaignOut:
    """A draft campaign; a list, segment or template of another workspace is not found (404 naming it)."""
    campaign = campaigns.create_campaign(
        ctx.session,
        name=body.name,
        purpose_key=body.purpose,
        template_id=body.template_id,
        from_name=body.from_name,
        from_email=body.from_email,
        list_id=body.list_id,
        segment_id=body.segment_id,
        reply_to=body.reply_to,
        language=body.language,
        kind=body.kind,
    )
    return campaign_out(ctx.session, campaign)


@router.get("/campaigns/{campaign_id}", response_model=CampaignOut)
def get_campaign(campaign_id: int, ctx: RequestContext = require("campaigns.read")) -> CampaignOut:
    """One campaign with its progress (sent, pending, refused and failed by reason)."""
    return campaign_out(ctx.session, campaigns.get_campaign(ctx.session, campaign_id=campaign_id))


@router.post("/campaigns/{campaign_id}/send", response_model=SendOut, responses={202: {"model": SendOut}})
def send_campaign(
    campaign_id: int,
    response: Response,
    body: SendIn | None = None,
    ctx: RequestContext = require_existing("campaigns.send", campaign_id=_campaign),
) -> SendOut:
    """Start now (202), or schedule for ``scheduled_at`` (202; in the past: 422).

    Asking again for a campaign already under way or sent changes nothing: 200 with the action
    ``already_sending`` or ``already_sent`` and a message.
    """
    at = body.scheduled_at if body is not None else None
    request = campaigns.send_campaign(ctx.session, campaign_id=campaign_id, at=at)
    response.status_code = 202 if request.action in STARTED_ACTIONS else 200
    return SendOut(action=request.action, message=request.message, campaign=campaign_out(ctx.session, request.campaign))


@router.post("/campaigns/{campaign_id}/pause", response_model=CampaignOut)
def pause_campaign(
    campaign_id: int, ctx: RequestContext = require_existing("campaigns.send", campaign_id=_campaign)
) -> CampaignOut:
    """Stop a sending campaign after the messages on the wire (409 when it is not sending)."""
    return campaign_out(ctx.session, campaigns.pause_campaign(ctx.session, campaign_id=campaign_id))


@router.post("/campaigns/{campaign_id}/resume", response_model=CampaignOut)
def resume_campaign(
    campaign_id: int, ctx: RequestContext = require_existing("campaigns.send", campaign_id=_campaign)
) -> CampaignOut:
    """Carry on a paused campaign where it stopped (409 when it is not paused)."""
    return campaign_out(ctx.session, campaigns.resume_campaign(ctx.session, campaign_id=campaign_id))


@router.post("/campaigns/{campaign_id}/cancel", response_model=CampaignOut)
def cancel_campaign(
    campaign_id: int, ctx: RequestContext = require_existing("campaigns.send", campaign_id=_campaign)
) -> CampaignOut:
    """Cancel a campaign that has not finished: what was sent stays sent, the rest never goes (409 if finished)."""
    return campaign_out(ctx.session, campaigns.cancel_campaign(ctx.session, campaign_id=campaign_id))


@router.get("/campaigns/{campaign_id}/progress", response_model=ProgressOut)
def campaign_progress(campaign_id: int, ctx: RequestContext = require("campaigns.read")) -> ProgressOut:
    """Live figures: sent, pending, refused by reason, failed by reason."""
    return progress_out(campaigns.progress(ctx.session, campaign_id=campaign_id))


# --- sending domains --------------------------------------------------------------------------


@router.get("/sending-domains", response_model=list[SendingDomainOut])
def list_sending_domains(ctx: RequestContext = require("campaigns.read")) -> list[SendingDomainOut]:
    """The domains this workspace sends from, each with the DNS record of its DKIM key."""
    return [domain_out(d) for d in domains.list_sending_domains(ctx.session)]


@router.post("/sending-domains", response_model=SendingDomainOut, status_code=201)
def add_sending_domain(body: SendingDomainCreate, ctx: RequestContext = require("domains.manage")) -> SendingDomainOut:
    """Set up a domain: a new DKIM key, and the TXT record to publish before sending from it."""
    record = domains.add_sending_domain(ctx.session, domain=body.domain, secret=ctx.settings.resolved_secret_key())
    return domain_out(record)


@router.get("/sending-domains/{domain_id}", response_model=SendingDomainOut)
def get_sending_domain(domain_id: int, ctx: RequestContext = require("campaigns.read")) -> SendingDomainOut:
    """One sending domain with its DNS record."""
    return domain_out(domains.get_sending_domain(ctx.session, domain_id=domain_id))


# --- sending settings -------------------------------------------------------------------------


@router.get("/sending-settings", response_model=SendingSettingsOut)
def get_sending_settings(ctx: RequestContext = require("sending.settings")) -> SendingSettingsOut:
    """The soft opt-in switch (off by default) and the sending rate cap."""
    return SendingSettingsOut(**settings_service.sending_settings(ctx.workspace_required).as_json())


@router.put("/sending-settings", response_model=SendingSettingsOut)
def put_sending_settings(
    body: SendingSettingsIn, ctx: RequestContext = require("sending.settings")
) -> SendingSettingsOut:
    """Replace the sending settings (the owner's decision; audited with before and after)."""
    stored = settings_service.update_sending_settings(
        ctx.session,
        workspace=ctx.workspace_required,
        soft_opt_in=body.soft_opt_in,
        rate_per_second=body.rate_per_second,
    )
    return SendingSettingsOut(**stored.as_json())
