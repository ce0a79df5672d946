"""HTML pages: the contact list with live search, and a contact's identities and consent timeline."""

from __future__ import annotations

from collections import defaultdict
from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy import select

from zgoda.consent import purposes, sources
from zgoda.consent.api import consent_history, record_consent, state_out
from zgoda.consent.models import EventType, LegalBasis, Method
from zgoda.consent.schemas import ConsentEventIn, ConsentEventOut
from zgoda.contacts import service as contacts
from zgoda.contacts.api import contact_data, phone_region
from zgoda.contacts.models import Contact, ContactIdentity
from zgoda.contacts.schemas import ContactUpsert
from zgoda.core.clock import utcnow
from zgoda.core.errors import ZgodaError
from zgoda.feedback.api import contact_sends
from zgoda.web.context import RequestContext, require
from zgoda.web.forms import blank_to_none, error_message, int_or_none, local_moment
from zgoda.web.templating import render

router = APIRouter(include_in_schema=False)
PAGE_SIZE = 50
MESSAGES_ON_PAGE = 10  # the newest; the rest on /contacts/{id}/messages

FormLine = Annotated[str, Form(max_length=320)]


def _list_page(
    request: Request, ctx: RequestContext, *, q: str, offset: int, status_code: int = 200, **extra: Any
) -> Response:
    found, total = contacts.search_contacts(ctx.session, query=q or None, limit=PAGE_SIZE, offset=offset)
    all_purposes = purposes.list_purposes(ctx.session)
    states = contacts.consent_states_for(ctx.session, contact_ids=[c.id for c in found])
    by_id = {p.id: p for p in all_purposes}
    now = utcnow()
    rows = [
        {
            "contact": contact,
            "badges": [state_out(by_id[s.purpose_id], s, now) for s in states[contact.id]],
        }
        for contact in found
    ]
    names = {s.id: s.name for s in sources.list_sources(ctx.session)}
    partial = request.headers.get("hx-request") and not request.headers.get("hx-history-restore-request")
    template = "contacts/results.html" if partial else "contacts/list.html"
    extra.setdefault("values", {})
    return render(
        request,
        template,
        ctx,
        status_code=status_code,
        rows=rows,
        total=total,
        q=q,
        offset=offset,
        page_size=PAGE_SIZE,
        source_names=names,
        sources=sources.list_sources(ctx.session),
        **extra,
    )


@router.get("/w/{slug}/contacts", response_class=HTMLResponse)
def contacts_page(
    request: Request,
    slug: str,
    ctx: RequestContext = require("contacts.read"),
    q: Annotated[str, Query(max_length=200)] = "",
    offset: Annotated[int, Query(ge=0)] = 0,
) -> Response:
    """Contacts, newest first, searchable (htmx swaps in the results as you type)."""
    return _list_page(request, ctx, q=q, offset=offset)


@router.post("/w/{slug}/contacts", response_class=HTMLResponse)
def contacts_create(
    request: Request,
    slug: str,
    email: FormLine = "",
    phone: FormLine = "",
    first_name: FormLine = "",
    last_name: FormLine = "",
    source: FormLine = "",
    ctx: RequestContext = require("contacts.write"),
) -> Response:
    """Add a contact by hand (or update the one with the same address or number)."""
    values = {"email": email, "phone": phone, "first_name": first_name, "last_name": last_name, "source": source}
    try:
        body = ContactUpsert.model_validate({name: blank_to_none(value) for name, value in values.items()})
        found = sources.source_by_name(ctx.session, body.source, field="source") if body.source else None
        result = contacts.upsert_contact(ctx.session, contact_data(body, source=found), region=phone_region(ctx))
    except (ValidationError, ZgodaError) as error:
        ctx.session.rollback()
        return _list_page(request, ctx, q="", offset=0, status_code=422, error=error_message(error), values=values)
    return RedirectResponse(f"/w/{slug}/contacts/{result.contact.id}", status_code=303)


def _detail_page(
    request: Request, ctx: RequestContext, contact: Contact, *, status_code: int = 200, **extra: Any
) -> Response:
    history = consent_history(ctx.session, contact)
    timeline: dict[str, list[ConsentEventOut]] = defaultdict(list)
    for event in history.events:
        timeline[event.purpose].append(event)
    all_purposes = purposes.list_purposes(ctx.session)
    all_sources = sources.list_sources(ctx.session)
    names = {s.id: s.name for s in all_sources}
    identities = [
        (names.get(i.source_id, str(i.source_id)), i)
        for i in ctx.session.scalars(
            select(ContactIdentity).where(ContactIdentity.contact_id == contact.id).order_by(ContactIdentity.id)
        )
    ]
    sends, sends_total = contact_sends(ctx.session, contact_id=contact.id, limit=MESSAGES_ON_PAGE)
    extra.setdefault("values", {})
    return render(
        request,
        "contacts/detail.html",
        ctx,
        status_code=status_code,
        contact=contact,
        identities=identities,
        source_name=names.get(contact.source_id) if contact.source_id else None,
        purposes=all_purposes,
        states=history.states,
        timeline=timeline,
        sources=all_sources,
        notices=[(p, purposes.list_notices(ctx.session, purpose_id=p.id)) for p in all_purposes],
        event_types=list(EventType),
        legal_bases=list(LegalBasis),
        methods=list(Method),
        sends=sends,
        sends_total=sends_total,
        **extra,
    )


@router.get("/w/{slug}/contacts/{contact_id}", response_class=HTMLResponse)
def contact_page(
    request: Request, slug: str, contact_id: int, ctx: RequestContext = require("contacts.read")
) -> Response:
    """A contact: details, identities in source systems, and per purpose its state and consent timeline."""
    return _detail_page(request, ctx, contacts.get_contact(ctx.session, contact_id=contact_id))


@router.get("/w/{slug}/contacts/{contact_id}/proof", response_model=None)
def contact_proof(
    slug: str, contact_id: int, ctx: RequestContext = require("proof.read"), output: str = "html"
) -> Response:
    """The consent proof of this contact: a printable page, or the JSON bundle / Kantara receipts to download."""
    from zgoda.consent.api import proof_response

    if output not in ("html", "json", "kantara"):
        output = "html"
    return proof_response(ctx, contact_id=contact_id, output=output, download=output != "html")


@router.post("/w/{slug}/contacts/{contact_id}/consents", response_class=HTMLResponse)
def contact_record_consent(
    request: Request,
    slug: str,
    contact_id: int,
    purpose: FormLine = "",
    event_type: Annotated[str, Form(alias="type", max_length=16)] = "",
    legal_basis: FormLine = "",
    method: FormLine = "",
    source: FormLine = "",
    notice_id: FormLine = "",
    occurred_at: FormLine = "",
    requires_confirmation: FormLine = "",
    note: Annotated[str, Form(max_length=4000)] = "",
    reference: FormLine = "",
    ctx: RequestContext = require("consent.record"),
) -> Response:
    """Record one consent event by hand (e.g. a consent given on paper or by phone)."""
    contact = contacts.get_contact(ctx.session, contact_id=contact_id)
    values = {
        "purpose": purpose,
        "type": event_type,
        "legal_basis": legal_basis,
        "method": method,
        "source": source,
        "notice_id": notice_id,
        "occurred_at": occurred_at,
        "requires_confirmation": requires_confirmation,
        "note": note,
        "reference": reference,
    }
    try:
        fields: dict[str, Any] = {
            "purpose": purpose,
            "type": event_type,
            "legal_basis": blank_to_none(legal_basis),
            "method": blank_to_none(method),
            "source": blank_to_none(source),
            "notice_id": int_or_none(notice_id, field="notice_id"),
            "occurred_at": local_moment(occurred_at, time_zone=ctx.workspace_required.time_zone, field="occurred_at"),
            "requires_confirmation": bool(requires_confirmation),
            "evidence": {"note": note} if note.strip() else None,
            "reference": blank_to_none(reference),
        }
        body = ConsentEventIn.model_validate({name: value for name, value in fields.items() if value is not None})
        record_consent(ctx.session, contact=contact, body=body)
    except (ValidationError, ZgodaError) as error:
        ctx.session.rollback()
        contact = contacts.get_contact(ctx.session, contact_id=contact_id)
        return _detail_page(request, ctx, contact, status_code=422, error=error_message(error), values=values)
    return RedirectResponse(f"/w/{slug}/contacts/{contact_id}#consent", status_code=303)
