"""SendGrid (Twilio) Event Webhook: Signed Event Webhook verification and the event mapping.

The signature is ECDSA P-256 with SHA-256 over ``timestamp + raw body``, base64 DER in the
``X-Twilio-Email-Event-Webhook-Signature`` header; the timestamp is the
``X-Twilio-Email-Event-Webhook-Timestamp`` header; the public key is the base64 DER (or PEM) "verification
key" shown in SendGrid's Mail Settings. Mapping: docs/feedback-providers.md.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from zgoda.feedback.kinds import BounceClass, BounceReason, FeedbackKind
from zgoda.feedback.providers._fields import (
    as_object,
    class_for,
    find_status,
    header,
    load_json,
    optional_str,
    reason_from_status,
    recipient,
    require_str,
    unix_time,
    unix_value,
)
from zgoda.feedback.providers.errors import WebhookRejected
from zgoda.feedback.providers.model import ProviderEvent
from zgoda.feedback.providers.refs import REF_ARGUMENT, first_ref, ref_from_message_id, valid_ref

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
DEFAULT_WINDOW = timedelta(minutes=10)

_CLASSIFICATIONS: dict[str, BounceReason] = {
    "invalid address": BounceReason.USER_UNKNOWN,
    "mailbox unavailable": BounceReason.MAILBOX_DISABLED,
    "technical": BounceReason.NETWORK,
    "technical failure": BounceReason.NETWORK,
    "content": BounceReason.CONTENT_REJECTED,
    "reputation": BounceReason.SPAM_BLOCKED,
    "frequency or volume": BounceReason.RATE_LIMITED,
    "frequency or volume too high": BounceReason.RATE_LIMITED,
}
_KINDS = {
    "delivered": FeedbackKind.DELIVERY,
    "spamreport": FeedbackKind.COMPLAINT,
    "unsubscribe": FeedbackKind.UNSUBSCRIBE,
    "group_unsubscribe": FeedbackKind.UNSUBSCRIBE,
    "open": FeedbackKind.OPEN,
    "click": FeedbackKind.CLICK,
}
SKIPPED_EVENTS = frozenset({"processed", "deferred", "group_resubscribe"})


def load_public_key(public_key: str) -> ec.EllipticCurvePublicKey:
    """SendGrid's verification key (base64 DER SubjectPublicKeyInfo, or PEM) as a P-256 public key."""
    try:
        if "BEGIN PUBLIC KEY" in public_key:
            key = serialization.load_pem_public_key(public_key.encode("ascii"))
        else:
            key = serialization.load_der_public_key(base64.b64decode(public_key.strip(), validate=True))
    except (ValueError, binascii.Error, UnsupportedAlgorithm):
        raise ValueError("The SendGrid verification key is not a base64 DER or PEM public key.") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("The SendGrid verification key is not an ECDSA P-256 key.")
    return key


def verify_sendgrid(
    body: bytes,
    *,
    public_key: str | ec.EllipticCurvePublicKey,
    signature: str | None,
    timestamp: str | None,
    window: timedelta = DEFAULT_WINDOW,
    now: datetime | None = None,
) -> None:
    """Raise WebhookRejected unless ``signature`` signs ``timestamp + body`` and ``timestamp`` is fresh."""
    if not signature:
        raise WebhookRejected(f"The {SIGNATURE_HEADER} header is missing.")
    if not timestamp:
        raise WebhookRejected(f"The {TIMESTAMP_HEADER} header is missing.")
    if not timestamp.strip().isdigit():
        raise WebhookRejected(f"The {TIMESTAMP_HEADER} header is not a Unix time: {timestamp!r}.")
    signed_at = unix_value(timestamp.strip(), TIMESTAMP_HEADER)
    current = (now or datetime.now(UTC)).astimezone(UTC)
    if abs(current - signed_at) > window:
        raise WebhookRejected(f"The SendGrid signature time {signed_at.isoformat()} is outside the {window} window.")
    try:
        der = base64.b64decode(signature.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise WebhookRejected(f"The {SIGNATURE_HEADER} header is not base64.") from None
    key = load_public_key(public_key) if isinstance(public_key, str) else public_key
    try:
        key.verify(der, timestamp.encode("ascii") + body, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise WebhookRejected("The SendGrid signature does not match the body and timestamp.") from None


def parse_sendgrid(
    body: bytes,
    headers: Mapping[str, str],
    *,
    public_key: str | ec.EllipticCurvePublicKey,
    window: timedelta = DEFAULT_WINDOW,
    now: datetime | None = None,
) -> list[ProviderEvent]:
    """Verify a SendGrid Event Webhook POST and map its batch of events (unknown types are left out)."""
    verify_sendgrid(
        body,
        public_key=public_key,
        signature=header(headers, SIGNATURE_HEADER),
        timestamp=header(headers, TIMESTAMP_HEADER),
        window=window,
        now=now,
    )
    batch = load_json(body, "SendGrid")
    if not isinstance(batch, list):
        raise WebhookRejected("The SendGrid body must be a JSON array of events.")
    events: list[ProviderEvent] = []
    for index, item in enumerate(batch):
        event = _event(as_object(item, f"events[{index}]"), f"events[{index}]")
        if event is not None:
            events.append(event)
    return events


def _event(raw: dict[str, Any], path: str) -> ProviderEvent | None:
    name = require_str(raw, "event", path)
    details: dict[str, Any] | None
    if name == "bounce":
        details = _bounce(raw, path)
    elif name == "dropped":
        details = _dropped(raw, path)
    elif name in _KINDS:
        details = {"kind": _KINDS[name]}
        if name == "delivered":
            details["diagnostic"] = optional_str(raw, "response", path)
    else:
        return None  # processed, deferred, group_resubscribe and types SendGrid may add later
    if details is None:
        return None
    return ProviderEvent(
        provider="sendgrid",
        event_id=require_str(raw, "sg_event_id", path),
        recipient=recipient(raw, "email", path),
        occurred_at=unix_time(raw, "timestamp", path),
        send_ref=first_ref(valid_ref(raw.get(REF_ARGUMENT)), ref_from_message_id(raw.get("smtp-id"))),
        provider_message_id=optional_str(raw, "sg_message_id", path),
        raw=raw,
        **details,
    )


def _bounce(raw: dict[str, Any], path: str) -> dict[str, Any]:
    diagnostic = optional_str(raw, "reason", path)
    status = find_status(optional_str(raw, "status", path), diagnostic)
    bounce_type = (optional_str(raw, "type", path) or "bounce").lower()
    if bounce_type not in ("bounce", "blocked"):
        raise WebhookRejected(f"{path}.type {bounce_type!r} is not bounce or blocked.")
    classification = (optional_str(raw, "bounce_classification", path) or "").lower()
    reason = _CLASSIFICATIONS.get(classification) or reason_from_status(status)
    default = BounceClass.HARD if bounce_type == "bounce" else BounceClass.SOFT
    bounce_class = class_for(reason, status, default)
    return {
        "kind": FeedbackKind.BOUNCE,
        "bounce_class": bounce_class,
        "reason": reason,
        "status": status,
        "diagnostic": diagnostic,
    }


def _dropped(raw: dict[str, Any], path: str) -> dict[str, Any] | None:
    """SendGrid did not send because of its own suppression lists; only address-level causes count."""
    why = (optional_str(raw, "reason", path) or "").lower()
    if why == "bounced address":
        reason = BounceReason.OTHER
    elif why in ("invalid", "invalid address"):
        reason = BounceReason.USER_UNKNOWN
    else:
        # Unsubscribed Address, Spam Reporting Address, Spam Content, quotas…: SendGrid's lists are shared
        # by every workspace on the account, so these are no evidence about this workspace's recipient.
        return None
    return {
        "kind": FeedbackKind.BOUNCE,
        "bounce_class": BounceClass.HARD,
        "reason": reason,
        "diagnostic": optional_str(raw, "reason", path),
    }
