"""Templates, campaigns, their sends (one row per campaign and contact) and the DKIM keys of sending domains."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from zgoda.core.clock import utcnow
from zgoda.core.db import Base
from zgoda.core.tenancy import TenantMixin


class CampaignStatus(StrEnum):
    DRAFT = "draft"
    SCHEDULED = "scheduled"
    SENDING = "sending"
    PAUSED = "paused"
    SENT = "sent"
    CANCELLED = "cancelled"


class CampaignKind(StrEnum):
    """What a campaign is for: marketing to those who agreed, or asking for (or re-confirming) that agreement."""

    MARKETING = "marketing"
    CONSENT_REQUEST = (
        "consent_request"  # double opt-in, re-permission, refresh before expiry (docs/consent-requests.md)
    )


class SendStatus(StrEnum):
    PENDING = "pending"  # in the audience, not yet decided
    SENDING = "sending"  # claimed by a worker (a lease); no final dot written yet
    SENT = "sent"  # committed before the final dot: never sent again
    REFUSED = "refused"  # the gate said no (``reason``); never sent
    FAILED = "failed"  # the SMTP server refused it for good (``reason``: the reply)
    CANCELLED = "cancelled"  # the campaign was cancelled before its turn


class Template(TenantMixin, Base):
    """An email's subject, HTML and (optional) text, with merge fields; checked when saved."""

    __tablename__ = "templates"
    __table_args__ = (UniqueConstraint("workspace_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(120))
    subject: Mapped[str] = mapped_column(String(500))
    html: Mapped[str] = mapped_column(Text)
    text: Mapped[str | None] = mapped_column(Text, default=None)
    created_by: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Campaign(TenantMixin, Base):
    """One email to one audience (a list or a segment) for one purpose.

    The template is copied into ``content`` when sending starts, so editing the template later
    never changes a campaign that is under way.
    """

    __tablename__ = "campaigns"
    __table_args__ = (UniqueConstraint("workspace_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(120))
    kind: Mapped[str] = mapped_column(String(24), default=CampaignKind.MARKETING)
    status: Mapped[str] = mapped_column(String(16), default=CampaignStatus.DRAFT)
    purpose_id: Mapped[int] = mapped_column(ForeignKey("purposes.id", ondelete="RESTRICT"))
    list_id: Mapped[int | None] = mapped_column(ForeignKey("contact_lists.id", ondelete="RESTRICT"), default=None)
    segment_id: Mapped[int | None] = mapped_column(ForeignKey("segments.id", ondelete="RESTRICT"), default=None)
    template_id: Mapped[int] = mapped_column(ForeignKey("templates.id", ondelete="RESTRICT"))
    from_name: Mapped[str] = mapped_column(String(200))
    from_email: Mapped[str] = mapped_column(String(320))
    reply_to: Mapped[str | None] = mapped_column(String(320), default=None)
    language: Mapped[str] = mapped_column(String(8), default="pl")
    content: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    scheduled_at: Mapped[datetime | None] = mapped_column(default=None)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    created_by: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Send(TenantMixin, Base):
    """One message of one campaign to one contact: at most one per pair, ever."""

    __tablename__ = "campaign_sends"
    __table_args__ = (
        UniqueConstraint("campaign_id", "contact_id"),
        # a claim takes a campaign's pending sends lowest ids first: id ends the index (migration 0008)
        Index("ix_campaign_sends_campaign_status_id", "campaign_id", "status", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="RESTRICT"))
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="RESTRICT"))
    list_id: Mapped[int | None] = mapped_column(ForeignKey("contact_lists.id", ondelete="RESTRICT"), default=None)
    ref: Mapped[str | None] = mapped_column(String(26), unique=True, default=None)  # set when sent
    status: Mapped[str] = mapped_column(String(16), default=SendStatus.PENDING)
    reason: Mapped[str | None] = mapped_column(String(40), default=None)
    consent_event_id: Mapped[int | None] = mapped_column(
        ForeignKey("consent_events.id", ondelete="RESTRICT"), default=None
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    claimed_by: Mapped[str | None] = mapped_column(String(80), default=None)
    claimed_until: Mapped[datetime | None] = mapped_column(default=None)
    smtp_reply: Mapped[str | None] = mapped_column(Text, default=None)
    decided_at: Mapped[datetime | None] = mapped_column(default=None)
    sent_at: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class SendingDomain(TenantMixin, Base):
    """A domain the workspace sends from, with its DKIM key (the private key encrypted at rest)."""

    __tablename__ = "sending_domains"
    __table_args__ = (UniqueConstraint("workspace_id", "domain"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    domain: Mapped[str] = mapped_column(String(253))
    selector: Mapped[str] = mapped_column(String(63))
    private_key: Mapped[str] = mapped_column(Text)  # Fernet token of the PEM
    public_key: Mapped[str] = mapped_column(Text)  # base64 SubjectPublicKeyInfo, as published in DNS
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
