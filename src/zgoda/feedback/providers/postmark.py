"""Postmark webhooks: HTTP Basic credentials (or a secret path token) and the RecordType mapping.

Postmark does not sign webhooks; it lets you put credentials in the webhook URL
(``https://user:password@host/path``), which it sends as HTTP Basic auth. Check them with verify_postmark
(or put a long random token in the path and check it with verify_postmark_token) before parse_postmark.
There is no timestamp to bound replays: idempotency rests on the event ids. Mapping:
docs/feedback-providers.md.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from datetime import datetime
from typing import Any

from zgoda.feedback.kinds import BounceClass, BounceReason, FeedbackKind
from zgoda.feedback.providers._fields import (
    as_object,
    class_for,
    find_status,
    iso_time,
    load_json,
    optional_str,
    reason_from_status,
    recipient,
    require,
    require_str,
)
from zgoda.feedback.providers.errors import WebhookRejected
from zgoda.feedback.providers.model import ProviderEvent
from zgoda.feedback.providers.refs import POSTMARK_METADATA_KEY, ref_in_mapping

# Postmark bounce Type (and TypeCode) -> (kind, class, fixed reason or None for "from the status code").
# None as the whole value: not feedback about the recipient (left out).
_Mapping = tuple[FeedbackKind, BounceClass | None, BounceReason | None] | None
_BOUNCE_TYPES: dict[str, _Mapping] = {
    "HardBounce": (FeedbackKind.BOUNCE, BounceClass.HARD, None),
    "Transient": None,  # message delayed; Postmark keeps trying
    "Unsubscribe": (FeedbackKind.UNSUBSCRIBE, None, None),  # a reply asking to be removed
    "Subscribe": None,
    "AutoResponder": (FeedbackKind.AUTO_REPLY, None, None),
    "AddressChange": (FeedbackKind.AUTO_REPLY, None, None),
    "DnsError": (FeedbackKind.BOUNCE, BounceClass.SOFT, BounceReason.NETWORK),
    "SpamNotification": (FeedbackKind.BOUNCE, BounceClass.SOFT, BounceReason.SPAM_BLOCKED),
    "OpenRelayTest": None,
    "Unknown": (FeedbackKind.BOUNCE, BounceClass.SOFT, None),
    "SoftBounce": (FeedbackKind.BOUNCE, BounceClass.SOFT, None),
    "VirusNotification": (FeedbackKind.BOUNCE, BounceClass.SOFT, BounceReason.CONTENT_REJECTED),
    "ChallengeVerification": (FeedbackKind.AUTO_REPLY, None, None),
    "BadEmailAddress": (FeedbackKind.BOUNCE, BounceClass.HARD, BounceReason.USER_UNKNOWN),
    "SpamComplaint": (FeedbackKind.COMPLAINT, None, None),
    "ManuallyDeactivated": None,  # an operator's action in Postmark, not the recipient's
    "Unconfirmed": None,
    "Blocked": (FeedbackKind.BOUNCE, BounceClass.SOFT, None),
    "SMTPApiError": None,  # our request was wrong, not the address
    "InboundError": None,
    "DMARCPolicy": (FeedbackKind.BOUNCE, BounceClass.SOFT, BounceReason.AUTHENTICATION),
    "TemplateRenderingFailed": None,
}
_TYPE_CODES = {
    1: "HardBounce",
    2: "Transient",
    16: "Unsubscribe",
    32: "Subscribe",
    64: "AutoResponder",
    128: "AddressChange",
    256: "DnsError",
    512: "SpamNotification",
    1024: "OpenRelayTest",
    2048: "Unknown",
    4096: "SoftBounce",
    8192: "VirusNotification",
    16384: "ChallengeVerification",
    100000: "BadEmailAddress",
    100001: "SpamComplaint",
    100002: "ManuallyDeactivated",
    100003: "Unconfirmed",
    100006: "Blocked",
    100007: "SMTPApiError",
    100008: "InboundError",
    100009: "DMARCPolicy",
    100010: "TemplateRenderingFailed",
}
# Reasons a hard bounce may fall back to when the details carry no status code.
_DEFAULT_REASON = {"HardBounce": BounceReason.USER_UNKNOWN, "Blocked": BounceReason.SPAM_BLOCKED}


def verify_postmark(authorization: str | None, expected_user: str, expected_password: str) -> None:
    """Raise WebhookRejected unless ``authorization`` is ``Basic`` with exactly these credentials.

    Both parts are compared in constant time, and both always are, so timing tells nothing about which
    one was wrong.
    """
    if not expected_user or not expected_password:
        raise ValueError("verify_postmark needs the expected user and password (empty ones would accept anyone).")
    if not authorization:
        raise WebhookRejected("The Authorization header is missing (Postmark sends the URL's credentials as Basic).")
    scheme, _, encoded = authorization.strip().partition(" ")
    if scheme.lower() != "basic" or not encoded:
        raise WebhookRejected("The Authorization header is not HTTP Basic.")
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise WebhookRejected("The Authorization header's Basic credentials are not base64 UTF-8.") from None
    user, colon, password = decoded.partition(":")
    if not colon:
        raise WebhookRejected("The Authorization header's Basic credentials have no user:password form.")
    user_ok = hmac.compare_digest(user.encode(), expected_user.encode())
    password_ok = hmac.compare_digest(password.encode(), expected_password.encode())
    if not (user_ok & password_ok):
        raise WebhookRejected("The Postmark webhook credentials are wrong.")


def verify_postmark_token(presented: str | None, expected: str) -> None:
    """The path-token variant: raise WebhookRejected unless ``presented`` equals ``expected`` (constant time)."""
    if len(expected) < 16:
        raise ValueError("A Postmark path token must be at least 16 characters of randomness.")
    if not presented or not hmac.compare_digest(presented.encode(), expected.encode()):
        raise WebhookRejected("The Postmark webhook path token is wrong.")


def parse_postmark(body: bytes) -> list[ProviderEvent]:
    """Map one Postmark webhook POST (already authenticated by the caller); unused record types give ``[]``."""
    raw = as_object(load_json(body, "Postmark"), "The Postmark body")
    record_type = require_str(raw, "RecordType", "")
    if record_type in ("Bounce", "SpamComplaint"):
        return _bounce(raw, record_type)
    if record_type == "Delivery":
        who = recipient(raw, "Recipient", "")
        return [
            _event(
                raw,
                f"Delivery:{require_str(raw, 'MessageID', '')}:{who}",
                FeedbackKind.DELIVERY,
                who,
                iso_time(raw, "DeliveredAt", ""),
                diagnostic=optional_str(raw, "Details", ""),
            )
        ]
    if record_type == "Open":
        who = recipient(raw, "Recipient", "")
        received = require_str(raw, "ReceivedAt", "")
        event_id = f"Open:{require_str(raw, 'MessageID', '')}:{who}:{received}"
        return [_event(raw, event_id, FeedbackKind.OPEN, who, iso_time(raw, "ReceivedAt", ""))]
    if record_type == "Click":
        who = recipient(raw, "Recipient", "")
        received = require_str(raw, "ReceivedAt", "")
        link = optional_str(raw, "OriginalLink", "") or ""
        event_id = f"Click:{require_str(raw, 'MessageID', '')}:{who}:{received}:{link}"
        return [_event(raw, event_id, FeedbackKind.CLICK, who, iso_time(raw, "ReceivedAt", ""))]
    if record_type == "SubscriptionChange":
        return _subscription_change(raw)
    return []  # Inbound and record types Postmark may add later


def _bounce(raw: dict[str, Any], record_type: str) -> list[ProviderEvent]:
    bounce_type = optional_str(raw, "Type", "")
    if bounce_type is None:
        code = require(raw, "TypeCode", "")
        bounce_type = _TYPE_CODES.get(code) if isinstance(code, int) else None
        if bounce_type is None:
            raise WebhookRejected(f"TypeCode {code!r} is not a Postmark bounce type.")
    if record_type == "SpamComplaint":
        bounce_type = "SpamComplaint"
    mapping = _BOUNCE_TYPES.get(bounce_type)
    if mapping is None:
        return []
    kind, provider_class, fixed_reason = mapping
    event_id = f"{record_type}:{require(raw, 'ID', '')}"
    who = recipient(raw, "Email", "")
    when = iso_time(raw, "BouncedAt", "")
    details = optional_str(raw, "Details", "")
    if kind is not FeedbackKind.BOUNCE:
        return [_event(raw, event_id, kind, who, when, diagnostic=details)]
    status = find_status(details, optional_str(raw, "Description", ""))
    assert provider_class is not None
    reason = fixed_reason or _reason(bounce_type, status, provider_class)
    return [
        _event(
            raw,
            event_id,
            kind,
            who,
            when,
            bounce_class=provider_class,
            reason=reason,
            status=status,
            diagnostic=details,
        )
    ]


def _reason(bounce_type: str, status: str | None, provider_class: BounceClass) -> BounceReason:
    """The status code's reason if it agrees with Postmark's class; the type's default when there is no code."""
    if status is None:
        return _DEFAULT_REASON.get(bounce_type, BounceReason.OTHER)
    reason = reason_from_status(status)
    return reason if class_for(reason, status, provider_class) is provider_class else BounceReason.OTHER


def _subscription_change(raw: dict[str, Any]) -> list[ProviderEvent]:
    """Only a recipient's own unsubscribe counts: bounce and complaint suppressions come as their own
    webhooks, reactivations and operator suppressions are not the recipient's choice."""
    suppress = require(raw, "SuppressSending", "")
    if not isinstance(suppress, bool):
        raise WebhookRejected("SuppressSending must be true or false.")
    origin = optional_str(raw, "Origin", "")
    why = optional_str(raw, "SuppressionReason", "")
    if not suppress or why != "ManualSuppression" or origin != "Recipient":
        return []
    who = recipient(raw, "Recipient", "")
    changed = require_str(raw, "ChangedAt", "")
    return [
        _event(
            raw, f"SubscriptionChange:{who}:{changed}", FeedbackKind.UNSUBSCRIBE, who, iso_time(raw, "ChangedAt", "")
        )
    ]


def _event(
    raw: dict[str, Any], event_id: str, kind: FeedbackKind, who: str, when: datetime, **extra: Any
) -> ProviderEvent:
    return ProviderEvent(
        provider="postmark",
        event_id=event_id,
        kind=kind,
        recipient=who,
        occurred_at=when,
        send_ref=ref_in_mapping(raw.get("Metadata"), POSTMARK_METADATA_KEY),
        provider_message_id=optional_str(raw, "MessageID", ""),
        raw=raw,
        **extra,
    )
