"""The audit log: who did what, where and when; append-only and hash-chained."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import JSON, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from zgoda.core.chain import ChainedEntry
from zgoda.core.db import Base
from zgoda.core.tenancy import TenantMixin

AUDIT_FIELDS = (
    "occurred_at",
    "actor",
    "actor_user_id",
    "actor_role",
    "via",
    "action",
    "object_type",
    "object_id",
    "summary",
    "ip",
)


class _AuditColumns:
    occurred_at: Mapped[datetime] = mapped_column()
    actor: Mapped[str] = mapped_column(String(200))
    actor_user_id: Mapped[int | None] = mapped_column()
    actor_role: Mapped[str | None] = mapped_column(String(32))
    via: Mapped[str] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(64), index=True)
    object_type: Mapped[str | None] = mapped_column(String(64))
    object_id: Mapped[str | None] = mapped_column(String(64))
    summary: Mapped[dict[str, Any]] = mapped_column(JSON)
    ip: Mapped[str | None] = mapped_column(String(64))


class AuditEntry(TenantMixin, _AuditColumns, ChainedEntry, Base):
    """One action in one workspace. Summaries name objects by id, never subjects' personal data."""

    __tablename__ = "audit_entries"
    __table_args__ = (UniqueConstraint("workspace_id", "seq"),)
    chain_name: ClassVar[str] = "audit"
    chain_lock_id: ClassVar[int] = 1
    chain_fields: ClassVar[tuple[str, ...]] = ("workspace_id", *AUDIT_FIELDS)

    id: Mapped[int] = mapped_column(primary_key=True)


class PlatformAuditEntry(_AuditColumns, ChainedEntry, Base):
    """An action outside any workspace: users created, sign-ins, platform admin work."""

    __tablename__ = "platform_audit_entries"
    __table_args__ = (UniqueConstraint("seq"),)
    chain_name: ClassVar[str] = "platform_audit"
    chain_lock_id: ClassVar[int] = 2
    chain_fields: ClassVar[tuple[str, ...]] = AUDIT_FIELDS
    chain_key_field: ClassVar[str | None] = None

    id: Mapped[int] = mapped_column(primary_key=True)
