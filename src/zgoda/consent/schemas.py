"""API shapes for sources, purposes, notices and consent events. Inputs refuse unknown fields."""

from __future__ import annotations

import ipaddress
from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, BaseModel, Field, StringConstraints

from zgoda.accounts.schemas import StrictInput, check_web_url
from zgoda.consent.models import Channel, EventType, LegalBasis, Method, SourceKind
from zgoda.consent.purposes import MAX_NOTICE_CHARS

# The exact words shown to a person: hashed as given, so never stripped.
ExactText = Annotated[str, StringConstraints(strip_whitespace=False, max_length=MAX_NOTICE_CHARS)]


def check_ip(value: str) -> str:
    """An IPv4 or IPv6 address, in its canonical spelling."""
    try:
        return str(ipaddress.ip_address(value))
    except ValueError as error:
        raise ValueError("not an IP address") from error


# --- sources ---------------------------------------------------------------------------------


class SourceCreate(StrictInput):
    name: str = Field(min_length=1, max_length=120, description="Unique in the workspace, e.g. 'Sklep WWW'.")
    kind: SourceKind
    description: str = Field(default="", max_length=4000)


class SourceUpdate(StrictInput):
    name: str | None = Field(default=None, min_length=1, max_length=120)
    description: str | None = Field(default=None, max_length=4000)


class SourceAttestation(StrictInput):
    attestation: str = Field(
        max_length=20_000,
        description="How consent is collected at this source (the form, its wording, double opt-in...).",
    )


class EvidenceFileOut(BaseModel):
    id: int
    filename: str
    content_type: str
    sha256: str
    size: int
    uploaded_by: str
    uploaded_at: datetime
    url: str = Field(description="Where to download the file.")


class SourceOut(BaseModel):
    id: int
    name: str
    kind: str
    description: str
    attestation: str
    attested_by: str | None
    attested_at: datetime | None
    created_at: datetime
    evidence: list[EvidenceFileOut]


# --- purposes and notices --------------------------------------------------------------------


class PurposeCreate(StrictInput):
    key: str = Field(max_length=64, description="What APIs and import columns name, e.g. 'newsletter_email'.")
    name: str = Field(min_length=1, max_length=200)
    channel: Channel
    description: str = Field(default="", max_length=4000)
    validity_days: int | None = Field(default=None, ge=1, le=3650, description="Consent lapses after; none: never.")


class PurposeUpdate(StrictInput):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=4000)
    validity_days: int | None = Field(
        default=None, ge=1, le=3650, description="Give null to remove the validity period; omit to keep it."
    )


class PurposeOut(BaseModel):
    id: int
    key: str
    name: str
    channel: str
    description: str
    validity_days: int | None
    created_at: datetime


class NoticeCreate(StrictInput):
    language: str = Field(max_length=16, description="A language tag: 'pl', 'en', 'en-GB'.")
    title: str = Field(max_length=200)
    text: ExactText = Field(description="The exact words shown to the person; stored with their SHA-256.")


class NoticeUpdate(StrictInput):
    title: str | None = Field(default=None, max_length=200)
    text: ExactText | None = None


class NoticeOut(BaseModel):
    id: int
    purpose_id: int
    purpose: str = Field(description="The purpose key.")
    language: str
    version: int
    title: str
    text: str
    sha256: str
    created_at: datetime
    first_used_at: datetime | None
    used: bool = Field(description="Cited by a consent event, hence immutable.")


# --- consent events --------------------------------------------------------------------------


class EvidenceIn(StrictInput):
    """How the event was observed; personal data, stored apart so an erasure can remove it."""

    ip: Annotated[str, Field(max_length=64), AfterValidator(check_ip)] | None = None
    user_agent: str | None = Field(default=None, max_length=1000)
    page_url: Annotated[str, Field(max_length=2048), AfterValidator(check_web_url)] | None = None
    file_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$", description="Of an imported file.")
    file_row: int | None = Field(default=None, ge=1, description="The row of that file.")
    note: str | None = Field(default=None, max_length=4000)


class ConsentEventIn(StrictInput):
    purpose: str = Field(min_length=1, max_length=64, description="The purpose key, e.g. 'email_marketing'.")
    type: EventType
    legal_basis: LegalBasis = LegalBasis.CONSENT
    method: Method = Method.API
    source: str | None = Field(default=None, max_length=120, description="The name of the source.")
    notice_id: int | None = Field(default=None, description="The notice shown; or give its version and language.")
    notice_version: int | None = Field(default=None, ge=1)
    notice_language: str | None = Field(default=None, max_length=16)
    occurred_at: AwareDatetime | None = Field(default=None, description="ISO 8601 with a zone; default now.")
    requires_confirmation: bool = Field(default=False, description="A grant awaiting double opt-in.")
    evidence: EvidenceIn | None = None
    reference: str | None = Field(default=None, max_length=120, description="Your own id for this event.")


class ConsentStateOut(BaseModel):
    purpose: str
    status: str = Field(description="granted, pending, withdrawn, expired or none, as of now.")
    legal_basis: str | None
    event_id: int | None = Field(description="The event that decided this state.")
    decided_at: datetime | None
    expires_at: datetime | None


class EventEvidenceOut(BaseModel):
    ip: str | None
    user_agent: str | None
    page_url: str | None
    file_sha256: str | None
    file_row: int | None
    note: str | None


class ConsentEventOut(BaseModel):
    id: int
    seq: int
    purpose: str
    type: str
    requires_confirmation: bool
    legal_basis: str
    method: str
    source_id: int | None
    source: str | None
    notice_id: int | None
    notice_version: int | None
    notice_language: str | None
    notice_sha256: str | None
    occurred_at: datetime
    recorded_at: datetime
    actor: str
    reference: str | None
    evidence: EventEvidenceOut | None = Field(description="None when none was given or it was erased.")
    prev_hash: str
    hash: str


class ConsentHistoryOut(BaseModel):
    contact_id: int
    states: dict[str, ConsentStateOut] = Field(description="Current state per purpose key.")
    events: list[ConsentEventOut] = Field(description="Every event, in the order they occurred.")


class StateAtOut(BaseModel):
    contact_id: int
    purpose: str
    moment: datetime
    status: str
