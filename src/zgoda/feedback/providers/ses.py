"""Amazon SES bounce, complaint and delivery notifications (and event publishing) delivered through SNS.

Follows "Amazon SNS notification contents for Amazon SES" and "Contents of event data that Amazon SES
publishes to Amazon SNS". The mapping table is in docs/feedback-providers.md.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from zgoda.feedback.kinds import SEND_REF_HEADER, BounceClass, BounceReason, FeedbackKind
from zgoda.feedback.providers._fields import (
    address,
    as_object,
    class_for,
    find_status,
    iso_time,
    optional_str,
    reason_from_status,
    recipient,
    require_list,
    require_object,
    require_str,
)
from zgoda.feedback.providers.errors import WebhookRejected
from zgoda.feedback.providers.model import ProviderEvent
from zgoda.feedback.providers.refs import first_ref, ref_from_message_id, valid_ref
from zgoda.feedback.providers.sns import DEFAULT_MAX_AGE, CertificateCache, Fetch, SnsMessage, verify_sns

# bounceSubType -> (class, reason) where the subtype decides; None = look at the status code.
_PERMANENT: dict[str, tuple[BounceClass, BounceReason] | None] = {
    "General": None,
    "NoEmail": (BounceClass.HARD, BounceReason.USER_UNKNOWN),
    "Suppressed": (BounceClass.HARD, BounceReason.OTHER),  # on the SES global suppression list
    "OnAccountSuppressionList": (BounceClass.HARD, BounceReason.OTHER),
}
_TRANSIENT: dict[str, BounceReason | None] = {
    "General": None,
    "MailboxFull": BounceReason.MAILBOX_FULL,
    "MessageTooLarge": BounceReason.MESSAGE_TOO_LARGE,
    "ContentRejected": BounceReason.CONTENT_REJECTED,
    "AttachmentRejected": BounceReason.CONTENT_REJECTED,
}
SKIPPED_TYPES = frozenset({"Send", "Reject", "DeliveryDelay", "Rendering Failure", "Subscription"})


@dataclass(frozen=True)
class SesWebhookResult:
    """What one SNS POST means for us.

    ``events`` is empty unless the SNS message is a Notification carrying SES feedback. ``subscribe_url``
    is set for a verified SubscriptionConfirmation: GET it with confirm_subscription to start receiving.
    """

    message: SnsMessage
    events: list[ProviderEvent]
    subscribe_url: str | None = None


def parse_ses(
    body: bytes,
    *,
    topic_arns: Collection[str] | None = None,
    fetch: Fetch | None = None,
    cache: CertificateCache | None = None,
    max_age: timedelta = DEFAULT_MAX_AGE,
    now: datetime | None = None,
) -> SesWebhookResult:
    """Verify an SNS POST (see verify_sns) and turn the SES notification inside into events."""
    message = verify_sns(body, topic_arns=topic_arns, fetch=fetch, cache=cache, max_age=max_age, now=now)
    if message.type == "SubscriptionConfirmation":
        return SesWebhookResult(message=message, events=[], subscribe_url=message.subscribe_url)
    if message.type == "UnsubscribeConfirmation":
        return SesWebhookResult(message=message, events=[])
    return SesWebhookResult(message=message, events=parse_ses_notification(message.message, message.message_id))


def parse_ses_notification(text: str, sns_message_id: str) -> list[ProviderEvent]:
    """The events in one SES notification (the SNS ``Message``); pure, no verification.

    Plain text that is not a JSON object (SES publishes "Successfully validated SNS topic…" when an event
    destination is set up) yields no events.
    """
    if not text.lstrip().startswith("{"):
        return []
    try:
        notification = as_object(json.loads(text), "The SES notification")
    except json.JSONDecodeError as error:
        raise WebhookRejected(f"The SES notification in Message is not valid JSON ({error.msg}).") from None
    kind = notification.get("notificationType") or notification.get("eventType")
    if not isinstance(kind, str) or not kind:
        raise WebhookRejected("The SES notification has neither notificationType nor eventType.")
    if kind in SKIPPED_TYPES or kind not in _HANDLERS:
        return []
    mail = require_object(notification, "mail", "")
    context = _Context(
        notification=notification,
        sns_message_id=sns_message_id,
        provider_message_id=require_str(mail, "messageId", "mail"),
        send_ref=_send_ref(mail),
    )
    return _HANDLERS[kind](context)


@dataclass(frozen=True)
class _Context:
    notification: dict[str, Any]
    sns_message_id: str
    provider_message_id: str
    send_ref: str | None

    def event(
        self, index: int, count: int, kind: FeedbackKind, who: str, when: datetime, **extra: Any
    ) -> ProviderEvent:
        event_id = self.sns_message_id if count == 1 else f"{self.sns_message_id}:{index}"
        return ProviderEvent(
            provider="ses",
            event_id=event_id,
            kind=kind,
            recipient=who,
            occurred_at=when,
            send_ref=self.send_ref,
            provider_message_id=self.provider_message_id,
            raw=self.notification,
            **extra,
        )


def _bounces(context: _Context) -> list[ProviderEvent]:
    bounce = require_object(context.notification, "bounce", "")
    bounce_type = require_str(bounce, "bounceType", "bounce")
    subtype = optional_str(bounce, "bounceSubType", "bounce") or "General"
    when = iso_time(bounce, "timestamp", "bounce")
    items = require_list(bounce, "bouncedRecipients", "bounce")
    events = []
    for index, item in enumerate(items):
        path = f"bounce.bouncedRecipients[{index}]"
        entry = as_object(item, path)
        diagnostic = optional_str(entry, "diagnosticCode", path)
        status = find_status(optional_str(entry, "status", path), diagnostic)
        bounce_class, reason = _classify(bounce_type, subtype, status)
        events.append(
            context.event(
                index,
                len(items),
                FeedbackKind.BOUNCE,
                recipient(entry, "emailAddress", path),
                when,
                bounce_class=bounce_class,
                reason=reason,
                status=status,
                diagnostic=diagnostic,
            )
        )
    return events


def _classify(bounce_type: str, subtype: str, status: str | None) -> tuple[BounceClass, BounceReason]:
    if bounce_type == "Permanent":
        decided = _PERMANENT.get(subtype)
        if decided is not None:
            return decided
        reason = reason_from_status(status)
        return class_for(reason, status, BounceClass.HARD), reason
    if bounce_type == "Transient":
        reason_or_none = _TRANSIENT.get(subtype)
        reason = reason_or_none if reason_or_none is not None else reason_from_status(status)
        # SES says the address may work later: never a hard reason under a soft class.
        if class_for(reason, status, BounceClass.SOFT) is BounceClass.HARD:
            reason = BounceReason.OTHER
        return BounceClass.SOFT, reason
    if bounce_type == "Undetermined":
        return BounceClass.SOFT, BounceReason.OTHER
    raise WebhookRejected(f"bounce.bounceType {bounce_type!r} is not Permanent, Transient or Undetermined.")


def _complaints(context: _Context) -> list[ProviderEvent]:
    complaint = require_object(context.notification, "complaint", "")
    if optional_str(complaint, "complaintSubType", "complaint") == "OnAccountSuppressionList":
        # Not a new complaint: SES did not send because of an earlier one, possibly from another workspace's
        # mail. Recording a withdrawal here would be false evidence in this workspace's consent ledger.
        return []
    when = iso_time(complaint, "timestamp", "complaint")
    feedback_type = optional_str(complaint, "complaintFeedbackType", "complaint")
    items = require_list(complaint, "complainedRecipients", "complaint")
    return [
        context.event(
            index,
            len(items),
            FeedbackKind.COMPLAINT,
            recipient(
                as_object(item, f"complaint.complainedRecipients[{index}]"),
                "emailAddress",
                f"complaint.complainedRecipients[{index}]",
            ),
            when,
            feedback_type=feedback_type,
        )
        for index, item in enumerate(items)
    ]


def _deliveries(context: _Context) -> list[ProviderEvent]:
    delivery = require_object(context.notification, "delivery", "")
    when = iso_time(delivery, "timestamp", "delivery")
    diagnostic = optional_str(delivery, "smtpResponse", "delivery")
    items = require_list(delivery, "recipients", "delivery")
    return [
        context.event(
            index,
            len(items),
            FeedbackKind.DELIVERY,
            address(item, f"delivery.recipients[{index}]"),
            when,
            diagnostic=diagnostic,
        )
        for index, item in enumerate(items)
    ]


def _engagement(kind: FeedbackKind, key: str) -> Callable[[_Context], list[ProviderEvent]]:
    def handle(context: _Context) -> list[ProviderEvent]:
        detail = require_object(context.notification, key, "")
        when = iso_time(detail, "timestamp", key)
        destination = require_list(require_object(context.notification, "mail", ""), "destination", "mail")
        if len(destination) != 1:
            return []  # one tracking pixel, several recipients: no way to tell who opened or clicked
        return [context.event(0, 1, kind, address(destination[0], "mail.destination[0]"), when)]

    return handle


_HANDLERS: dict[str, Callable[[_Context], list[ProviderEvent]]] = {
    "Bounce": _bounces,
    "Complaint": _complaints,
    "Delivery": _deliveries,
    "Open": _engagement(FeedbackKind.OPEN, "open"),
    "Click": _engagement(FeedbackKind.CLICK, "click"),
}


def _send_ref(mail: dict[str, Any]) -> str | None:
    """From the original headers SES includes when "include original headers" is on for the identity."""
    header_ref = None
    headers = mail.get("headers")
    if isinstance(headers, list):
        for item in headers:
            if isinstance(item, dict) and str(item.get("name", "")).lower() == SEND_REF_HEADER.lower():
                header_ref = valid_ref(item.get("value"))
                if header_ref:
                    break
    common = mail.get("commonHeaders")
    message_id = common.get("messageId") if isinstance(common, dict) else None
    return first_ref(header_ref, ref_from_message_id(message_id))
