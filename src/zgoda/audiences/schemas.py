"""API shapes for lists (members and where they came from), segments, and the audience preview."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from zgoda.accounts.schemas import StrictInput
from zgoda.audiences.eligibility import Exclusion

# What the pages say for each reason a contact of the audience gets no message.
EXCLUSION_LABELS: dict[str, str] = {
    Exclusion.NO_ADDRESS: "No email address (or erased)",
    Exclusion.RESTRICTED: "Processing restricted (data-subject request)",
    Exclusion.WORKSPACE_SUSPENDED: "Workspace suspended by the platform",
    Exclusion.LIST_BLOCKED: "List blocked by the platform",
    Exclusion.SUPPRESSED: "Suppressed (bounce, complaint, erasure)",
    Exclusion.NO_CONSENT: "No consent for this purpose",
    Exclusion.CONSENT_PENDING: "Consent awaiting double opt-in",
    Exclusion.CONSENT_WITHDRAWN: "Consent withdrawn",
    Exclusion.CONSENT_EXPIRED: "Consent expired",
    Exclusion.SOFT_OPT_IN_OFF: "Soft opt-in only, and it is switched off",
}


# --- lists ------------------------------------------------------------------------------------


class ListCreate(StrictInput):
    name: str = Field(min_length=1, max_length=120)
    description: str = Field(default="", max_length=4000)


class ListOut(BaseModel):
    id: int
    name: str
    description: str
    members: int
    blocked: bool
    blocked_reason: str | None
    created_by: str
    created_at: datetime


class ListSourceOut(BaseModel):
    """How many of a list's members came from one source, and whether the owner attested it."""

    source_id: int | None
    name: str
    kind: str | None
    attested: bool
    members: int


class ListDetailOut(ListOut):
    sources: list[ListSourceOut] = Field(description="Where the members came from, largest source first.")


class MembersAdd(StrictInput):
    """Contacts to put on the list, by id (optionally naming the source), or a segment's members now."""

    contact_ids: list[int] = Field(default_factory=list, max_length=10_000)
    source_id: int | None = Field(default=None, description="Where these memberships came from.")
    segment_id: int | None = Field(default=None, description="Copy this segment's current members (a snapshot).")


class MembersRemove(StrictInput):
    contact_ids: list[int] = Field(min_length=1, max_length=10_000)


class MembersAdded(BaseModel):
    added: int
    members: int


class MembersRemoved(BaseModel):
    removed: int
    members: int


class MemberOut(BaseModel):
    contact_id: int
    email: str | None
    first_name: str | None
    last_name: str | None
    source_id: int | None
    source: str | None
    added_by: str
    added_at: datetime


class MemberPage(BaseModel):
    items: list[MemberOut]
    total: int
    limit: int
    offset: int


# --- segments ---------------------------------------------------------------------------------


class SegmentCreate(StrictInput):
    name: str = Field(min_length=1, max_length=120)
    description: str = Field(default="", max_length=4000)
    definition: dict[str, Any] = Field(description='{"match": "all"|"any", "rules": [...]} (docs/audiences.md).')


class SegmentUpdate(StrictInput):
    """A new name and/or definition; an absent field stays as it is."""

    name: str | None = Field(default=None, min_length=1, max_length=120)
    definition: dict[str, Any] | None = None


class SegmentOut(BaseModel):
    id: int
    name: str
    description: str
    definition: dict[str, Any]
    created_by: str
    created_at: datetime
    updated_at: datetime


class SegmentDetailOut(SegmentOut):
    matching: int = Field(description="How many contacts the definition matches now.")


class SegmentCountIn(StrictInput):
    definition: dict[str, Any]


class SegmentCountOut(BaseModel):
    count: int


# --- the audience preview ---------------------------------------------------------------------


class AudiencePreviewIn(StrictInput):
    purpose: str = Field(min_length=1, max_length=64, description="The purpose key, e.g. email_marketing.")
    list_id: int | None = None
    segment_id: int | None = None
    consent_request: bool = Field(
        default=False, description="Count as a consent request would: pending double opt-ins are reached too."
    )


class AudiencePreviewOut(BaseModel):
    """How many a campaign for the purpose would reach now, and why not the rest (one reason each)."""

    purpose: str
    total: int
    eligible: int
    excluded: dict[str, int]
