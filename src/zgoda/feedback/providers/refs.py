"""Our per-send token ("ref") on the way out to a provider and on the way back in its webhooks.

Every message carries ``X-Zgoda-Ref: <ref>`` and ``Message-ID: <<ref>@<domain>>``. Providers echo back
different things, so each gets the header it turns into webhook data:

- Amazon SES: the original headers, when "include original headers" is on for the identity
  (``mail.headers`` and ``mail.commonHeaders.messageId``);
- SendGrid: unique arguments from ``X-SMTPAPI: {"unique_args": {"zgoda_ref": ...}}``, which come back as
  top-level keys of every event;
- Mailgun: user variables from ``X-Mailgun-Variables: {"zgoda_ref": ...}`` → ``event-data.user-variables``;
- Postmark: metadata from ``X-PM-Metadata-zgoda-ref`` → ``Metadata["zgoda-ref"]``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from zgoda.feedback.kinds import SEND_REF_HEADER, SEND_REF_PATTERN

REF_ARGUMENT = "zgoda_ref"  # SendGrid unique argument and Mailgun user variable
POSTMARK_METADATA_KEY = "zgoda-ref"
POSTMARK_METADATA_HEADER = f"X-PM-Metadata-{POSTMARK_METADATA_KEY}"

_REF = re.compile(SEND_REF_PATTERN)


def valid_ref(value: object) -> str | None:
    """``value`` as a send ref if it is one (case-insensitive, as MTAs may fold case), else None."""
    if not isinstance(value, str):
        return None
    candidate = value.strip().lower()
    return candidate if _REF.fullmatch(candidate) else None


def ref_from_message_id(value: object) -> str | None:
    """The ref in a ``Message-ID`` of ours (``<ref@domain>``, angle brackets optional), else None."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    local, at, _ = text.rpartition("@")
    return valid_ref(local) if at else None


def first_ref(*candidates: str | None) -> str | None:
    """The first candidate that is a valid ref (already passed through valid_ref or ref_from_message_id)."""
    return next((candidate for candidate in candidates if candidate), None)


def ref_in_mapping(mapping: object, key: str) -> str | None:
    """``mapping[key]`` (key compared without case) if ``mapping`` is a JSON object holding a valid ref."""
    if not isinstance(mapping, Mapping):
        return None
    lowered = key.lower()
    for name, value in mapping.items():
        if isinstance(name, str) and name.lower() == lowered:
            return valid_ref(value)
    return None


def provider_ref_headers(provider: str, ref: str) -> dict[str, str]:
    """The headers to add to an outgoing message so ``provider`` reports ``ref`` back in its webhooks.

    ``"smtp"`` and ``"none"`` need nothing beyond the ``X-Zgoda-Ref`` and ``Message-ID`` every message
    carries. A SendGrid ``X-SMTPAPI`` header must be merged with any other SMTP API settings of the send.
    """
    checked = valid_ref(ref)
    if checked is None or checked != ref:
        raise ValueError(f"{ref!r} is not a send ref (26 characters of lower-case base32).")
    if provider == "ses":
        return {SEND_REF_HEADER: ref}
    if provider == "sendgrid":
        return {"X-SMTPAPI": _compact({"unique_args": {REF_ARGUMENT: ref}})}
    if provider == "mailgun":
        return {"X-Mailgun-Variables": _compact({REF_ARGUMENT: ref})}
    if provider == "postmark":
        return {POSTMARK_METADATA_HEADER: ref}
    if provider in ("smtp", "none"):
        return {}
    raise ValueError(f"Unknown provider {provider!r}: expected ses, sendgrid, mailgun, postmark, smtp or none.")


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)
