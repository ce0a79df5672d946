"""HTML pages for staff: the suppression list, a campaign's feedback figures, a contact's messages, the mail
the local SMTP sink caught (this workspace's only) and the owner's soft-bounce rule."""

from __future__ import annotations

import email.message
import email.policy
import re
from dataclasses import dataclass
from email.parser import BytesParser
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select

from zgoda.campaigns import service as campaigns
from zgoda.campaigns.models import Campaign
from zgoda.contacts import service as contacts
from zgoda.core.errors import Conflict, InvalidInput, NotFound, ZgodaError
from zgoda.delivery.sink import CaughtMessage, find_caught, read_maildir
from zgoda.feedback import settings_service, suppression
from zgoda.feedback.api import campaign_feedback, contact_sends, get_suppression, search_filters
from zgoda.web.context import RequestContext, require
from zgoda.web.forms import error_message, int_or_none
from zgoda.web.templating import render

router = APIRouter(include_in_schema=False)
PAGE_SIZE = 50
MESSAGES_PAGE_SIZE = 20
CAUGHT_SHOWN = 50
CAUGHT_SCANNED = 2000  # the Maildir is platform-wide: look at this many of the newest to find ours

FormLine = Annotated[str, Form(max_length=320)]
FormText = Annotated[str, Form(max_length=1000)]

REASON_LABELS = {
    "hard_bounce": "hard bounce",
    "soft_bounces": "repeated soft bounces",
    "complaint": "complaint (marked as spam)",
    "unsubscribe": "unsubscribed",
    "operator": "added by staff",
    "erasure": "erased subject",
}
MANUAL_REASONS = ("operator", "hard_bounce", "soft_bounces", "complaint", "unsubscribe")
DONE_MESSAGES = {
    "added": "The address is on the suppression list.",
    "already": "The address was already on the suppression list; the entry is unchanged.",
    "removed": "The entry is off the list: the address may be mailed again where consent allows.",
}


def _failed(ctx: RequestContext, error: ZgodaError) -> str:
    ctx.session.rollback()
    return error_message(error)


# --- suppressions -----------------------------------------------------------------------------


def _suppressions_page(
    request: Request,
    ctx: RequestContext,
    *,
    q: str = "",
    reason: str = "",
    offset: int = 0,
    status_code: int = 200,
    **extra: Any,
) -> Response:
    try:
        address, chosen = search_filters(q, reason)
    except InvalidInput as error:
        extra.setdefault("search_error", error_message(error))
        status_code = 422 if status_code == 200 else status_code
        address, chosen = None, None
    rows, total = suppression.list_suppressions(
        ctx.session, address=address, reason=chosen, limit=PAGE_SIZE, offset=offset
    )
    extra.setdefault("values", {"reason": "operator"})
    return render(
        request,
        "staff/suppressions.html",
        ctx,
        status_code=status_code,
        entries=rows,
        total=total,
        q=q,
        reason=reason,
        offset=offset,
        page_size=PAGE_SIZE,
        reasons=suppression.REASONS,
        manual_reasons=MANUAL_REASONS,
        reason_labels=REASON_LABELS,
        done_message=DONE_MESSAGES.get(request.query_params.get("done", "")),
        **extra,
    )


@router.get("/w/{slug}/suppressions", response_class=HTMLResponse)
def suppressions_page(
    request: Request,
    slug: str,
    ctx: RequestContext = require("suppressions.read"),
    q: Annotated[str, Query(max_length=320)] = "",
    reason: Annotated[str, Query(max_length=32)] = "",
    offset: Annotated[int, Query(ge=0)] = 0,
) -> Response:
    """The suppression list, newest first: search one exact address, filter by reason, add and remove."""
    return _suppressions_page(request, ctx, q=q, reason=reason, offset=offset)


@router.post("/w/{slug}/suppressions", response_class=HTMLResponse)
def suppressions_add(
    request: Request,
    slug: str,
    address: FormLine = "",
    reason: FormLine = "operator",
    detail: FormText = "",
    ctx: RequestContext = require("suppressions.manage"),
) -> Response:
    """Put an address on the list (audited); a bad address or reason is shown next to the form."""
    values = {"address": address, "reason": reason, "detail": detail}
    try:
        if not address.strip():
            raise InvalidInput("Give the address to suppress.", field="address")
        if reason not in MANUAL_REASONS:
            raise InvalidInput(f"A reason given by hand is one of {', '.join(MANUAL_REASONS)}.", field="reason")
        _, created = suppression.suppress(ctx.session, address=address, reason=reason, detail=detail.strip())
    except ZgodaError as error:
        return _suppressions_page(request, ctx, status_code=422, error=_failed(ctx, error), values=values)
    return RedirectResponse(f"/w/{slug}/suppressions?done={'added' if created else 'already'}", status_code=303)


@router.post("/w/{slug}/suppressions/{suppression_id}/remove", response_class=HTMLResponse)
def suppressions_remove(
    request: Request,
    slug: str,
    suppression_id: int,
    note: FormText = "",
    ctx: RequestContext = require("suppressions.manage"),
) -> Response:
    """Take an entry off the list; a complaint without a fresh consent (or an erasure) stays, and says why."""
    get_suppression(ctx.session, suppression_id=suppression_id)
    try:
        suppression.remove_suppression(ctx.session, suppression_id=suppression_id, note=note.strip())
    except Conflict as error:
        message = _failed(ctx, error)
        return _suppressions_page(request, ctx, status_code=409, error=message, error_entry=suppression_id)
    return RedirectResponse(f"/w/{slug}/suppressions?done=removed", status_code=303)


# --- campaign figures and a contact's messages ------------------------------------------------


@router.get("/w/{slug}/campaigns/{campaign_id}/feedback", response_class=HTMLResponse)
def campaign_feedback_page(
    request: Request, slug: str, campaign_id: int, ctx: RequestContext = require("campaigns.read")
) -> Response:
    """A campaign's feedback figures: a page, or the block the campaign page loads (htmx)."""
    campaign = campaigns.get_campaign(ctx.session, campaign_id=campaign_id)
    partial = request.headers.get("hx-request") and not request.headers.get("hx-history-restore-request")
    return render(
        request,
        "staff/_campaign_feedback.html" if partial else "staff/campaign_feedback.html",
        ctx,
        campaign=campaign,
        feedback=campaign_feedback(ctx.session, campaign_id=campaign.id),
    )


@router.get("/w/{slug}/contacts/{contact_id}/messages", response_class=HTMLResponse)
def contact_messages_page(
    request: Request,
    slug: str,
    contact_id: int,
    ctx: RequestContext = require("contacts.read"),
    offset: Annotated[int, Query(ge=0)] = 0,
) -> Response:
    """Every message to one contact (newest first, paged) with what happened to each."""
    contact = contacts.get_contact(ctx.session, contact_id=contact_id)
    sends, total = contact_sends(ctx.session, contact_id=contact.id, limit=MESSAGES_PAGE_SIZE, offset=offset)
    return render(
        request,
        "staff/contact_messages.html",
        ctx,
        contact=contact,
        sends=sends,
        sends_total=total,
        sends_offset=offset,
        sends_page_size=MESSAGES_PAGE_SIZE,
    )


# --- caught mail ------------------------------------------------------------------------------

_LIST_ID = re.compile(r"<campaign-(\d+)\.([^<>\s]+)>")


@dataclass(frozen=True)
class Caught:
    """A message the sink caught, with the campaign of this workspace it belongs to."""

    message: CaughtMessage
    campaign_id: int
    campaign_name: str


def _list_id_of(path: Path) -> str:
    """The List-Id header of a stored message (read from its head only)."""
    try:
        with path.open("rb") as file:
            head = bytearray()
            for line in file:
                if line in (b"\r\n", b"\n") or len(head) > 256_000:
                    break
                head += line
    except OSError:
        return ""
    headers = BytesParser(policy=email.policy.compat32).parsebytes(bytes(head) + b"\r\n", headersonly=True)
    value = headers.get("List-Id")
    return " ".join(str(value).split()) if value is not None else ""


def _campaign_of(path: Path, slug: str) -> int | None:
    """The campaign id a message names in its List-Id, when that List-Id is this workspace's."""
    match = _LIST_ID.search(_list_id_of(path))
    if match is None or not match.group(2).startswith(slug + "."):
        return None
    return int(match.group(1))


def _ours(ctx: RequestContext, messages: list[CaughtMessage]) -> list[Caught]:
    slug = ctx.workspace_required.slug
    named = [(message, _campaign_of(message.path, slug)) for message in messages]
    ids = {campaign_id for _, campaign_id in named if campaign_id is not None}
    rows = ctx.session.execute(
        select(Campaign.id, Campaign.name).where(
            Campaign.id.in_(ids), Campaign.workspace_id == ctx.workspace_required.id
        )
    )
    names: dict[int, str] = {row.id: row.name for row in rows}
    return [Caught(message, cid, names[cid]) for message, cid in named if cid is not None and cid in names]


def _maildir(ctx: RequestContext) -> Path | None:
    path = ctx.settings.sink_maildir
    return Path(path) if path is not None else None


@router.get("/w/{slug}/caught-mail", response_class=HTMLResponse)
def caught_mail_page(request: Request, slug: str, ctx: RequestContext = require("campaigns.read")) -> Response:
    """The newest messages of this workspace's campaigns that the local SMTP sink caught."""
    path = _maildir(ctx)
    caught = _ours(ctx, read_maildir(path, limit=CAUGHT_SCANNED))[:CAUGHT_SHOWN] if path is not None else []
    return render(request, "staff/caught_mail.html", ctx, maildir=path, caught=caught, shown=CAUGHT_SHOWN)


def _part(message: email.message.EmailMessage, subtype: str) -> tuple[str | None, str | None]:
    """The decoded ``text/<subtype>`` body, or an explanation of why it cannot be shown."""
    part = message.get_body(preferencelist=(subtype,))
    if part is None:
        return None, None
    try:
        content = part.get_content()
    except (LookupError, ValueError, KeyError, UnicodeError) as error:
        return None, f"The {subtype} part cannot be decoded: {error}"
    return (content if isinstance(content, str) else None), None


# Remote images stay blocked (no open is ever counted by looking here); nothing from the message runs.
VIEWER_CSP = "default-src 'self'; img-src data:; style-src 'self' 'unsafe-inline'; object-src 'none'; base-uri 'none'"


@router.get("/w/{slug}/caught-mail/{message_key}", response_class=HTMLResponse)
def caught_message_page(
    request: Request, slug: str, message_key: str, ctx: RequestContext = require("campaigns.read")
) -> Response:
    """One caught message: its headers (List-Unsubscribe, List-Unsubscribe-Post, DKIM-Signature, ...), the HTML
    part in a sandboxed frame and the text part."""
    path = _maildir(ctx)
    found = find_caught(path, message_key) if path is not None else None
    ours = _ours(ctx, [found]) if found is not None else []
    if not ours:
        raise NotFound("The sink holds no message of this workspace under that key.", field="message_key")
    caught = ours[0]
    message = caught.message.load()
    headers = [(name, value.replace("\r\n", "\n").replace("\n", "")) for name, value in message.raw_items()]
    present = {name.lower(): value for name, value in reversed(headers)}
    html, html_error = _part(message, "html")
    text, text_error = _part(message, "plain")
    checks = [
        ("List-Unsubscribe", "list-unsubscribe" in present, "links for unsubscribing (RFC 2369)"),
        (
            "List-Unsubscribe-Post",
            present.get("list-unsubscribe-post", "").strip() == "List-Unsubscribe=One-Click",
            "one-click unsubscribe (RFC 8058)",
        ),
        ("DKIM-Signature", "dkim-signature" in present, "signed by the sending domain (RFC 6376)"),
    ]
    response = render(
        request,
        "staff/caught_message.html",
        ctx,
        caught=caught,
        headers=headers,
        checks=checks,
        html=html,
        html_error=html_error,
        text=text,
        text_error=text_error,
    )
    response.headers["Content-Security-Policy"] = VIEWER_CSP
    return response


# --- settings ---------------------------------------------------------------------------------


def _settings_page(request: Request, ctx: RequestContext, *, status_code: int = 200, **extra: Any) -> Response:
    current = settings_service.feedback_settings(ctx.workspace_required)
    extra.setdefault("values", current.as_json())
    return render(
        request,
        "staff/feedback_settings.html",
        ctx,
        status_code=status_code,
        current=current,
        limit_range=settings_service.LIMIT_RANGE,
        days_range=settings_service.DAYS_RANGE,
        **extra,
    )


@router.get("/w/{slug}/feedback-settings", response_class=HTMLResponse)
def feedback_settings_page(
    request: Request, slug: str, ctx: RequestContext = require("workspace.settings")
) -> Response:
    """The owner's soft-bounce rule."""
    return _settings_page(request, ctx)


@router.post("/w/{slug}/feedback-settings", response_class=HTMLResponse)
def feedback_settings_save(
    request: Request,
    slug: str,
    soft_bounce_limit: FormLine = "",
    soft_bounce_days: FormLine = "",
    ctx: RequestContext = require("workspace.settings"),
) -> Response:
    """Save the soft-bounce rule (audited)."""
    values = {"soft_bounce_limit": soft_bounce_limit, "soft_bounce_days": soft_bounce_days}
    try:
        limit = int_or_none(soft_bounce_limit, field="soft_bounce_limit")
        days = int_or_none(soft_bounce_days, field="soft_bounce_days")
        if limit is None:
            raise InvalidInput("Give the number of soft bounces.", field="soft_bounce_limit")
        if days is None:
            raise InvalidInput("Give the number of days.", field="soft_bounce_days")
        settings_service.update_feedback_settings(
            ctx.session, workspace=ctx.workspace_required, soft_bounce_limit=limit, soft_bounce_days=days
        )
    except ZgodaError as error:
        return _settings_page(request, ctx, status_code=422, error=_failed(ctx, error), values=values)
    return RedirectResponse(f"/w/{slug}/feedback-settings?saved=1", status_code=303)
