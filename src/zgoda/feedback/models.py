"""Suppression lists and what happened to each send after it left (delivery, opens, bounces, ...)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from zgoda.core.clock import utcnow
from zgoda.core.db import Base
from zgoda.core.tenancy import TenantMixin


class Suppression(TenantMixin, Base):
    """An address this workspace must not mail, kept as a keyed hash (it outlives an erasure)."""

    __tablename__ = "suppressions"
    __table_args__ = (UniqueConstraint("workspace_id", "address_hash"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    address_hash: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(
        String(32)
    )  # hard_bounce, soft_bounces, complaint, unsubscribe, operator, erasure
    detail: Mapped[str] = mapped_column(Text, default="")
    hint: Mapped[str | None] = mapped_column(String(120), default=None)  # "j***@example.com", blanked on erasure
    created_by: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class PlatformSuppression(Base):
    """An address no workspace may mail (set by the platform admin)."""

    __tablename__ = "platform_suppressions"

    id: Mapped[int] = mapped_column(primary_key=True)
    address_hash: Mapped[str] = mapped_column(String(64), unique=True)
    reason: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class SendEvent(TenantMixin, Base):
    """One thing that happened to a send: delivered, opened, clicked, bounced, complained, unsubscribed.

    ``dedupe_key`` (a provider's event id, or a hash of a parsed message) makes every intake idempotent.
    """

    __tablename__ = "send_events"
    __table_args__ = (
        UniqueConstraint("workspace_id", "dedupe_key"),
        Index("ix_send_events_contact_kind", "workspace_id", "contact_id", "kind", "occurred_at"),
        Index("ix_send_events_send", "send_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    send_id: Mapped[int | None] = mapped_column(ForeignKey("campaign_sends.id", ondelete="RESTRICT"))
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id", ondelete="RESTRICT"))
    kind: Mapped[str] = mapped_column(String(16))
    occurred_at: Mapped[datetime] = mapped_column()
    recorded_at: Mapped[datetime] = mapped_column(default=utcnow)
    dedupe_key: Mapped[str] = mapped_column(String(200))
    bounce_class: Mapped[str | None] = mapped_column(String(8), default=None)
    reason: Mapped[str | None] = mapped_column(String(32), default=None)
    status: Mapped[str | None] = mapped_column(String(16), default=None)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class WebhookToken(Base):
    """A one-time token a provider signed (Mailgun): seen once, refused ever after (replay protection)."""

    __tablename__ = "webhook_tokens"
    __table_args__ = (UniqueConstraint("provider", "token"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    provider: Mapped[str] = mapped_column(String(16))
    token: Mapped[str] = mapped_column(String(200))
    seen_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
