"""API shapes for the staff side of feedback: suppressions, campaign figures, a contact's messages, settings."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from zgoda.accounts.schemas import StrictInput

# Reasons an operator may give by hand; "erasure" is set only by fulfilling an erasure request.
ManualReason = Literal["operator", "hard_bounce", "soft_bounces", "complaint", "unsubscribe"]

# --- suppressions -----------------------------------------------------------------------------


class SuppressionIn(StrictInput):
    """An address to put on the workspace's suppression list (kept only as a keyed hash and a hint)."""

    address: str = Field(min_length=3, max_length=320)
    reason: ManualReason = "operator"
    detail: str = Field(default="", max_length=1000, description="Why, for the next person who reads the list.")


class SuppressionRemoveIn(StrictInput):
    note: str = Field(default="", max_length=1000, description="Why the entry comes off (kept in the audit log).")


class SuppressionOut(BaseModel):
    """An entry as staff see it: the hint (``j***@example.com``), never the address."""

    id: int
    hint: str | None
    reason: str
    detail: str
    created_by: str
    created_at: datetime


class SuppressionPage(BaseModel):
    items: list[SuppressionOut]
    total: int
    limit: int
    offset: int


# --- campaign feedback ------------------------------------------------------------------------


class BouncesOut(BaseModel):
    hard: int
    soft: int


class RatesOut(BaseModel):
    """Shares of the messages sent (null while nothing was sent)."""

    bounce_rate: float | None
    complaint_rate: float | None
    unsubscribe_rate: float | None


class CampaignFeedbackOut(BaseModel):
    """What came back for one campaign, each figure counting sends (a send bounced twice counts once)."""

    campaign_id: int
    sent: int
    delivered: int
    bounced: BouncesOut
    bounce_reasons: dict[str, int] = Field(description='By "class:reason", e.g. {"hard:user_unknown": 2}.')
    complaints: int
    unsubscribes: int
    opens: int = Field(description="Sends with a recorded open; only sends tracked with profiling consent count.")
    clicks: int = Field(description="Sends with a recorded click; only sends tracked with profiling consent count.")
    rates: RatesOut


# --- a contact's messages ---------------------------------------------------------------------


class SendEventOut(BaseModel):
    id: int
    kind: str
    occurred_at: datetime
    bounce_class: str | None
    reason: str | None
    status: str | None
    via: str | None
    detail: dict[str, Any]


class ContactSendOut(BaseModel):
    """One message of one campaign to the contact, with what happened to it, newest event first."""

    send_id: int
    campaign_id: int
    campaign_name: str
    status: str
    reason: str | None
    smtp_reply: str | None
    sent_at: datetime | None
    created_at: datetime
    events: list[SendEventOut]


class ContactEventsPage(BaseModel):
    items: list[ContactSendOut]
    total: int
    limit: int
    offset: int


# --- settings ---------------------------------------------------------------------------------


class FeedbackSettingsIn(StrictInput):
    """The whole soft-bounce rule (PUT replaces it)."""

    soft_bounce_limit: int = Field(ge=1, le=20, description="Soft bounces that suppress the address ...")
    soft_bounce_days: int = Field(ge=1, le=365, description="... within this many days.")


class FeedbackSettingsOut(BaseModel):
    soft_bounce_limit: int
    soft_bounce_days: int
