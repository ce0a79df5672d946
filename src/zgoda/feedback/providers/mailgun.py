"""Mailgun webhooks (the current JSON ones): signature, freshness, one-time token, and the event mapping.

Mailgun signs ``timestamp + token`` (not the body) with HMAC-SHA256 under the account's webhook signing key
and posts ``{"signature": {...}, "event-data": {...}}``. Because the body is not signed, the token is the
replay defence: each may be accepted once. Mapping: docs/feedback-providers.md.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from zgoda.feedback.kinds import BounceClass, BounceReason, FeedbackKind
from zgoda.feedback.providers._fields import (
    as_object,
    class_for,
    find_status,
    load_json,
    optional_str,
    reason_from_status,
    recipient,
    require_object,
    require_str,
    unix_time,
    unix_value,
)
from zgoda.feedback.providers.errors import WebhookRejected
from zgoda.feedback.providers.model import ProviderEvent
from zgoda.feedback.providers.refs import REF_ARGUMENT, first_ref, ref_from_message_id, ref_in_mapping

# Mailgun retries a webhook for 8 hours (5 min … 4 h) and, as far as is known, resends the original
# signature block, so a short window would drop retried events. The one-time token stops replays inside it:
# keep seen tokens for at least this long.
DEFAULT_WINDOW = timedelta(hours=8, minutes=30)
FUTURE_SKEW = timedelta(minutes=5)

SeenToken = Callable[[str], bool]

_KINDS = {
    "delivered": FeedbackKind.DELIVERY,
    "complained": FeedbackKind.COMPLAINT,
    "unsubscribed": FeedbackKind.UNSUBSCRIBE,
    "opened": FeedbackKind.OPEN,
    "clicked": FeedbackKind.CLICK,
}


def mailgun_signature(signing_key: str, timestamp: str, token: str) -> str:
    """The hex HMAC-SHA256 Mailgun sends for ``timestamp`` and ``token``."""
    return hmac.new(signing_key.encode("utf-8"), f"{timestamp}{token}".encode(), hashlib.sha256).hexdigest()


def verify_mailgun(
    *,
    signing_key: str,
    timestamp: str,
    token: str,
    signature: str,
    seen_token: SeenToken | None,
    window: timedelta = DEFAULT_WINDOW,
    now: datetime | None = None,
) -> None:
    """Raise WebhookRejected unless the signature matches, the timestamp is fresh and the token is new.

    ``seen_token(token)`` must return True when the token was accepted before, and remember it otherwise
    (atomically, ideally in the transaction that stores the events). It is asked last, so forged or stale
    requests never reach the token store. ``None`` skips the token check (only for callers that do it
    themselves after parsing, as parse_mailgun does).
    """
    expected = mailgun_signature(signing_key, timestamp, token)
    if not hmac.compare_digest(expected.encode("ascii"), signature.strip().lower().encode("ascii", "replace")):
        raise WebhookRejected("The Mailgun signature does not match its timestamp and token.")
    signed_at = unix_value(timestamp, "signature.timestamp")
    current = (now or datetime.now(UTC)).astimezone(UTC)
    if current - signed_at > window:
        raise WebhookRejected(f"The Mailgun signature time {signed_at.isoformat()} is older than {window}.")
    if signed_at - current > FUTURE_SKEW:
        raise WebhookRejected(f"The Mailgun signature time {signed_at.isoformat()} is in the future.")
    if seen_token is not None and seen_token(token):
        raise WebhookRejected("The Mailgun token was already used: a replayed request.")


def parse_mailgun(
    body: bytes,
    *,
    signing_key: str,
    seen_token: SeenToken,
    window: timedelta = DEFAULT_WINDOW,
    now: datetime | None = None,
) -> list[ProviderEvent]:
    """Verify a Mailgun webhook POST and map its event; an event type we do not use gives ``[]``.

    The token is offered to ``seen_token`` only after the whole payload has been read, so a request
    rejected as malformed does not use up its token.
    """
    payload = as_object(load_json(body, "Mailgun"), "The Mailgun body")
    block = require_object(payload, "signature", "")
    raw_timestamp = block.get("timestamp")
    if isinstance(raw_timestamp, int) and not isinstance(raw_timestamp, bool):
        timestamp = str(raw_timestamp)  # Mailgun documents a string; some clients post a number
    else:
        timestamp = require_str(block, "timestamp", "signature")
    token = require_str(block, "token", "signature")
    verify_mailgun(
        signing_key=signing_key,
        timestamp=timestamp,
        token=token,
        signature=require_str(block, "signature", "signature"),
        seen_token=None,
        window=window,
        now=now,
    )
    data = require_object(payload, "event-data", "")
    events = _events(data)
    if seen_token(token):
        raise WebhookRejected("The Mailgun token was already used: a replayed request.")
    return events


def _events(data: dict[str, Any]) -> list[ProviderEvent]:
    path = "event-data"
    name = require_str(data, "event", path)
    if name == "failed":
        details = _failure(data)
    elif name in _KINDS:
        details = {"kind": _KINDS[name]}
        if name == "delivered":
            status = data.get("delivery-status")
            if isinstance(status, dict):
                details["diagnostic"] = optional_str(status, "message", f"{path}.delivery-status")
    else:
        return []  # accepted, rejected, stored, list events…
    if details is None:
        return []
    message = data.get("message")
    headers = message.get("headers") if isinstance(message, dict) else None
    message_id = optional_str(headers, "message-id", f"{path}.message.headers") if isinstance(headers, dict) else None
    return [
        ProviderEvent(
            provider="mailgun",
            event_id=require_str(data, "id", path),
            recipient=recipient(data, "recipient", path),
            occurred_at=unix_time(data, "timestamp", path),
            send_ref=first_ref(
                ref_in_mapping(data.get("user-variables"), REF_ARGUMENT), ref_from_message_id(message_id)
            ),
            provider_message_id=message_id,
            raw=data,
            **details,
        )
    ]


def _failure(data: dict[str, Any]) -> dict[str, Any] | None:
    path = "event-data"
    severity = require_str(data, "severity", path)
    if severity == "temporary":
        return None  # Mailgun keeps retrying; when it gives up it reports a permanent failure (reason "old")
    if severity != "permanent":
        raise WebhookRejected(f"{path}.severity {severity!r} is not permanent or temporary.")
    why = optional_str(data, "reason", path) or "generic"
    if why in ("suppress-complaint", "suppress-unsubscribe"):
        return None  # Mailgun's own lists, shared by the whole account: no evidence about this send
    status_block = data.get("delivery-status")
    status_block = as_object(status_block, f"{path}.delivery-status") if status_block is not None else {}
    message = optional_str(status_block, "message", f"{path}.delivery-status")
    description = optional_str(status_block, "description", f"{path}.delivery-status")
    status = find_status(optional_str(status_block, "enhanced-code", f"{path}.delivery-status"), message, description)
    code = optional_str(status_block, "code", f"{path}.delivery-status")
    if why == "old":
        reason, bounce_class = BounceReason.EXPIRED, BounceClass.SOFT
    elif why == "suppress-bounce":
        reason, bounce_class = BounceReason.OTHER, BounceClass.HARD
    else:
        reason = reason_from_status(status)
        smtp_class = (status or code or "5")[0]
        bounce_class = class_for(reason, status, BounceClass.SOFT if smtp_class == "4" else BounceClass.HARD)
    return {
        "kind": FeedbackKind.BOUNCE,
        "bounce_class": bounce_class,
        "reason": reason,
        "status": status,
        "diagnostic": message or description,
    }
