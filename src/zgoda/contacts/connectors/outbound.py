"""Signed notifications to a source system: withdrawals now, erasures with the rights release (Art. 19).

Each notification is a row; a Celery task posts it (JSON, ``Zgoda-Signature`` header, no
redirects followed, 10 s timeout) and retries with exponential backoff until it gets a 2xx
or gives up after :data:`MAX_ATTEMPTS`, recording every attempt's outcome.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from sqlalchemy import select
from sqlalchemy.orm import Session

from zgoda.audit import service as audit
from zgoda.consent import sources
from zgoda.consent.models import Source
from zgoda.contacts.connectors.models import OutboundDelivery
from zgoda.contacts.connectors.signing import HEADER, sign
from zgoda.contacts.models import Contact, ContactIdentity
from zgoda.core.clock import isoformat_z, utcnow
from zgoda.core.crypto import new_token
from zgoda.core.db import Database
from zgoda.core.errors import InvalidInput, NotFound
from zgoda.core.tenancy import Actor, bind_scope, current_workspace_id, unscoped

if TYPE_CHECKING:  # imported where a delivery is posted: recording a withdrawal queues one and needs no HTTP client
    import httpx

SETTING = "outbound"
MAX_ATTEMPTS = 8
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


def backoff(attempts: int) -> timedelta:
    """Wait before the next attempt: 30 s, 1 min, 2 min, ... capped at 6 h."""
    return timedelta(seconds=min(30 * 2 ** max(attempts - 1, 0), 6 * 3600))


def configure(session: Session, *, source_id: int, url: str) -> str:
    """Set the source's notification URL and a new signing secret (returned once)."""
    parsed = urlparse(url)
    loopback = parsed.hostname in LOOPBACK_HOSTS
    if parsed.scheme != "https" and not (parsed.scheme == "http" and loopback):
        raise InvalidInput("The notification URL must use https:// (plain http only for localhost).", field="url")
    if not parsed.hostname:
        raise InvalidInput("The notification URL has no host.", field="url")
    source = sources.get_source(session, source_id=source_id)
    secret = new_token("zgo_")
    source.settings = {**(source.settings or {}), SETTING: {"url": url, "secret": secret}}
    session.flush()
    audit.record(
        session,
        action="source.outbound_configure",
        object_type="source",
        object_id=source.id,
        summary={"after": {"url": url}},
    )
    return secret


def queue_withdrawal_notices(session: Session, *, contact_ids_by_purpose: Sequence[tuple[int, str, str]]) -> list[int]:
    """One delivery per (contact, purpose) to every source that knows the contact and listens.

    ``contact_ids_by_purpose`` holds ``(contact_id, purpose_key, occurred_at ISO)``.
    """
    if not contact_ids_by_purpose:
        return []
    # a workspace has a few sources and most listen to nothing: ask the identities only of those that do
    # (named by workspace as well as scoped, so that a caller inside unscoped() still reads only its own)
    in_workspace = select(Source).where(Source.workspace_id == current_workspace_id(session))
    sources_listening = {
        source.id: source for source in session.scalars(in_workspace) if (source.settings or {}).get(SETTING)
    }
    if not sources_listening:
        return []
    contact_ids = {item[0] for item in contact_ids_by_purpose}
    listening = [
        (contact_id, external_id, sources_listening[source_id])
        for contact_id, external_id, source_id in session.execute(
            select(ContactIdentity.contact_id, ContactIdentity.external_id, ContactIdentity.source_id).where(
                ContactIdentity.contact_id.in_(contact_ids), ContactIdentity.source_id.in_(sources_listening)
            )
        )
    ]
    if not listening:
        return []
    emails = {
        row.id: row.email
        for row in session.execute(select(Contact.id, Contact.email).where(Contact.id.in_(contact_ids)))
    }
    created: list[OutboundDelivery] = []
    for contact_id, purpose_key, occurred_at in contact_ids_by_purpose:
        for cid, external_id, source in listening:
            if cid != contact_id:
                continue
            payload = {
                "event": "consent.withdrawn",
                "purpose": purpose_key,
                "occurred_at": occurred_at,
                "contact": {"external_id": external_id, "email": emails.get(contact_id)},
            }
            delivery = OutboundDelivery(
                source_id=source.id, kind="consent.withdrawn", payload=payload, next_attempt_at=utcnow()
            )
            session.add(delivery)
            created.append(delivery)
    session.flush()
    return [d.id for d in created]


def list_deliveries(session: Session, *, source_id: int, limit: int = 100) -> Sequence[OutboundDelivery]:
    return session.scalars(
        select(OutboundDelivery)
        .where(OutboundDelivery.source_id == source_id)
        .order_by(OutboundDelivery.id.desc())
        .limit(limit)
    ).all()


def attempt(database: Database, delivery_id: int, *, client: httpx.Client | None = None) -> OutboundDelivery:
    """Post one delivery once and record the outcome; returns the updated row (status says what next)."""
    import httpx

    with database.transaction() as session:
        with unscoped(session):
            delivery = session.get(OutboundDelivery, delivery_id)
        if delivery is None:
            raise NotFound(f"There is no delivery {delivery_id}.", field="delivery_id")
        bind_scope(session, workspace_id=delivery.workspace_id, actor=Actor.system("outbound"))
        if delivery.status != "pending":
            return delivery
        source = session.get(Source, delivery.source_id)
        config = (source.settings or {}).get(SETTING) if source else None
        body = json.dumps(
            {"delivery_id": delivery.id, "sent_at": isoformat_z(utcnow()), **delivery.payload}, ensure_ascii=False
        ).encode()
        delivery.attempts += 1
        if not config:
            delivery.status, delivery.last_error = "failed", "the source no longer has a notification URL"
            return delivery
        owns_client = client is None
        http = client or httpx.Client(timeout=10.0, follow_redirects=False)
        try:
            response = http.post(
                config["url"],
                content=body,
                headers={
                    "Content-Type": "application/json",
                    HEADER: sign(config["secret"], body),
                    "User-Agent": "Zgoda-Webhook/1",
                },
            )
            delivery.last_status_code = response.status_code
            ok = 200 <= response.status_code < 300
            delivery.last_error = None if ok else f"HTTP {response.status_code}"
        except httpx.HTTPError as error:
            ok = False
            delivery.last_status_code = None
            delivery.last_error = f"{type(error).__name__}: {error}"[:1000]
        finally:
            if owns_client:
                http.close()
        if ok:
            delivery.status, delivery.delivered_at, delivery.next_attempt_at = "delivered", utcnow(), None
        elif delivery.attempts >= MAX_ATTEMPTS:
            delivery.status, delivery.next_attempt_at = "failed", None
        else:
            delivery.next_attempt_at = utcnow() + backoff(delivery.attempts)
        return delivery


def describe(delivery: OutboundDelivery) -> dict[str, Any]:
    return {
        "id": delivery.id,
        "kind": delivery.kind,
        "status": delivery.status,
        "attempts": delivery.attempts,
        "last_status_code": delivery.last_status_code,
        "last_error": delivery.last_error,
        "created_at": delivery.created_at,
        "delivered_at": delivery.delivered_at,
        "next_attempt_at": delivery.next_attempt_at,
    }
