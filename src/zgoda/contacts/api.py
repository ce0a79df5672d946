"""JSON API: contacts (search, upsert by identity, changes) and consent sent in by integrating systems."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from zgoda.consent import purposes, sources
from zgoda.consent.api import consents_out, events_out, record_consent
from zgoda.consent.models import ConsentState, Purpose, Source
from zgoda.contacts import service as contacts
from zgoda.contacts.models import Contact, ContactIdentity
from zgoda.contacts.schemas import (
    ContactDetailOut,
    ContactOut,
    ContactPage,
    ContactUpdate,
    ContactUpsert,
    IdentityOut,
    InboundConsentIn,
    InboundConsentOut,
    UpsertOut,
)
from zgoda.core.clock import utcnow
from zgoda.core.errors import ZgodaError
from zgoda.web.context import RequestContext, require, require_existing

router = APIRouter(tags=["contacts"])


def _contact(session: Session, contact_id: int) -> object:
    return contacts.get_contact(session, contact_id=contact_id)


def phone_region(ctx: RequestContext) -> str:
    """Numbers given without a country code belong to the workspace's jurisdiction (else the default)."""
    jurisdiction = (ctx.workspace_required.settings or {}).get("jurisdiction")
    return jurisdiction if isinstance(jurisdiction, str) and jurisdiction else ctx.settings.default_phone_region


def contact_out(
    contact: Contact,
    *,
    source_names: dict[int, str],
    all_purposes: Sequence[Purpose],
    states: Sequence[ConsentState],
    now: datetime,
) -> ContactOut:
    """A contact with its current consent per purpose key."""
    return ContactOut(
        id=contact.id,
        email=contact.email,
        phone=contact.phone,
        first_name=contact.first_name,
        last_name=contact.last_name,
        attributes=contact.attributes or {},
        source_id=contact.source_id,
        source=source_names.get(contact.source_id) if contact.source_id is not None else None,
        created_at=contact.created_at,
        updated_at=contact.updated_at,
        erased_at=contact.erased_at,
        consents=consents_out(all_purposes, states, now),
    )


def contact_detail(session: Session, contact: Contact) -> ContactDetailOut:
    """A contact with its identities in source systems and its current consent per purpose key."""
    names = {s.id: s.name for s in sources.list_sources(session)}
    states = contacts.consent_states_for(session, contact_ids=[contact.id])[contact.id]
    summary = contact_out(
        contact, source_names=names, all_purposes=purposes.list_purposes(session), states=states, now=utcnow()
    )
    identities = session.scalars(
        select(ContactIdentity).where(ContactIdentity.contact_id == contact.id).order_by(ContactIdentity.id)
    )
    return ContactDetailOut(
        **summary.model_dump(),
        identities=[
            IdentityOut(
                source_id=i.source_id, source=names[i.source_id], external_id=i.external_id, created_at=i.created_at
            )
            for i in identities
        ],
    )


def contact_data(body: ContactUpsert | ContactUpdate, *, source: Source | None = None) -> contacts.ContactData:
    """The service's view of a request body (``None`` fields mean "not given")."""
    return contacts.ContactData(
        email=body.email,
        phone=body.phone,
        first_name=body.first_name,
        last_name=body.last_name,
        attributes=body.attributes,
        source_id=source.id if source else None,
        external_id=body.external_id if isinstance(body, ContactUpsert) else None,
    )


def upsert_out(session: Session, result: contacts.UpsertResult) -> UpsertOut:
    """What an upsert did, and the contact as it now is."""
    return UpsertOut(
        outcome=result.outcome,
        matched_by=result.matched_by,
        changed_fields=result.changed_fields,
        identity_added=result.identity_added,
        contact=contact_detail(session, result.contact),
    )


@router.get("/contacts", response_model=ContactPage)
def list_contacts(
    ctx: RequestContext = require("contacts.read"),
    q: Annotated[str | None, Query(max_length=200, description="Part of an address, number or name.")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> ContactPage:
    """Contacts, newest first, with their consent per purpose and the total for paging."""
    found, total = contacts.search_contacts(ctx.session, query=q, limit=limit, offset=offset)
    names = {s.id: s.name for s in sources.list_sources(ctx.session)}
    all_purposes = purposes.list_purposes(ctx.session)
    states = contacts.consent_states_for(ctx.session, contact_ids=[c.id for c in found])
    now = utcnow()
    items = [contact_out(c, source_names=names, all_purposes=all_purposes, states=states[c.id], now=now) for c in found]
    return ContactPage(items=items, total=total, limit=limit, offset=offset)


@router.post("/contacts", response_model=UpsertOut, responses={201: {"model": UpsertOut}})
def upsert_contact(
    body: ContactUpsert, response: Response, ctx: RequestContext = require("contacts.write")
) -> UpsertOut:
    """Create a contact or update the one its identity, email or phone matches (201 when created).

    Keys that match two different contacts are a conflict (409), never a silent merge.
    """
    source = sources.source_by_name(ctx.session, body.source, field="source") if body.source else None
    result = contacts.upsert_contact(ctx.session, contact_data(body, source=source), region=phone_region(ctx))
    response.status_code = 201 if result.outcome == "created" else 200
    return upsert_out(ctx.session, result)


@router.get("/contacts/{contact_id}", response_model=ContactDetailOut)
def get_contact(contact_id: int, ctx: RequestContext = require("contacts.read")) -> ContactDetailOut:
    """One contact with its identities and current consent per purpose key."""
    return contact_detail(ctx.session, contacts.get_contact(ctx.session, contact_id=contact_id))


@router.patch("/contacts/{contact_id}", response_model=ContactDetailOut)
def update_contact(
    contact_id: int,
    body: ContactUpdate,
    ctx: RequestContext = require_existing("contacts.write", contact_id=_contact),
) -> ContactDetailOut:
    """Change a contact's details; another contact's address is a conflict (409)."""
    contact = contacts.update_contact(
        ctx.session, contact_id=contact_id, changes=contact_data(body), region=phone_region(ctx)
    )
    return contact_detail(ctx.session, contact)


@router.post("/consents", response_model=InboundConsentOut, status_code=201, tags=["consent"])
def inbound_consent(body: InboundConsentIn, ctx: RequestContext = require("contacts.write")) -> InboundConsentOut:
    """For systems that do not know our ids: match or create the contact, then record the event.

    One transaction: when the event is refused, the contact is not written either.
    """
    event_source = sources.source_by_name(ctx.session, body.source, field="source") if body.source else None
    try:
        contact_source = (
            sources.source_by_name(ctx.session, body.contact.source, field="source")
            if body.contact.source
            else event_source
        )
        result = contacts.upsert_contact(
            ctx.session, contact_data(body.contact, source=contact_source), region=phone_region(ctx)
        )
    except ZgodaError as error:
        error.field = f"contact.{error.field}" if error.field else "contact"
        raise
    event = record_consent(ctx.session, contact=result.contact, body=body, default_source=contact_source)
    [recorded] = events_out(ctx.session, [event])
    return InboundConsentOut(contact=upsert_out(ctx.session, result), event=recorded)
