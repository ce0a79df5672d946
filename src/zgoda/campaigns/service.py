"""Templates and campaigns: create, check, schedule, send, pause, resume, cancel, and progress.

Sending itself (the gate, rendering, SMTP) is :mod:`zgoda.campaigns.sending`; this module decides
what may start and records every decision in the audit log.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session

from zgoda.accounts import service as accounts
from zgoda.accounts.models import Workspace
from zgoda.audiences import service as audiences
from zgoda.audit import service as audit
from zgoda.campaigns.models import Campaign, CampaignKind, CampaignStatus, Send, SendStatus, Template
from zgoda.campaigns.rendering import CompiledTemplate, compile_template
from zgoda.consent import purposes
from zgoda.consent.models import Channel, Notice, Purpose
from zgoda.contacts.models import Contact
from zgoda.core.clock import as_utc, utcnow
from zgoda.core.errors import Conflict, InvalidInput, NotFound
from zgoda.core.tenancy import current_actor, current_workspace_id, get_scoped

CORE_FIELDS = ("email", "phone", "first_name", "last_name")
LANGUAGES = ("pl", "en")
ACTIVE = (CampaignStatus.SENDING, CampaignStatus.PAUSED)


def _check_name(name: str, what: str) -> str:
    name = name.strip()
    if not name or len(name) > 120:
        raise InvalidInput(f"A {what} name is 1-120 characters.", field="name")
    return name


def known_attribute_keys(session: Session) -> set[str]:
    """Every attribute key some contact of the workspace has (merge fields a template may use)."""
    workspace_id = current_workspace_id(session)
    if session.get_bind().dialect.name == "sqlite":
        statement = text(
            "SELECT DISTINCT j.key FROM contacts, json_each(contacts.attributes) AS j WHERE contacts.workspace_id = :w"
        )
    else:
        statement = text(
            "SELECT DISTINCT json_object_keys(attributes) FROM contacts "
            "WHERE workspace_id = :w AND json_typeof(attributes) = 'object'"
        )
    return {str(key) for key in session.scalars(statement, {"w": workspace_id})}


def merge_fields(session: Session) -> list[str]:
    """The merge fields of this workspace: the contact's own fields, then its attribute keys."""
    return [*CORE_FIELDS, *sorted(known_attribute_keys(session) - set(CORE_FIELDS))]


def _compile(
    session: Session, *, subject: str, html: str, text_part: str | None, fields: Sequence[str] | None = None
) -> CompiledTemplate:
    allowed = merge_fields(session) if fields is None else fields
    return compile_template(subject=subject, html=html, text=text_part, allowed_fields=allowed)


# --- templates ----------------------------------------------------------------------------------


def create_template(session: Session, *, name: str, subject: str, html: str, text: str | None = None) -> Template:
    """A template, compiled now so a broken one is never saved (the error names the part and line)."""
    name = _check_name(name, "template")
    if session.scalar(select(Template.id).where(Template.name == name)) is not None:
        raise Conflict(f"A template named '{name}' already exists.", field="name")
    _compile(session, subject=subject, html=html, text_part=text or None)
    template = Template(
        name=name, subject=subject, html=html, text=text or None, created_by=current_actor(session).label
    )
    session.add(template)
    session.flush()
    audit.record(
        session, action="template.create", object_type="template", object_id=template.id, summary={"name": name}
    )
    return template


def update_template(
    session: Session,
    *,
    template_id: int,
    subject: str | None = None,
    html: str | None = None,
    text: str | None = None,
) -> Template:
    """Change a template; campaigns already sending keep the copy they started with."""
    template = get_template(session, template_id=template_id)
    new_subject = template.subject if subject is None else subject
    new_html = template.html if html is None else html
    new_text = template.text if text is None else (text or None)
    _compile(session, subject=new_subject, html=new_html, text_part=new_text)
    changed = [
        name
        for name, old, new in (
            ("subject", template.subject, new_subject),
            ("html", template.html, new_html),
            ("text", template.text, new_text),
        )
        if old != new
    ]
    template.subject, template.html, template.text = new_subject, new_html, new_text
    template.updated_at = utcnow()
    audit.record(
        session, action="template.update", object_type="template", object_id=template.id, summary={"changed": changed}
    )
    return template


def get_template(session: Session, *, template_id: int, field: str = "template_id") -> Template:
    template = get_scoped(session, Template, template_id)
    if template is None:
        raise NotFound(f"There is no template {template_id} in this workspace.", field=field)
    return template


def template_by_name(session: Session, name: str, *, field: str = "template") -> Template:
    template = session.scalar(select(Template).where(Template.name == name))
    if template is None:
        raise InvalidInput(f"There is no template named '{name}' in this workspace.", field=field)
    return template


def list_templates(session: Session) -> Sequence[Template]:
    return session.scalars(select(Template).order_by(Template.name)).all()


def contact_merge_values(contact: Contact) -> dict[str, Any]:
    """What a template sees of a contact: its own fields and its attributes (own fields win a clash)."""
    return merge_values(
        attributes=contact.attributes,
        email=contact.email,
        phone=contact.phone,
        first_name=contact.first_name,
        last_name=contact.last_name,
    )


def merge_values(
    *,
    attributes: dict[str, Any] | None,
    email: str | None,
    phone: str | None,
    first_name: str | None,
    last_name: str | None,
) -> dict[str, Any]:
    """``contact_merge_values`` from a contact's columns (the sender reads them without loading objects)."""
    values: dict[str, Any] = {key: value for key, value in (attributes or {}).items() if isinstance(key, str)}
    values.update(email=email, phone=phone, first_name=first_name, last_name=last_name)
    return values


def preview_template(
    session: Session, *, template_id: int, contact_id: int | None = None, campaign_name: str = "Preview"
) -> dict[str, str]:
    """The template rendered for one contact (or sample values), without the footer: for the editor."""
    template = get_template(session, template_id=template_id)
    compiled = _compile(session, subject=template.subject, html=template.html, text_part=template.text)
    if contact_id is not None:
        contact = get_scoped(session, Contact, contact_id)
        if contact is None:
            raise InvalidInput(f"There is no contact {contact_id} in this workspace.", field="contact_id")
        values = contact_merge_values(contact)
    else:
        values = {"email": "jan.kowalski@example.com", "first_name": "Jan", "last_name": "Kowalski", "phone": None}
    workspace = session.get(Workspace, current_workspace_id(session))
    assert workspace is not None
    parts = compiled.render(contact=values, workspace_name=workspace.name, campaign_name=campaign_name)
    return {"subject": parts.subject, "html": parts.html, "text": parts.text}


# --- campaigns ----------------------------------------------------------------------------------


def _check_address(value: str, field_name: str) -> str:
    try:
        return validate_email(value.strip(), check_deliverability=False).normalized
    except EmailNotValidError as error:
        raise InvalidInput(f"Not a valid email address: {error}", field=field_name) from error


def _email_purpose(session: Session, key: str) -> Purpose:
    purpose = purposes.purpose_by_key(session, key, field="purpose")
    if purpose.channel != Channel.EMAIL:
        raise InvalidInput(f"Purpose '{key}' is for the {purpose.channel} channel, not email.", field="purpose")
    return purpose


def create_campaign(
    session: Session,
    *,
    name: str,
    purpose_key: str,
    template_id: int,
    from_name: str,
    from_email: str,
    list_id: int | None = None,
    segment_id: int | None = None,
    reply_to: str | None = None,
    language: str | None = None,
    kind: str = CampaignKind.MARKETING,
) -> Campaign:
    """A draft campaign to a list or a segment, for one email purpose.

    A ``consent_request`` campaign asks for that purpose's consent (double opt-in, re-permission,
    refresh): it needs the purpose's notice in the campaign's language, which every message shows.
    """
    name = _check_name(name, "campaign")
    if session.scalar(select(Campaign.id).where(Campaign.name == name)) is not None:
        raise Conflict(f"A campaign named '{name}' already exists.", field="name")
    if (list_id is None) == (segment_id is None):
        raise InvalidInput("A campaign goes to exactly one list or one segment.", field="list_id")
    if list_id is not None:
        audiences.get_list(session, list_id=list_id, field="list_id")
    if segment_id is not None:
        audiences.get_segment(session, segment_id=segment_id, field="segment_id")
    purpose = _email_purpose(session, purpose_key)
    get_template(session, template_id=template_id)
    workspace = session.get(Workspace, current_workspace_id(session))
    assert workspace is not None
    language = (language or workspace.locale or "pl").lower()
    if language not in LANGUAGES:
        raise InvalidInput(f"The footer language is one of {', '.join(LANGUAGES)}.", field="language")
    if not from_name.strip() or len(from_name) > 200:
        raise InvalidInput("A sender name is 1-200 characters.", field="from_name")
    if kind not in set(CampaignKind):
        raise InvalidInput(f"A campaign's kind is one of {', '.join(CampaignKind)}, not {kind!r}.", field="kind")
    if kind == CampaignKind.CONSENT_REQUEST:
        consent_request_notice(session, purpose, language)
    campaign = Campaign(
        name=name,
        kind=str(kind),
        purpose_id=purpose.id,
        list_id=list_id,
        segment_id=segment_id,
        template_id=template_id,
        from_name=from_name.strip(),
        from_email=_check_address(from_email, "from_email"),
        reply_to=_check_address(reply_to, "reply_to") if reply_to else None,
        language=language,
        created_by=current_actor(session).label,
    )
    session.add(campaign)
    session.flush()
    audit.record(
        session,
        action="campaign.create",
        object_type="campaign",
        object_id=campaign.id,
        summary={"name": name, "kind": str(kind), "purpose": purpose.key, "list_id": list_id, "segment_id": segment_id},
    )
    return campaign


def consent_request_notice(session: Session, purpose: Purpose, language: str) -> Notice:
    """The notice a consent request shows and records (the purpose's newest in ``language``), or a clear error."""
    notice = purposes.current_notice(session, purpose_id=purpose.id, language=language)
    if notice is None:
        raise InvalidInput(
            f"A consent request shows the exact text it asks consent to, and purpose '{purpose.key}' has no notice "
            f"in '{language}'. Add one to the purpose first.",
            field="purpose",
        )
    return notice


def get_campaign(session: Session, *, campaign_id: int, field: str = "campaign_id") -> Campaign:
    campaign = get_scoped(session, Campaign, campaign_id)
    if campaign is None:
        raise NotFound(f"There is no campaign {campaign_id} in this workspace.", field=field)
    return campaign


def campaign_by_name(session: Session, name: str, *, field: str = "campaign") -> Campaign:
    campaign = session.scalar(select(Campaign).where(Campaign.name == name))
    if campaign is None:
        raise NotFound(f"There is no campaign named '{name}' in this workspace.", field=field)
    return campaign


def list_campaigns(session: Session) -> Sequence[Campaign]:
    return session.scalars(select(Campaign).order_by(Campaign.created_at.desc(), Campaign.id.desc())).all()


def sender_identity(workspace: Workspace) -> tuple[str, str]:
    """The controller's legal name and one-line postal address, which every footer carries."""
    controller = accounts.controller_of(workspace) or {}
    address = controller.get("postal_address") or {}
    parts = [address.get("street"), f"{address.get('postal_code') or ''} {address.get('city') or ''}".strip()]
    parts.append(address.get("country"))
    line = ", ".join(str(part) for part in parts if part)
    return str(controller.get("legal_name") or ""), line


def check_sendable(session: Session, campaign: Campaign, *, fields: Sequence[str] | None = None) -> CompiledTemplate:
    """Everything a campaign needs before its first message, or an error naming what is missing.

    ``fields`` are the workspace's merge fields when the caller already has them (finding them scans
    every contact's attributes).
    """
    _check_workspace_may_send(session, campaign)
    if campaign.kind == CampaignKind.CONSENT_REQUEST:
        purpose = session.get(Purpose, campaign.purpose_id)
        assert purpose is not None
        consent_request_notice(session, purpose, campaign.language)
    template = get_template(session, template_id=campaign.template_id)
    try:
        return _compile(session, subject=template.subject, html=template.html, text_part=template.text, fields=fields)
    except InvalidInput as error:
        raise InvalidInput(
            f"The template '{template.name}' cannot be sent: {error.detail}", field=f"template.{error.field}"
        ) from error


def _check_workspace_may_send(session: Session, campaign: Campaign) -> None:
    """The sender's identity is set and the platform has not suspended the workspace's sending."""
    workspace = session.get(Workspace, campaign.workspace_id)
    assert workspace is not None
    legal_name, address = sender_identity(workspace)
    if not legal_name or not address:
        raise InvalidInput(
            "Set the sender's identity and postal address (workspace settings → data controller) before sending: "
            "every message's footer carries them.",
            field="controller",
        )
    if workspace.sending_suspended_at is not None:
        raise Conflict(
            f"This workspace may not send: {workspace.sending_suspended_reason or 'suspended by the platform'}.",
            field="workspace",
        )


@dataclass
class SendRequest:
    """What ``send_campaign`` did: started, scheduled, or nothing (and why)."""

    campaign: Campaign
    action: str  # "started", "scheduled", "already_sending", "already_sent", "resumed"
    message: str
    extra: dict[str, Any] = field(default_factory=dict)


def send_campaign(session: Session, *, campaign_id: int, at: datetime | None = None) -> SendRequest:
    """Start a campaign now, or schedule it for ``at``; a second call on a started campaign changes nothing."""
    campaign = get_campaign(session, campaign_id=campaign_id)
    if campaign.status in (CampaignStatus.SENDING, CampaignStatus.PAUSED):
        return SendRequest(campaign, "already_sending", f"Campaign '{campaign.name}' is already {campaign.status}.")
    if campaign.status == CampaignStatus.SENT:
        return SendRequest(campaign, "already_sent", f"Campaign '{campaign.name}' was already sent; nothing to do.")
    if campaign.status == CampaignStatus.CANCELLED:
        raise Conflict(f"Campaign '{campaign.name}' was cancelled; create a new one.", field="status")
    now = utcnow()
    if at is not None:
        check_sendable(session, campaign)
        if at.tzinfo is None:
            workspace = session.get(Workspace, campaign.workspace_id)
            assert workspace is not None
            at = at.replace(tzinfo=ZoneInfo(workspace.time_zone))
        as_utc(at, "scheduled_at")
        if at <= now:
            raise InvalidInput("The time to send is in the past.", field="scheduled_at")
        campaign.status = CampaignStatus.SCHEDULED
        campaign.scheduled_at = at
        campaign.updated_at = now
        audit.record(
            session,
            action="campaign.schedule",
            object_type="campaign",
            object_id=campaign.id,
            summary={"scheduled_at": at.isoformat()},
        )
        _enqueue_dispatch(session, at)
        return SendRequest(campaign, "scheduled", f"Campaign '{campaign.name}' will start at {at.isoformat()}.")
    start_campaign(session, campaign)
    return SendRequest(campaign, "started", f"Campaign '{campaign.name}' is sending.")


def start_campaign(session: Session, campaign: Campaign) -> None:
    """Freeze the template into the campaign, mark it sending, and queue its preparation task."""
    fields = merge_fields(session)
    check_sendable(session, campaign, fields=fields)
    template = get_template(session, template_id=campaign.template_id)
    now = utcnow()
    content: dict[str, Any] = {
        "template_id": template.id,
        "template_name": template.name,
        "subject": template.subject,
        "html": template.html,
        "text": template.text,
        "merge_fields": fields,
    }
    if campaign.kind == CampaignKind.CONSENT_REQUEST:  # the text every message shows and every answer records
        purpose = session.get(Purpose, campaign.purpose_id)
        assert purpose is not None
        notice = consent_request_notice(session, purpose, campaign.language)
        content["notice_id"] = notice.id
        if notice.first_used_at is None:  # shown to people from now on: immutable, like a notice a consent cites
            notice.first_used_at = now
    campaign.content = content
    campaign.status = CampaignStatus.SENDING
    campaign.started_at = now
    campaign.updated_at = now
    audit.record(session, action="campaign.start", object_type="campaign", object_id=campaign.id, summary={})
    from zgoda.campaigns import tasks
    from zgoda.core.tasks import enqueue_after_commit

    enqueue_after_commit(session, tasks.prepare_campaign, campaign.id)


def _enqueue_dispatch(session: Session, at: datetime) -> None:
    from zgoda.campaigns import tasks
    from zgoda.core.tasks import enqueue_after_commit

    delay = max(0.0, (at - utcnow()).total_seconds())
    enqueue_after_commit(session, tasks.dispatch_due_campaigns, countdown=delay + 1)


def sweep_cancelled_sends(session: Session) -> int:
    """Cancel the sends a dead worker left ``sending`` in a cancelled campaign (across workspaces); how many.

    A live worker gives its sends back itself when it finds the campaign cancelled; a worker killed
    meanwhile cannot, so once its lease has run out nobody else would ever touch them.
    """
    from zgoda.core.tenancy import unscoped

    now = utcnow()
    cancelled = select(Campaign.id).where(Campaign.status == CampaignStatus.CANCELLED)
    with unscoped(session):
        result = session.execute(
            update(Send)
            .where(Send.status == SendStatus.SENDING, Send.claimed_until < now, Send.campaign_id.in_(cancelled))
            .values(status=SendStatus.CANCELLED, claimed_by=None, claimed_until=None, decided_at=now),
            execution_options={"synchronize_session": False},
        )
    return int(getattr(result, "rowcount", 0) or 0)


def start_due_campaigns(session: Session) -> list[int]:
    """Start every scheduled campaign whose time has come (across workspaces); their ids."""
    from zgoda.core.tenancy import unscoped

    now = utcnow()
    with unscoped(session):
        due = session.scalars(
            select(Campaign)
            .where(Campaign.status == CampaignStatus.SCHEDULED, Campaign.scheduled_at <= now)
            .with_for_update(skip_locked=True)
        ).all()
    started = []
    for campaign in due:
        try:
            start_campaign(session, campaign)
        except (InvalidInput, Conflict) as error:
            campaign.status = CampaignStatus.PAUSED
            campaign.content = {**(campaign.content or {}), "paused_because": error.detail}
            audit.record(
                session,
                action="campaign.pause",
                object_type="campaign",
                object_id=campaign.id,
                summary={"reason": error.detail},
                workspace_id=campaign.workspace_id,
            )
            continue
        started.append(campaign.id)
    return started


def pause_campaign(session: Session, *, campaign_id: int) -> Campaign:
    """Stop a sending campaign after the messages already on the wire; resume goes on where it stopped."""
    campaign = get_campaign(session, campaign_id=campaign_id)
    if campaign.status != CampaignStatus.SENDING:
        raise Conflict(f"Only a sending campaign can be paused (this one is {campaign.status}).", field="status")
    campaign.status = CampaignStatus.PAUSED
    campaign.updated_at = utcnow()
    audit.record(session, action="campaign.pause", object_type="campaign", object_id=campaign.id, summary={})
    return campaign


def resume_campaign(session: Session, *, campaign_id: int) -> Campaign:
    """Carry on a paused campaign."""
    campaign = get_campaign(session, campaign_id=campaign_id)
    if campaign.status != CampaignStatus.PAUSED:
        raise Conflict(f"Only a paused campaign can be resumed (this one is {campaign.status}).", field="status")
    content = campaign.content or {}
    if "html" not in content:  # its scheduled start failed: it never froze a template, so start it now
        start_campaign(session, campaign)
        return campaign
    # what will be sent is the copy frozen at the start, not the template as it is now
    _check_workspace_may_send(session, campaign)
    try:
        compile_template(
            subject=str(content.get("subject", "")),
            html=str(content["html"]),
            text=content.get("text"),
            allowed_fields=content.get("merge_fields") or merge_fields(session),
        )
    except InvalidInput as error:
        raise InvalidInput(
            f"The campaign's copy of its template cannot be sent: {error.detail}", field=f"template.{error.field}"
        ) from error
    campaign.status = CampaignStatus.SENDING
    campaign.updated_at = utcnow()
    audit.record(session, action="campaign.resume", object_type="campaign", object_id=campaign.id, summary={})
    from zgoda.campaigns import tasks
    from zgoda.core.tasks import enqueue_after_commit

    enqueue_after_commit(session, tasks.prepare_campaign, campaign.id)
    return campaign


def cancel_campaign(session: Session, *, campaign_id: int) -> Campaign:
    """Cancel a campaign that has not finished; what was sent stays sent, the rest is never sent."""
    campaign = get_campaign(session, campaign_id=campaign_id)
    if campaign.status in (CampaignStatus.SENT, CampaignStatus.CANCELLED):
        raise Conflict(f"Campaign '{campaign.name}' is already {campaign.status}.", field="status")
    now = utcnow()
    before = campaign.status
    campaign.status = CampaignStatus.CANCELLED
    campaign.finished_at = now
    campaign.updated_at = now
    cancelled = session.execute(
        update(Send)
        .where(Send.campaign_id == campaign.id, Send.status == SendStatus.PENDING)
        .values(status=SendStatus.CANCELLED, decided_at=now),
        execution_options={"synchronize_session": False},
    )
    audit.record(
        session,
        action="campaign.cancel",
        object_type="campaign",
        object_id=campaign.id,
        summary={"before": before, "not_sent": int(getattr(cancelled, "rowcount", 0) or 0)},
    )
    return campaign


def progress(session: Session, *, campaign_id: int) -> dict[str, Any]:
    """Live figures: how many sends are in each state, refusals and failures by reason."""
    campaign = get_campaign(session, campaign_id=campaign_id)
    rows = session.execute(
        select(Send.status, Send.reason, func.count())
        .where(Send.campaign_id == campaign.id)
        .group_by(Send.status, Send.reason)
    ).all()
    counts = {status.value: 0 for status in SendStatus}
    refused: dict[str, int] = {}
    failed: dict[str, int] = {}
    for status, reason, count in rows:
        counts[status] = counts.get(status, 0) + count
        if status == SendStatus.REFUSED:
            refused[reason or "unknown"] = refused.get(reason or "unknown", 0) + count
        elif status == SendStatus.FAILED:
            failed[reason or "unknown"] = failed.get(reason or "unknown", 0) + count
    total = sum(counts.values())
    return {
        "campaign": campaign.name,
        "kind": campaign.kind,
        "status": campaign.status,
        "total": total,
        "sent": counts[SendStatus.SENT],
        "pending": counts[SendStatus.PENDING] + counts[SendStatus.SENDING],
        "refused": counts[SendStatus.REFUSED],
        "refused_by_reason": dict(sorted(refused.items())),
        "failed": counts[SendStatus.FAILED],
        "failed_by_reason": dict(sorted(failed.items())),
        "cancelled": counts[SendStatus.CANCELLED],
        "started_at": campaign.started_at.isoformat() if campaign.started_at else None,
        "finished_at": campaign.finished_at.isoformat() if campaign.finished_at else None,
        "scheduled_at": campaign.scheduled_at.isoformat() if campaign.scheduled_at else None,
    }
