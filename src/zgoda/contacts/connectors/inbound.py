"""Form submissions pushed by a client's own website or shop, signed with the source's secret."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from zgoda.accounts.schemas import StrictInput
from zgoda.consent import ledger, purposes, sources
from zgoda.consent.models import ConsentState, Source
from zgoda.contacts import service as contacts
from zgoda.contacts.connectors.models import InboundSubmission
from zgoda.contacts.connectors.signing import verify
from zgoda.core.crypto import new_token
from zgoda.core.errors import AuthenticationRequired, InvalidInput

SECRET_SETTING = "inbound_secret"  # noqa: S105 - the settings key under which the secret is kept
MAX_BODY_BYTES = 64 * 1024


class SubmittedContact(StrictInput):
    email: str | None = Field(default=None, max_length=320)
    phone: str | None = Field(default=None, max_length=40)
    first_name: str | None = Field(default=None, max_length=200)
    last_name: str | None = Field(default=None, max_length=200)
    external_id: str | None = Field(default=None, max_length=200)
    attributes: dict[str, Any] = Field(default_factory=dict)


class SubmittedConsent(StrictInput):
    purpose: str = Field(max_length=64)
    granted: bool
    notice_version: int | None = Field(default=None, ge=1)
    language: str | None = Field(default=None, max_length=16)
    double_opt_in: bool = Field(default=False, description="True when we must confirm by email first.")


class SubmittedEvidence(StrictInput):
    ip: str | None = Field(default=None, max_length=64)
    user_agent: str | None = Field(default=None, max_length=1000)
    page_url: str | None = Field(default=None, max_length=2048)


class FormSubmission(StrictInput):
    """What a form posts to ``POST /api/v1/sources/{source_id}/submissions`` (documented in docs/integrations.md)."""

    submission_id: str = Field(min_length=1, max_length=100, description="Unique per source; a replay is ignored.")
    occurred_at: datetime | None = None
    contact: SubmittedContact
    consents: list[SubmittedConsent] = Field(default_factory=list, max_length=20)
    evidence: SubmittedEvidence = Field(default_factory=SubmittedEvidence)


def rotate_secret(session: Session, *, source_id: int) -> str:
    """A new signing secret for the source's form webhook (shown once; the old one stops working)."""
    from zgoda.audit import service as audit

    source = sources.get_source(session, source_id=source_id)
    secret = new_token("zgw_")
    source.settings = {**(source.settings or {}), SECRET_SETTING: secret}
    session.flush()
    audit.record(session, action="source.inbound_secret_rotate", object_type="source", object_id=source.id)
    return secret


def authenticate(source: Source, body: bytes, header: str | None) -> None:
    """Check the body's signature against the source's secret (raises AuthenticationRequired)."""
    secret = (source.settings or {}).get(SECRET_SETTING)
    if not secret:
        raise AuthenticationRequired("This source accepts no submissions: create its webhook secret first.")
    verify(secret, body, header)


def accept(session: Session, *, source: Source, submission: FormSubmission, region: str) -> dict[str, Any]:
    """Upsert the contact and record its consents; a submission id seen before changes nothing."""
    seen = session.scalar(
        select(InboundSubmission).where(
            InboundSubmission.source_id == source.id, InboundSubmission.submission_id == submission.submission_id
        )
    )
    if seen is not None:
        return {"duplicate": True, "contact_id": seen.contact_id, "events": 0}
    if submission.occurred_at is not None and submission.occurred_at.tzinfo is None:
        raise InvalidInput("occurred_at needs a time zone.", field="occurred_at")
    data = submission.contact
    result = contacts.upsert_contact(
        session,
        contacts.ContactData(
            email=data.email,
            phone=data.phone,
            first_name=data.first_name,
            last_name=data.last_name,
            attributes=data.attributes,
            source_id=source.id,
            external_id=data.external_id,
        ),
        region=region,
    )
    contact = result.contact
    evidence = ledger.Evidence(
        ip=submission.evidence.ip, user_agent=submission.evidence.user_agent, page_url=submission.evidence.page_url
    )
    events: list[ledger.NewEvent] = []
    for index, consent in enumerate(submission.consents):
        purpose = purposes.purpose_by_key(session, consent.purpose, field=f"consents.{index}.purpose")
        notice = purposes.resolve_notice(
            session, purpose=purpose, version=consent.notice_version, language=consent.language
        )
        if consent.granted:
            events.append(
                ledger.NewEvent(
                    contact=contact,
                    purpose=purpose,
                    event_type="grant",
                    method="web_form",
                    source=source,
                    notice=notice,
                    occurred_at=submission.occurred_at,
                    requires_confirmation=consent.double_opt_in,
                    evidence=evidence,
                    reference=f"submission:{submission.submission_id}",
                )
            )
            continue
        state = session.scalar(
            select(ConsentState.status).where(
                ConsentState.contact_id == contact.id, ConsentState.purpose_id == purpose.id
            )
        )
        if state in ("granted", "pending"):
            events.append(
                ledger.NewEvent(
                    contact=contact,
                    purpose=purpose,
                    event_type="withdraw",
                    method="preference_centre",
                    source=source,
                    occurred_at=submission.occurred_at,
                    evidence=evidence,
                    reference=f"submission:{submission.submission_id}",
                )
            )
    ids = ledger.record_events(session, events)
    session.add(InboundSubmission(source_id=source.id, submission_id=submission.submission_id, contact_id=contact.id))
    session.flush()
    return {"duplicate": False, "contact_id": contact.id, "contact_outcome": result.outcome, "events": len(ids)}
