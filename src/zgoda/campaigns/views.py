"""HTML pages: templates (editor, preview), campaigns (new, audience preview, send/schedule/pause/resume/cancel,
live progress), sending domains (the DNS record to publish) and the owner's sending settings."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from zgoda.audiences import service as audiences
from zgoda.audiences.schemas import EXCLUSION_LABELS
from zgoda.audiences.views import preview_context
from zgoda.campaigns import domains, settings_service
from zgoda.campaigns import service as campaigns
from zgoda.campaigns.api import domain_out
from zgoda.campaigns.models import Campaign, CampaignKind, CampaignStatus
from zgoda.campaigns.schemas import TemplateCreate
from zgoda.consent import purposes
from zgoda.consent.models import Channel
from zgoda.core.clock import utcnow
from zgoda.core.errors import InvalidInput, ZgodaError
from zgoda.web.context import RequestContext, is_row_id, require
from zgoda.web.forms import blank_to_none, error_message, int_or_none, local_moment
from zgoda.web.templating import render

router = APIRouter(include_in_schema=False)

FormLine = Annotated[str, Form(max_length=500)]
FormBody = Annotated[str, Form(max_length=500_000)]

# What the campaign page says after an action (the redirect carries the key, never free text).
DONE_MESSAGES = {
    "created": "Campaign created. Check the audience, then send or schedule it.",
    "started": "Sending has started.",
    "scheduled": "The campaign is scheduled.",
    "already_sending": "This campaign is already sending; nothing was changed.",
    "already_sent": "This campaign was already sent; nothing was changed.",
    "paused": "Sending is paused. Resume carries on where it stopped.",
    "resumed": "Sending resumed.",
    "cancelled": "The campaign is cancelled: what was sent stays sent, the rest is never sent.",
}
POLLED = (CampaignStatus.SENDING,)


def _failed(ctx: RequestContext, error: ValidationError | ZgodaError) -> str:
    """Undo what the request wrote so far and give the message to show."""
    ctx.session.rollback()
    return error_message(error)


def field_errors(error: ValidationError | ZgodaError) -> dict[str, str]:
    """Each refused field with its message, to show next to the field."""
    if isinstance(error, ValidationError):
        return {str(item["loc"][0]) if item["loc"] else "form": str(item["msg"]) for item in error.errors()}
    return {(error.field or "form").split(".")[0]: error.detail}


# --- templates --------------------------------------------------------------------------------


def _templates_page(request: Request, ctx: RequestContext, *, status_code: int = 200, **extra: Any) -> Response:
    extra.setdefault("values", {})
    extra.setdefault("errors", {})
    return render(
        request,
        "campaigns/templates.html",
        ctx,
        status_code=status_code,
        templates=campaigns.list_templates(ctx.session),
        merge_fields=campaigns.merge_fields(ctx.session),
        **extra,
    )


@router.get("/w/{slug}/templates", response_class=HTMLResponse)
def templates_page(request: Request, slug: str, ctx: RequestContext = require("campaigns.read")) -> Response:
    """Every template, and the form for a new one."""
    return _templates_page(request, ctx)


@router.post("/w/{slug}/templates", response_class=HTMLResponse)
def templates_create(
    request: Request,
    slug: str,
    name: FormLine = "",
    subject: FormLine = "",
    html: FormBody = "",
    text: FormBody = "",
    ctx: RequestContext = require("campaigns.manage"),
) -> Response:
    """Create a template; a compile error is shown next to the part it is in."""
    values = {"name": name, "subject": subject, "html": html, "text": text}
    try:
        body = TemplateCreate.model_validate({**values, "text": blank_to_none(text)})
        template = campaigns.create_template(
            ctx.session, name=body.name, subject=body.subject, html=body.html, text=body.text
        )
    except (ValidationError, ZgodaError) as error:
        errors = field_errors(error)
        return _templates_page(request, ctx, status_code=422, error=_failed(ctx, error), errors=errors, values=values)
    return RedirectResponse(f"/w/{slug}/templates/{template.id}", status_code=303)


def _template_page(
    request: Request,
    ctx: RequestContext,
    template_id: int,
    *,
    contact_id: int | None = None,
    status_code: int = 200,
    **extra: Any,
) -> Response:
    template = campaigns.get_template(ctx.session, template_id=template_id)
    extra.setdefault("values", {"subject": template.subject, "html": template.html, "text": template.text or ""})
    extra.setdefault("errors", {})
    preview: dict[str, str] | None = None
    preview_error = None
    try:
        preview = campaigns.preview_template(ctx.session, template_id=template.id, contact_id=contact_id)
    except InvalidInput as error:
        preview_error = error_message(error)
    return render(
        request,
        "campaigns/template.html",
        ctx,
        status_code=status_code,
        template=template,
        preview=preview,
        preview_error=preview_error,
        contact_id=contact_id,
        merge_fields=campaigns.merge_fields(ctx.session),
        **extra,
    )


@router.get("/w/{slug}/templates/{template_id}", response_class=HTMLResponse)
def template_page(
    request: Request,
    slug: str,
    template_id: int,
    ctx: RequestContext = require("campaigns.read"),
    contact_id: Annotated[str, Query(max_length=20)] = "",
) -> Response:
    """A template's editor, and its preview for a chosen contact (sample values without one)."""
    chosen = int(contact_id) if is_row_id(contact_id.strip()) else None
    return _template_page(request, ctx, template_id, contact_id=chosen)


@router.post("/w/{slug}/templates/{template_id}", response_class=HTMLResponse)
def template_update(
    request: Request,
    slug: str,
    template_id: int,
    subject: FormLine = "",
    html: FormBody = "",
    text: FormBody = "",
    ctx: RequestContext = require("campaigns.manage"),
) -> Response:
    """Save a template's subject, html and text (blank text: derived from the html)."""
    campaigns.get_template(ctx.session, template_id=template_id)
    values = {"subject": subject, "html": html, "text": text}
    try:
        campaigns.update_template(ctx.session, template_id=template_id, subject=subject, html=html, text=text)
    except ZgodaError as error:
        errors = field_errors(error)
        message = _failed(ctx, error)
        return _template_page(request, ctx, template_id, status_code=422, error=message, errors=errors, values=values)
    return RedirectResponse(f"/w/{slug}/templates/{template_id}?saved=1", status_code=303)


# --- campaigns --------------------------------------------------------------------------------


def _email_purposes(ctx: RequestContext) -> list[Any]:
    return [p for p in purposes.list_purposes(ctx.session) if p.channel == Channel.EMAIL]


@router.get("/w/{slug}/campaigns", response_class=HTMLResponse)
def campaigns_page(request: Request, slug: str, ctx: RequestContext = require("campaigns.read")) -> Response:
    """Every campaign with its status, and the way to templates, sending domains and settings."""
    listed = campaigns.list_campaigns(ctx.session)
    figures = {c.id: campaigns.progress(ctx.session, campaign_id=c.id) for c in listed}
    return render(request, "campaigns/campaigns.html", ctx, campaigns=listed, figures=figures)


def _new_page(request: Request, ctx: RequestContext, *, status_code: int = 200, **extra: Any) -> Response:
    extra.setdefault("values", {"language": ctx.workspace_required.locale})
    extra.setdefault("errors", {})
    return render(
        request,
        "campaigns/new.html",
        ctx,
        status_code=status_code,
        purposes=_email_purposes(ctx),
        lists=audiences.list_lists(ctx.session),
        segments=audiences.list_segments(ctx.session),
        templates=campaigns.list_templates(ctx.session),
        domains=domains.list_sending_domains(ctx.session),
        languages=campaigns.LANGUAGES,
        **extra,
    )


@router.get("/w/{slug}/campaigns/new", response_class=HTMLResponse)
def campaign_new(request: Request, slug: str, ctx: RequestContext = require("campaigns.manage")) -> Response:
    """The form for a new campaign."""
    return _new_page(request, ctx)


def _audience(value: str) -> tuple[int | None, int | None]:
    """``list:3`` or ``segment:5`` from the audience select: (list_id, segment_id)."""
    kind, _, number = value.partition(":")
    if kind not in ("list", "segment") or not is_row_id(number):
        raise InvalidInput("Choose a list or a segment.", field="list_id")
    return (int(number), None) if kind == "list" else (None, int(number))


@router.post("/w/{slug}/campaigns", response_class=HTMLResponse)
def campaign_create(
    request: Request,
    slug: str,
    name: FormLine = "",
    purpose: FormLine = "",
    audience: FormLine = "",
    template_id: FormLine = "",
    from_name: FormLine = "",
    from_email: FormLine = "",
    reply_to: FormLine = "",
    language: FormLine = "",
    kind: FormLine = "marketing",
    ctx: RequestContext = require("campaigns.manage"),
) -> Response:
    """Create a draft campaign; errors re-render the form naming the field."""
    values = {
        "name": name,
        "purpose": purpose,
        "audience": audience,
        "template_id": template_id,
        "from_name": from_name,
        "from_email": from_email,
        "reply_to": reply_to,
        "language": language,
        "kind": kind,
    }
    try:
        list_id, segment_id = _audience(audience)
        chosen_template = int_or_none(template_id, field="template_id")
        if chosen_template is None:
            raise InvalidInput("Choose a template.", field="template_id")
        campaign = campaigns.create_campaign(
            ctx.session,
            name=name,
            purpose_key=purpose,
            template_id=chosen_template,
            from_name=from_name,
            from_email=from_email,
            list_id=list_id,
            segment_id=segment_id,
            reply_to=blank_to_none(reply_to),
            language=blank_to_none(language),
            kind=kind or "marketing",
        )
    except ZgodaError as error:  # NotFound included: a stale choice in the form is a form error here
        errors = field_errors(error)
        return _new_page(request, ctx, status_code=422, error=_failed(ctx, error), errors=errors, values=values)
    return RedirectResponse(f"/w/{slug}/campaigns/{campaign.id}?done=created", status_code=303)


def local_input_value(moment: datetime | None, time_zone: str) -> str:
    """A moment as a ``datetime-local`` value in the workspace's time zone."""
    if moment is None:
        return ""
    return moment.astimezone(ZoneInfo(time_zone)).strftime("%Y-%m-%dT%H:%M")


def _campaign_page(
    request: Request, ctx: RequestContext, campaign_id: int, *, status_code: int = 200, **extra: Any
) -> Response:
    campaign = campaigns.get_campaign(ctx.session, campaign_id=campaign_id)
    purpose = purposes.get_purpose(ctx.session, purpose_id=campaign.purpose_id)
    time_zone = ctx.workspace_required.time_zone
    audience_name = (
        audiences.get_list(ctx.session, list_id=campaign.list_id).name
        if campaign.list_id is not None
        else audiences.get_segment(ctx.session, segment_id=campaign.segment_id or 0).name
    )
    preview: dict[str, Any] = {"exclusion_labels": EXCLUSION_LABELS}
    if campaign.status in (CampaignStatus.DRAFT, CampaignStatus.SCHEDULED):
        preview = preview_context(
            ctx,
            purpose=purpose.key,
            list_id=campaign.list_id,
            segment_id=campaign.segment_id,
            consent_request=campaign.kind == CampaignKind.CONSENT_REQUEST,
        )
    done = request.query_params.get("done", "")
    extra.setdefault("values", {})
    return render(
        request,
        "campaigns/campaign.html",
        ctx,
        status_code=status_code,
        campaign=campaign,
        purpose=purpose,
        audience_name=audience_name,
        template=campaigns.get_template(ctx.session, template_id=campaign.template_id),
        figures=campaigns.progress(ctx.session, campaign_id=campaign.id),
        polled=campaign.status in POLLED,
        time_zone=time_zone,
        scheduled_local=local_input_value(campaign.scheduled_at, time_zone),
        min_local=local_input_value(utcnow(), time_zone),
        done_message=DONE_MESSAGES.get(done),
        **preview,
        **extra,
    )


@router.get("/w/{slug}/campaigns/{campaign_id}", response_class=HTMLResponse)
def campaign_page(
    request: Request, slug: str, campaign_id: int, ctx: RequestContext = require("campaigns.read")
) -> Response:
    """A campaign: who it would reach (before sending), the actions its status allows, and live progress."""
    return _campaign_page(request, ctx, campaign_id)


@router.get("/w/{slug}/campaigns/{campaign_id}/progress", response_class=HTMLResponse)
def campaign_progress(
    request: Request, slug: str, campaign_id: int, ctx: RequestContext = require("campaigns.read")
) -> Response:
    """The progress figures (an htmx fragment that polls itself every 2 s while the campaign is sending)."""
    campaign: Campaign = campaigns.get_campaign(ctx.session, campaign_id=campaign_id)
    return render(
        request,
        "campaigns/progress.html",
        ctx,
        campaign=campaign,
        figures=campaigns.progress(ctx.session, campaign_id=campaign.id),
        polled=campaign.status in POLLED,
        exclusion_labels=EXCLUSION_LABELS,
    )


@router.post("/w/{slug}/campaigns/{campaign_id}/send", response_class=HTMLResponse)
def campaign_send(
    request: Request,
    slug: str,
    campaign_id: int,
    scheduled_at: FormLine = "",
    ctx: RequestContext = require("campaigns.send"),
) -> Response:
    """Send now, or schedule (``datetime-local`` in the workspace's time zone); a second send changes nothing."""
    campaigns.get_campaign(ctx.session, campaign_id=campaign_id)
    try:
        at = local_moment(scheduled_at, time_zone=ctx.workspace_required.time_zone, field="scheduled_at")
        result = campaigns.send_campaign(ctx.session, campaign_id=campaign_id, at=at)
    except ZgodaError as error:
        message = _failed(ctx, error)
        values = {"scheduled_at": scheduled_at}
        return _campaign_page(request, ctx, campaign_id, status_code=422, error=message, values=values)
    return RedirectResponse(f"/w/{slug}/campaigns/{campaign_id}?done={result.action}", status_code=303)


def _state_change(request: Request, ctx: RequestContext, slug: str, campaign_id: int, action: str) -> Response:
    campaigns.get_campaign(ctx.session, campaign_id=campaign_id)
    change = {
        "paused": campaigns.pause_campaign,
        "resumed": campaigns.resume_campaign,
        "cancelled": campaigns.cancel_campaign,
    }[action]
    try:
        change(ctx.session, campaign_id=campaign_id)
    except ZgodaError as error:
        message = _failed(ctx, error)
        return _campaign_page(
            request, ctx, campaign_id, status_code=409 if error.field == "status" else 422, error=message
        )
    return RedirectResponse(f"/w/{slug}/campaigns/{campaign_id}?done={action}", status_code=303)


@router.post("/w/{slug}/campaigns/{campaign_id}/pause", response_class=HTMLResponse)
def campaign_pause(
    request: Request, slug: str, campaign_id: int, ctx: RequestContext = require("campaigns.send")
) -> Response:
    """Pause a sending campaign."""
    return _state_change(request, ctx, slug, campaign_id, "paused")


@router.post("/w/{slug}/campaigns/{campaign_id}/resume", response_class=HTMLResponse)
def campaign_resume(
    request: Request, slug: str, campaign_id: int, ctx: RequestContext = require("campaigns.send")
) -> Response:
    """Resume a paused campaign."""
    return _state_change(request, ctx, slug, campaign_id, "resumed")


@router.post("/w/{slug}/campaigns/{campaign_id}/cancel", response_class=HTMLResponse)
def campaign_cancel(
    request: Request, slug: str, campaign_id: int, ctx: RequestContext = require("campaigns.send")
) -> Response:
    """Cancel a campaign that has not finished."""
    return _state_change(request, ctx, slug, campaign_id, "cancelled")


# --- sending domains and settings -------------------------------------------------------------


def _domains_page(request: Request, ctx: RequestContext, *, status_code: int = 200, **extra: Any) -> Response:
    extra.setdefault("values", {})
    return render(
        request,
        "campaigns/domains.html",
        ctx,
        status_code=status_code,
        domains=[domain_out(d) for d in domains.list_sending_domains(ctx.session)],
        **extra,
    )


@router.get("/w/{slug}/sending-domains", response_class=HTMLResponse)
def domains_page(request: Request, slug: str, ctx: RequestContext = require("campaigns.read")) -> Response:
    """The domains this workspace sends from, with the DKIM record to publish for each."""
    return _domains_page(request, ctx)


@router.post("/w/{slug}/sending-domains", response_class=HTMLResponse)
def domains_create(
    request: Request, slug: str, domain: FormLine = "", ctx: RequestContext = require("domains.manage")
) -> Response:
    """Set up a sending domain: a new DKIM key; the page then shows the record to publish."""
    try:
        record = domains.add_sending_domain(ctx.session, domain=domain, secret=ctx.settings.resolved_secret_key())
    except ZgodaError as error:
        return _domains_page(request, ctx, status_code=422, error=_failed(ctx, error), values={"domain": domain})
    return RedirectResponse(f"/w/{slug}/sending-domains#domain-{record.id}", status_code=303)


def _settings_page(request: Request, ctx: RequestContext, *, status_code: int = 200, **extra: Any) -> Response:
    current = settings_service.sending_settings(ctx.workspace_required)
    extra.setdefault("values", {"soft_opt_in": current.soft_opt_in, "rate_per_second": current.rate_per_second or ""})
    return render(
        request,
        "campaigns/sending_settings.html",
        ctx,
        status_code=status_code,
        current=current,
        max_rate=settings_service.MAX_RATE_PER_SECOND,
        **extra,
    )


@router.get("/w/{slug}/sending-settings", response_class=HTMLResponse)
def sending_settings_page(request: Request, slug: str, ctx: RequestContext = require("sending.settings")) -> Response:
    """The owner's sending decisions: the soft opt-in switch and the sending rate."""
    return _settings_page(request, ctx)


@router.post("/w/{slug}/sending-settings", response_class=HTMLResponse)
def sending_settings_save(
    request: Request,
    slug: str,
    soft_opt_in: FormLine = "",
    rate_per_second: FormLine = "",
    ctx: RequestContext = require("sending.settings"),
) -> Response:
    """Save the sending settings (audited)."""
    values = {"soft_opt_in": bool(soft_opt_in), "rate_per_second": rate_per_second}
    try:
        settings_service.update_sending_settings(
            ctx.session,
            workspace=ctx.workspace_required,
            soft_opt_in=bool(soft_opt_in),
            rate_per_second=int_or_none(rate_per_second, field="rate_per_second"),
        )
    except ZgodaError as error:
        return _settings_page(request, ctx, status_code=422, error=_failed(ctx, error), values=values)
    return RedirectResponse(f"/w/{slug}/sending-settings?saved=1", status_code=303)
