"""Sources, purposes, notices, the consent ledger and the materialised consent state."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from zgoda.core.chain import ChainedEntry
from zgoda.core.clock import utcnow
from zgoda.core.db import Base
from zgoda.core.tenancy import TenantMixin, same_workspace_key, workspace_key_index


class SourceKind(StrEnum):
    WEB_FORM = "web_form"
    SHOP = "shop"
    CRM = "crm"
    CSV_EXPORT = "csv_export"
    API = "api"
    MANUAL = "manual"


class Channel(StrEnum):
    EMAIL = "email"
    SMS = "sms"
    PHONE = "phone"
    NONE = "none"


class EventType(StrEnum):
    GRANT = "grant"
    CONFIRM = "confirm"  # double opt-in confirmed
    WITHDRAW = "withdraw"
    EXPIRE = "expire"
    REFRESH = "refresh"


class LegalBasis(StrEnum):
    CONSENT = "consent"
    LEGITIMATE_INTEREST = "legitimate_interest"
    CONTRACT = "contract"
    UNKNOWN = "unknown"


class Method(StrEnum):
    WEB_FORM = "web_form"
    DOUBLE_OPT_IN = "double_opt_in"
    IMPORT = "import"
    API = "api"
    PREFERENCE_CENTRE = "preference_centre"
    UNSUBSCRIBE_LINK = "unsubscribe_link"
    ONE_CLICK = "one_click"
    COMPLAINT = "complaint"
    DSR = "dsr"
    OPERATOR = "operator"


class ConsentStatus(StrEnum):
    GRANTED = "granted"
    PENDING = "pending"  # awaiting double opt-in
    WITHDRAWN = "withdrawn"
    EXPIRED = "expired"
    NONE = "none"


class Source(TenantMixin, Base):
    """Where contacts come from, and the controller's statement of how consent is collected there."""

    __tablename__ = "sources"
    __table_args__ = (UniqueConstraint("workspace_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(120))
    kind: Mapped[str] = mapped_column(String(16))
    description: Mapped[str] = mapped_column(Text, default="")
    attestation: Mapped[str] = mapped_column(Text, default="")
    attested_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    attested_by: Mapped[str | None] = mapped_column(String(200))
    attested_at: Mapped[datetime | None] = mapped_column(default=None)
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    evidence_files: Mapped[list[SourceEvidence]] = relationship(back_populates="source", order_by="SourceEvidence.id")


class SourceEvidence(TenantMixin, Base):
    """A file proving how a source collects consent (a form screenshot, a contract); stored by SHA-256."""

    __tablename__ = "source_evidence"

    id: Mapped[int] = mapped_column(primary_key=True)
    source_id: Mapped[int] = mapped_column(ForeignKey("sources.id", ondelete="RESTRICT"), index=True)
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(100))
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(Integer)
    uploaded_by: Mapped[str] = mapped_column(String(200))
    uploaded_at: Mapped[datetime] = mapped_column(default=utcnow)

    source: Mapped[Source] = relationship(back_populates="evidence_files")


class Purpose(TenantMixin, Base):
    """A consent type, bound to one channel (PKE 2024 art. 398 wants one consent per channel)."""

    __tablename__ = "purposes"
    __table_args__ = (
        UniqueConstraint("workspace_id", "key"),
        workspace_key_index("purposes"),  # the ledger's events and states name a purpose of their workspace
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    channel: Mapped[str] = mapped_column(String(8))
    description: Mapped[str] = mapped_column(Text, default="")
    validity_days: Mapped[int | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    notices: Mapped[list[Notice]] = relationship(back_populates="purpose", order_by="Notice.id")


class Notice(TenantMixin, Base):
    """The exact text shown when asking, one version per language; immutable once an event cites it."""

    __tablename__ = "notices"
    __table_args__ = (UniqueConstraint("purpose_id", "language", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    purpose_id: Mapped[int] = mapped_column(ForeignKey("purposes.id", ondelete="RESTRICT"), index=True)
    language: Mapped[str] = mapped_column(String(16))
    version: Mapped[int] = mapped_column(Integer)
    title: Mapped[str] = mapped_column(String(200))
    text: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    first_used_at: Mapped[datetime | None] = mapped_column(default=None)

    purpose: Mapped[Purpose] = relationship(back_populates="notices")


LEDGER_FIELDS = (
    "workspace_id",
    "contact_ref",
    "purpose_id",
    "event_type",
    "requires_confirmation",
    "legal_basis",
    "method",
    "source_id",
    "notice_id",
    "notice_sha256",
    "occurred_at",
    "recorded_at",
    "actor",
    "reference",
    "evidence_digest",
)


class ConsentEvent(TenantMixin, ChainedEntry, Base):
    """One consent event. Append-only and hash-chained per workspace.

    The hash covers a random per-contact reference, never the address itself, and only
    a salted digest of the evidence (IP, user agent, ...), which lives in an erasable
    table: an erasure removes the personal data and the chain still verifies.
    """

    __tablename__ = "consent_events"
    __table_args__ = (
        UniqueConstraint("workspace_id", "seq"),
        # not occurred_at too: a pair has a handful of events, sorted or filtered in no time, and every
        # batch writes this index at random places (on SQLite the 26-byte timestamp tripled its pages)
        Index("ix_consent_events_contact_purpose", "contact_id", "purpose_id"),
        same_workspace_key("contact_id", "contacts"),
        same_workspace_key("purpose_id", "purposes"),
    )
    workspace_index: ClassVar[bool] = False  # uq (workspace_id, seq) starts with it
    # the contact's key (contact_id, workspace_id) proves the workspace exists: one check an event fewer
    workspace_foreign_key: ClassVar[bool] = False
    chain_name: ClassVar[str] = "ledger"
    chain_lock_id: ClassVar[int] = 3
    chain_fields: ClassVar[tuple[str, ...]] = LEDGER_FIELDS

    id: Mapped[int] = mapped_column(primary_key=True)
    contact_id: Mapped[int] = mapped_column()
    contact_ref: Mapped[str] = mapped_column(String(32))
    purpose_id: Mapped[int] = mapped_column()
    event_type: Mapped[str] = mapped_column(String(16))
    requires_confirmation: Mapped[bool] = mapped_column(Boolean, default=False)
    legal_basis: Mapped[str] = mapped_column(String(24))
    method: Mapped[str] = mapped_column(String(24))
    source_id: Mapped[int | None] = mapped_column(ForeignKey("sources.id", ondelete="RESTRICT"))
    notice_id: Mapped[int | None] = mapped_column(ForeignKey("notices.id", ondelete="RESTRICT"))
    notice_sha256: Mapped[str | None] = mapped_column(String(64))
    occurred_at: Mapped[datetime] = mapped_column()
    recorded_at: Mapped[datetime] = mapped_column()
    actor: Mapped[str] = mapped_column(String(200))
    actor_user_id: Mapped[int | None] = mapped_column()
    reference: Mapped[str | None] = mapped_column(String(120))
    evidence_digest: Mapped[str | None] = mapped_column(String(64))


class ConsentEvidence(TenantMixin, Base):
    """The personal part of an event's evidence, kept apart so an erasure can delete it.

    ``digest`` = SHA-256 of ``salt + "\\n" + canonical JSON`` of the fields; the event's hash covers it.
    """

    __tablename__ = "consent_evidence"
    workspace_index: ClassVar[bool] = False  # read by event_id only; workspaces are never deleted

    event_id: Mapped[int] = mapped_column(ForeignKey("consent_events.id", ondelete="RESTRICT"), primary_key=True)
    salt: Mapped[str] = mapped_column(String(32))
    ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(1000))
    page_url: Mapped[str | None] = mapped_column(String(2048))
    file_sha256: Mapped[str | None] = mapped_column(String(64))
    file_row: Mapped[int | None] = mapped_column()
    note: Mapped[str | None] = mapped_column(Text)


class ConsentState(TenantMixin, Base):
    """Current consent per (contact, purpose): always equal to a replay of the ledger."""

    __tablename__ = "consent_states"
    __table_args__ = (
        UniqueConstraint("contact_id", "purpose_id"),
        Index("ix_consent_states_purpose_status", "workspace_id", "purpose_id", "status"),
        same_workspace_key("contact_id", "contacts"),
        same_workspace_key("purpose_id", "purposes"),
    )
    workspace_index: ClassVar[bool] = False  # ix_consent_states_purpose_status starts with it
    workspace_foreign_key: ClassVar[bool] = False  # implied by the contact's key, as on the events

    id: Mapped[int] = mapped_column(primary_key=True)
    contact_id: Mapped[int] = mapped_column()
    purpose_id: Mapped[int] = mapped_column()
    status: Mapped[str] = mapped_column(String(16))
    legal_basis: Mapped[str] = mapped_column(String(24))
    event_id: Mapped[int] = mapped_column(ForeignKey("consent_events.id", ondelete="RESTRICT"))
    decided_at: Mapped[datetime] = mapped_column()
    last_occurred_at: Mapped[datetime] = mapped_column()
    expires_at: Mapped[datetime | None] = mapped_column(default=None)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
