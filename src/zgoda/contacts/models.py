"""Contacts and their identities in source systems."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, UniqueConstraint, event
from sqlalchemy.orm import Mapped, Session, UOWTransaction, mapped_column, relationship

from zgoda.core.clock import utcnow
from zgoda.core.db import Base
from zgoda.core.keys import address_hasher
from zgoda.core.tenancy import TenantMixin, workspace_key_index


class Contact(TenantMixin, Base):
    """A data subject. ``ref`` is the random reference the consent ledger hashes instead of personal data.

    An erasure blanks the personal fields and sets ``erased_at``; the row stays as a tombstone
    so the ledger's references still resolve.
    """

    __tablename__ = "contacts"
    __table_args__ = (
        UniqueConstraint("workspace_id", "email"),
        Index("ix_contacts_workspace_phone", "workspace_id", "phone"),
        Index("ix_contacts_email_hash", "email_hash"),
        workspace_key_index("contacts"),  # the ledger's events and states name a contact of their workspace
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    ref: Mapped[str] = mapped_column(String(32), unique=True)
    email: Mapped[str | None] = mapped_column(String(320))
    email_hash: Mapped[str | None] = mapped_column(String(64), default=None)  # keyed hash: suppression look-ups
    phone: Mapped[str | None] = mapped_column(String(20))
    first_name: Mapped[str | None] = mapped_column(String(200))
    last_name: Mapped[str | None] = mapped_column(String(200))
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    source_id: Mapped[int | None] = mapped_column(ForeignKey("sources.id", ondelete="RESTRICT"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    erased_at: Mapped[datetime | None] = mapped_column(default=None)
    # Art. 18 restriction of processing: no campaign reaches the contact while set
    restricted_at: Mapped[datetime | None] = mapped_column(default=None)

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


@event.listens_for(Session, "before_flush")
def _hash_addresses(session: Session, _flush: UOWTransaction, _instances: object) -> None:
    """Keep ``email_hash`` equal to the keyed hash of ``email`` for contacts written through the ORM."""
    touched = [obj for obj in (*session.new, *session.dirty) if isinstance(obj, Contact)]
    if not touched:
        return
    address_hash = address_hasher(session)
    for contact in touched:
        wanted = address_hash(contact.email) if contact.email else None
        if contact.email_hash != wanted:
            contact.email_hash = wanted
