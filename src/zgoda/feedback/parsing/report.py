"""One classified piece of feedback: what an inbound message says about one recipient."""

from __future__ import annotations

from dataclasses import dataclass

from zgoda.feedback.kinds import BounceClass, BounceReason, FeedbackKind

JsonValue = str | int | None


@dataclass(frozen=True, slots=True)
class FeedbackReport:
    """What one inbound message says about one recipient (a message naming three recipients gives three).

    ``format`` names the reader that recognised the message (``dsn``, ``arf``, ``exim``, ``qmail``, ...): it is
    for people reading logs, never for rules.
    """

    kind: FeedbackKind
    recipient: str | None = None
    bounce_class: BounceClass | None = None
    reason: BounceReason | None = None
    status: str | None = None
    smtp_code: int | None = None
    diagnostic: str | None = None
    action: str | None = None
    feedback_type: str | None = None
    send_ref: str | None = None
    original_message_id: str | None = None
    reported_domain: str | None = None
    source_ip: str | None = None
    format: str | None = None

    def to_json(self) -> dict[str, JsonValue]:
        """The report as a flat JSON-ready dict; the same keys whatever the message was."""
        return {
            "kind": self.kind.value,
            "recipient": self.recipient,
            "class": self.bounce_class.value if self.bounce_class else None,
            "reason": self.reason.value if self.reason else None,
            "status": self.status,
            "smtp_code": self.smtp_code,
            "diagnostic": self.diagnostic,
            "action": self.action,
            "feedback_type": self.feedback_type,
            "send_ref": self.send_ref,
            "original_message_id": self.original_message_id,
            "reported_domain": self.reported_domain,
            "source_ip": self.source_ip,
            "format": self.format,
        }
