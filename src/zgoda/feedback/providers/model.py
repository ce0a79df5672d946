"""The common shape of a provider event, whichever provider sent it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from zgoda.feedback.kinds import BounceClass, BounceReason, FeedbackKind

Provider = Literal["ses", "sendgrid", "mailgun", "postmark"]
PROVIDERS: tuple[Provider, ...] = ("ses", "sendgrid", "mailgun", "postmark")


@dataclass(frozen=True)
class ProviderEvent:
    """One thing a provider reports about one recipient of one message.

    ``event_id`` is the provider's own id, stable across redeliveries of the same webhook: store
    ``(provider, event_id)`` under a unique constraint (see ``dedupe_key``) and a retried or replayed
    request changes nothing. ``raw`` is the provider's JSON object for this event, kept for storage and
    audit; treat it as read-only.
    """

    provider: Provider
    event_id: str
    kind: FeedbackKind
    recipient: str
    occurred_at: datetime
    bounce_class: BounceClass | None = None
    reason: BounceReason | None = None
    status: str | None = None
    diagnostic: str | None = None
    feedback_type: str | None = None
    send_ref: str | None = None
    provider_message_id: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, hash=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.event_id:
            raise ValueError("ProviderEvent needs an event_id")
        if self.recipient != self.recipient.strip().lower() or "@" not in self.recipient:
            raise ValueError(f"ProviderEvent recipient must be a lower-cased address, not {self.recipient!r}")
        if self.occurred_at.tzinfo is None or self.occurred_at.utcoffset() != UTC.utcoffset(None):
            raise ValueError("ProviderEvent occurred_at must be an aware UTC datetime")
        if (self.bounce_class is not None or self.reason is not None) and self.kind is not FeedbackKind.BOUNCE:
            raise ValueError("Only a bounce carries a bounce class and reason")

    @property
    def dedupe_key(self) -> str:
        """``"<provider>:<event_id>"``: the idempotency key to store under a unique constraint."""
        return f"{self.provider}:{self.event_id}"


def utc(moment: datetime) -> datetime:
    """``moment`` as an aware UTC datetime (it must already be aware)."""
    return moment.astimezone(UTC)
