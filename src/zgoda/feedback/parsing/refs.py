"""Finding the per-send token ("ref") in what comes back.

Sources, most trusted first:

1. the VERP address ``bounces+<ref>@<bounce domain>`` the inbound message was delivered to (``To``,
   ``Delivered-To``, ``X-Original-To``, ``Envelope-To``, ``X-Envelope-To``, ``Return-Path``), or that the
   original was sent from (ARF ``Original-Mail-From``, the returned original's ``Return-Path``);
2. the returned original's ``X-Zgoda-Ref`` header;
3. its ``Message-ID: <<ref>@...>`` (also a reply's ``In-Reply-To``/``References``, and a DSN's
   ``Original-Envelope-Id``).

Every candidate must match ``SEND_REF_PATTERN`` exactly; with ``bounce_domain`` given, a VERP address must be
at that domain. Local parts are case-folded by some MTAs, so a VERP ref is lower-cased; a Message-ID is not.
"""

from __future__ import annotations

import re

from zgoda.feedback.kinds import BOUNCE_LOCAL_PREFIX, SEND_REF_HEADER, SEND_REF_PATTERN
from zgoda.feedback.parsing.mime import Headers, first

_REF_RE = re.compile(SEND_REF_PATTERN)
_VERP_RE = re.compile(rf"{re.escape(BOUNCE_LOCAL_PREFIX)}([a-z2-7]{{26}})@([a-z0-9.-]+)", re.IGNORECASE)
_MESSAGE_ID_REF_RE = re.compile(rf"<({SEND_REF_PATTERN})@[^>\s]+>")
_MESSAGE_ID_RE = re.compile(r"<[^<>\s]{1,250}>")
ENVELOPE_HEADERS = ("to", "delivered-to", "x-original-to", "envelope-to", "x-envelope-to", "return-path")
_REF_HEADER = SEND_REF_HEADER.lower()


def valid_ref(value: str | None) -> str | None:
    """``value`` if it is exactly a send ref, else None."""
    if value and _REF_RE.fullmatch(value):
        return value
    return None


def verp_ref(value: str, bounce_domain: str | None) -> str | None:
    """The ref in a ``bounces+<ref>@domain`` address inside ``value``; the domain must match when given."""
    if BOUNCE_LOCAL_PREFIX not in value.lower():
        return None
    for match in _VERP_RE.finditer(value):
        domain = match.group(2).lower().rstrip(".")
        if bounce_domain is None or domain == bounce_domain.lower().rstrip("."):
            return valid_ref(match.group(1).lower())
    return None


def envelope_ref(headers: Headers, bounce_domain: str | None) -> str | None:
    """The ref of the VERP address the inbound message was delivered to."""
    for name in ENVELOPE_HEADERS:
        for value in headers.get(name, ()):
            ref = verp_ref(value, bounce_domain)
            if ref:
                return ref
    return None


def message_id_ref(value: str) -> str | None:
    """The ref in a ``<ref@domain>`` Message-ID (or a list of them), else None."""
    match = _MESSAGE_ID_REF_RE.search(value)
    return match.group(1) if match else None


def reply_ref(headers: Headers) -> str | None:
    """The ref in ``In-Reply-To`` or ``References`` (a reply to one of our messages)."""
    for name in ("in-reply-to", "references"):
        for value in headers.get(name, ()):
            ref = message_id_ref(value)
            if ref:
                return ref
    return None


def original_ref(original: Headers, bounce_domain: str | None) -> str | None:
    """The ref carried by the headers of a returned original message."""
    for value in original.get("return-path", ()):
        ref = verp_ref(value, bounce_domain)
        if ref:
            return ref
    for value in original.get(_REF_HEADER, ()):
        ref = valid_ref(value.strip().strip("<>").lower())
        if ref:
            return ref
    for value in original.get("message-id", ()):
        ref = message_id_ref(value)
        if ref:
            return ref
    return None


def original_message_id(original: Headers) -> str | None:
    """The Message-ID of a returned original, as ``<...>``."""
    match = _MESSAGE_ID_RE.search(first(original, "message-id"))
    return match.group(0) if match else None
