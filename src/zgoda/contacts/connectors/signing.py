"""Webhook signatures, both ways: ``Zgoda-Signature: t=<unix seconds>,v1=<hex>``.

``v1`` is HMAC-SHA256 under the shared secret of ``"<t>." + raw body``. A receiver checks the
MAC in constant time and refuses a ``t`` more than five minutes away from its clock, so a
captured request cannot be replayed later (and submissions are idempotent by their id).
"""

from __future__ import annotations

import hashlib
import hmac
import time

from zgoda.core.errors import AuthenticationRequired

HEADER = "Zgoda-Signature"
WINDOW_SECONDS = 300


def sign(secret: str, body: bytes, *, timestamp: int | None = None) -> str:
    """The header value for ``body``."""
    moment = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{moment}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={moment},v1={mac}"


def verify(secret: str, body: bytes, header: str | None, *, now: int | None = None) -> None:
    """Raise AuthenticationRequired unless ``header`` signs ``body`` with ``secret`` within the window."""
    if not header:
        raise AuthenticationRequired(f"The {HEADER} header is missing.")
    parts = dict(item.split("=", 1) for item in header.split(",") if "=" in item)
    try:
        moment = int(parts.get("t", ""))
    except ValueError:
        raise AuthenticationRequired(f"The {HEADER} header has no valid timestamp.") from None
    current = int(time.time()) if now is None else now
    if abs(current - moment) > WINDOW_SECONDS:
        raise AuthenticationRequired("The signature is too old or from the future (replay window is 5 minutes).")
    expected = hmac.new(secret.encode(), f"{moment}.".encode() + body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, parts.get("v1", "")):
        raise AuthenticationRequired("The signature does not match the body.")
