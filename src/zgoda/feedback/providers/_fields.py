"""Reading provider JSON strictly: every missing or mistyped field is a WebhookRejected naming its path."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from zgoda.feedback.kinds import BounceClass, BounceReason
from zgoda.feedback.providers.errors import WebhookRejected

_STATUS = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")


def load_json(body: bytes, what: str) -> Any:
    """The JSON document in ``body``; malformed JSON or bytes that are not UTF-8 are rejected."""
    try:
        return json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise WebhookRejected(f"The {what} body is not UTF-8.") from None
    except json.JSONDecodeError as error:
        raise WebhookRejected(f"The {what} body is not valid JSON ({error.msg} at position {error.pos}).") from None


def as_object(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise WebhookRejected(f"{path} must be a JSON object.")
    return value


def require(obj: Mapping[str, Any], key: str, path: str) -> Any:
    value = obj.get(key)
    if value is None:
        raise WebhookRejected(f"{_join(path, key)} is missing.")
    return value


def require_str(obj: Mapping[str, Any], key: str, path: str) -> str:
    value = require(obj, key, path)
    if not isinstance(value, str) or not value.strip():
        raise WebhookRejected(f"{_join(path, key)} must be a non-empty string.")
    return value


def require_object(obj: Mapping[str, Any], key: str, path: str) -> dict[str, Any]:
    return as_object(require(obj, key, path), _join(path, key))


def require_list(obj: Mapping[str, Any], key: str, path: str) -> list[Any]:
    value = require(obj, key, path)
    if not isinstance(value, list) or not value:
        raise WebhookRejected(f"{_join(path, key)} must be a non-empty list.")
    return value


def optional_str(obj: Mapping[str, Any], key: str, path: str) -> str | None:
    """A string field that may be absent or null; any other type is rejected; blank becomes None."""
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise WebhookRejected(f"{_join(path, key)} must be a string.")
    return value.strip() or None


def recipient(obj: Mapping[str, Any], key: str, path: str) -> str:
    """The email address in ``obj[key]``, trimmed and lower-cased."""
    return address(require_str(obj, key, path), _join(path, key))


def address(value: Any, name: str) -> str:
    """An email address, trimmed and lower-cased (the suppression list compares lower-cased addresses)."""
    if not isinstance(value, str) or not value.strip():
        raise WebhookRejected(f"{name} must be a non-empty string.")
    text = value.strip().lower()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    local, at, domain = text.rpartition("@")
    if not at or not local or not domain or any(ch.isspace() for ch in text):
        raise WebhookRejected(f"{name} is not an email address: {value!r}.")
    return text


def iso_time(obj: Mapping[str, Any], key: str, path: str) -> datetime:
    """An ISO 8601 time with an offset (``Z`` included), as aware UTC."""
    text = require_str(obj, key, path)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise WebhookRejected(f"{_join(path, key)} is not an ISO 8601 time: {text!r}.") from None
    if moment.tzinfo is None:
        raise WebhookRejected(f"{_join(path, key)} has no time zone: {text!r}.")
    return moment.astimezone(UTC)


def unix_time(obj: Mapping[str, Any], key: str, path: str) -> datetime:
    """A Unix time in seconds (integer, float or numeric string), as aware UTC."""
    return unix_value(require(obj, key, path), _join(path, key))


def unix_value(value: Any, name: str) -> datetime:
    if isinstance(value, bool):
        raise WebhookRejected(f"{name} must be a Unix time in seconds.")
    try:
        seconds = float(value)
        return datetime.fromtimestamp(seconds, UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        raise WebhookRejected(f"{name} must be a Unix time in seconds, not {value!r}.") from None


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A request header, looked up without regard to case (works for plain dicts too)."""
    lowered = name.lower()
    for key, value in headers.items():
        if key.lower() == lowered:
            return value
    return None


def find_status(*texts: str | None) -> str | None:
    """The first RFC 3463 enhanced status code (``5.1.1``) found in ``texts``."""
    for text in texts:
        if text:
            match = _STATUS.search(text)
            if match:
                return ".".join(match.groups())
    return None


# RFC 3463 subject.detail -> reason; the class digit is ignored here (see class_for).
_DETAIL_REASONS: dict[str, BounceReason] = {
    "1.1": BounceReason.USER_UNKNOWN,
    "1.2": BounceReason.DOMAIN_UNKNOWN,
    "1.10": BounceReason.DOMAIN_UNKNOWN,  # RFC 7505 null MX
    "1.6": BounceReason.MAILBOX_MOVED,
    "2.1": BounceReason.MAILBOX_DISABLED,
    "2.2": BounceReason.MAILBOX_FULL,
    "2.3": BounceReason.MESSAGE_TOO_LARGE,
    "3.4": BounceReason.MESSAGE_TOO_LARGE,
    "4.7": BounceReason.EXPIRED,
    "7.28": BounceReason.RATE_LIMITED,
}
_SUBJECT_REASONS: dict[str, BounceReason] = {
    "4": BounceReason.NETWORK,
    "6": BounceReason.CONTENT_REJECTED,
    "7": BounceReason.POLICY,
}
_AUTHENTICATION_DETAILS = {str(n) for n in range(20, 28)}  # 5.7.20-5.7.27: DKIM, SPF, DMARC, reverse DNS

HARD_REASONS = frozenset({BounceReason.USER_UNKNOWN, BounceReason.DOMAIN_UNKNOWN, BounceReason.MAILBOX_MOVED})


def reason_from_status(status: str | None) -> BounceReason:
    """A coarse reason from an enhanced status code; ``other`` when the code says nothing specific.

    Used only where the provider gives no finer classification of its own.
    """
    if not status:
        return BounceReason.OTHER
    _, subject, detail = status.split(".")
    if subject == "7" and detail in _AUTHENTICATION_DETAILS:
        return BounceReason.AUTHENTICATION
    return _DETAIL_REASONS.get(f"{subject}.{detail}") or _SUBJECT_REASONS.get(subject, BounceReason.OTHER)


def class_for(reason: BounceReason, status: str | None, default: BounceClass) -> BounceClass:
    """The class a reason implies (docs/feedback.md); ``other`` takes the provider's own verdict."""
    if reason in HARD_REASONS:
        return BounceClass.HARD
    if reason is BounceReason.MAILBOX_DISABLED:
        return BounceClass.HARD if status == "5.2.1" else BounceClass.SOFT
    if reason is BounceReason.OTHER:
        return default
    return BounceClass.SOFT


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
