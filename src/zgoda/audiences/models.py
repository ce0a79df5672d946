"""Lists (static membership, each member with the source it came from) and segments (saved filters)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from zgoda.core.clock import utcnow
from zgoda.core.db import Base
from zgoda.core.tenancy import TenantMixin


class ContactList(TenantMixin, Base):
    """A static list. A blocked list (platform enforcement) reaches nobody until the block is lifted."""

    __tablename__ = "contact_lists"
    __table_args__ = (UniqueConstraint("workspace_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(120))
    description: Mapped[str] = mapped_column(Text, default="")
    blocked_at: Mapped[datetime | None] = mapped_column(default=None)
    blocked_reason: Mapped[str | None] = mapped_column(Text, default=None)
    created_by: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ListMember(TenantMixin, Base):
    """A contact on a list, with the source the membership came from ("where is this list from?")."""

    __tablename__ = "list_members"
    __table_args__ = (
        UniqueConstraint("list_id", "contact_id"),
        Index("ix_list_members_contact", "contact_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    list_id: Mapped[int] = mapped_column(ForeignKey("contact_lists.id", ondelete="RESTRICT"))
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="RESTRICT"))
    source_id: Mapped[int | None] = mapped_column(ForeignKey("sources.id", ondelete="RESTRICT"), default=None)
    added_by: Mapped[str] = mapped_column(String(200), default="")
    added_at: Mapped[datetime] = mapped_column(default=utcnow)


class Segment(TenantMixin, Base):
    """A saved filter, evaluated when used (see :mod:`zgoda.audiences.filters` for its rules)."""

    __tablename__ = "segments"
    __table_args__ = (UniqueConstraint("workspace_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(120))
    description: Mapped[str] = mapped_column(Text, default="")
    definition: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_by: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
