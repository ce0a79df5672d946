"""API shapes for the audit log."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel


class AuditEntryOut(BaseModel):
    id: int
    seq: int
    occurred_at: datetime
    actor: str
    actor_role: str | None
    via: str
    action: str
    object_type: str | None
    object_id: str | None
    summary: dict[str, Any]
    ip: str | None
    prev_hash: str
    hash: str


class ChainStatus(BaseModel):
    chain: str
    entries: int
    head_hash: str
    ok: bool
    first_bad_seq: int | None = None
    problem: str | None = None
