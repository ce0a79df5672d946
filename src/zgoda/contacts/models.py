"""Contacts and their identities in source systems."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from zgoda.core.clock import utcnow
from zgoda.core.db import Base
from zgoda.core.tenancy import TenantMixin


class Contact(TenantMixin, Base):
    """A data subject. ``ref`` is the random reference the consent ledger hashes instead of personal data.

    An erasure blanks the personal fields and sets ``erased_at``; the row stays as a tombstone
    so the ledger's references still resolve.
    """

    __tablename__ = "contacts"
    __table_args__ = (
        UniqueConstraint("workspace_id", "email"),
        Index("ix_contacts_workspace_phone", "workspace_id", "phone"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    ref: Mapped[str] = mapped_column(String(32), unique=True)
    email: Mapped[str | None] = mapped_column(String(320))
    phone: Mapped[str | None] = mapped_column(String(20))
    first_name: Mapped[str | None] = mapped_column(String(200))
    last_name: Mapped[str | None] = mapped_column(String(200))
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    source_id: Mapped[int | None] = mapped_column(ForeignKey("sources.id", ondelete="RESTRICT"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    erased_at: Mapped[datetime | None] = mapped_column(default=None)

    identities: Mapped[list[ContactIdentity]] = relationship(back_populates="contact", order_by="ContactIdentity.id")

    @property
    def display_name(self) -> str:
        name = " ".join(part for part in (self.first_name, self.last_name) if part)
        return name or self.email or self.phone or f"contact {self.id}"


class ContactIdentity(TenantMixin, Base):
    """The contact's id in one source system (shop customer number, CRM id)."""

    __tablename__ = "contact_identities"
    __table_args__ = (UniqueConstraint("workspace_id", "source_id", "external_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="RESTRICT"), index=True)
    source_id: Mapped[int] = mapped_column(ForeignKey("sources.id", ondelete="RESTRICT"))
    external_id: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    contact: Mapped[Contact] = relationship(back_populates="identities")
