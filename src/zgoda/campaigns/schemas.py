"""API shapes for templates, campaigns (with their progress), sending domains and sending settings."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from zgoda.accounts.schemas import StrictInput

# --- templates --------------------------------------------------------------------------------


class TemplateCreate(StrictInput):
    name: str = Field(min_length=1, max_length=120)
    subject: str = Field(max_length=500)
    html: str = Field(max_length=500_000)
    text: str | None = Field(default=None, max_length=500_000, description="Derived from the html when absent.")


class TemplateUpdate(StrictInput):
    """Changed parts; an absent field stays as it is (an empty ``text`` goes back to the derived one)."""

    subject: str | None = Field(default=None, max_length=500)
    html: str | None = Field(default=None, max_length=500_000)
    text: str | None = Field(default=None, max_length=500_000)


class TemplateOut(BaseModel):
    id: int
    name: str
    subject: str
    html: str
    text: str | None
    created_by: str
    created_at: datetime
    updated_at: datetime


class TemplatePreviewOut(BaseModel):
    """The template rendered for one contact (or sample values), without the platform's footer."""

    subject: str
    html: str
    text: str


# --- campaigns --------------------------------------------------------------------------------


class CampaignCreate(StrictInput):
    """A draft campaign to exactly one list or one segment, for one email purpose."""

    name: str = Field(min_length=1, max_length=120)
    purpose: str = Field(min_length=1, max_length=64, description="The purpose key, e.g. email_marketing.")
    list_id: int | None = None
    segment_id: int | None = None
    template_id: int
    from_name: str = Field(min_length=1, max_length=200)
    from_email: str = Field(min_length=3, max_length=320)
    reply_to: str | None = Field(default=None, max_length=320)
    language: Literal["pl", "en"] | None = Field(default=None, description="The footer's language.")
    kind: Literal["marketing", "consent_request"] = Field(
        default="marketing",
        description="consent_request asks for the purpose's consent (double opt-in, re-permission, refresh): "
        "it also reaches pending contacts, and every message shows the notice with a confirmation link.",
    )


class ProgressOut(BaseModel):
    """Live figures of a campaign's sends."""

    status: str
    total: int
    sent: int
    pending: int
    refused: int
    refused_by_reason: dict[str, int]
    failed: int
    failed_by_reason: dict[str, int]
    cancelled: int
    scheduled_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None


class CampaignOut(BaseModel):
    id: int
    name: str
    kind: str
    status: str
    purpose: str
    list_id: int | None
    segment_id: int | None
    template_id: int
    from_name: str
    from_email: str
    reply_to: str | None
    language: str
    scheduled_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    created_by: str
    created_at: datetime
    progress: ProgressOut


class SendIn(StrictInput):
    """Send now, or at ``scheduled_at`` (a time without a zone is read in the workspace's time zone)."""

    scheduled_at: datetime | None = None


class SendOut(BaseModel):
    """What the send request did: ``started``, ``scheduled``, ``already_sending`` or ``already_sent``."""

    action: str
    message: str
    campaign: CampaignOut


# --- sending domains and settings -------------------------------------------------------------


class SendingDomainCreate(StrictInput):
    domain: str = Field(min_length=1, max_length=253)


class DnsRecordOut(BaseModel):
    type: Literal["TXT"] = "TXT"
    name: str
    value: str


class SendingDomainOut(BaseModel):
    id: int
    domain: str
    selector: str
    created_at: datetime
    dns: DnsRecordOut = Field(description="Publish this TXT record before sending from the domain.")


class SendingSettingsIn(StrictInput):
    """The whole sending settings (PUT replaces them)."""

    soft_opt_in: bool = Field(
        default=False,
        description="Let a recorded legitimate interest stand in for consent (ePrivacy soft opt-in). "
        "Polish law does not clearly allow it: off by default.",
    )
    rate_per_second: int | None = Field(
        default=None, description="At most this many messages per second; null: no cap."
    )


class SendingSettingsOut(BaseModel):
    soft_opt_in: bool
    rate_per_second: int | None
