"""Consent-aware tracking: an open pixel and click redirects, only for contacts whose consent covers it.

Tracking reads behaviour, which is profiling: it is added only when the contact's ``profiling`` purpose
(:data:`TRACKING_PURPOSE`) is granted at send time. Everyone else gets the links as written and no pixel.
A click address carries an HMAC of the token and the target, so it redirects only to the links the
message really had (no open redirect). The platform's own links (unsubscribe, preferences) are never
rewritten.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Sequence
from html import escape, unescape
from urllib.parse import quote, urlsplit

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from zgoda.consent.models import ConsentState, ConsentStatus, Purpose
from zgoda.core.clock import utcnow

TRACKING_PURPOSE = "profiling"
_HREF = re.compile(r"""(<a\b[^>]*?\bhref\s*=\s*)(["'])(.*?)\2""", re.IGNORECASE | re.DOTALL)
_BODY_OPEN = re.compile(r"<body\b[^>]*>", re.IGNORECASE)


def link_signature(secret: bytes, token: str, url: str) -> str:
    """The signature binding a click address to its token and target."""
    return hmac.new(secret, f"click\0{token}\0{url}".encode(), hashlib.sha256).hexdigest()[:32]


def check_link(secret: bytes, token: str, url: str, signature: str) -> bool:
    """Whether ``signature`` was made by :func:`link_signature` for this token and target."""
    return hmac.compare_digest(link_signature(secret, token, url), signature)


def click_url(base_url: str, secret: bytes, token: str, url: str) -> str:
    """The tracked address that records a click and redirects to ``url``."""
    signature = link_signature(secret, token, url)
    return f"{base_url.rstrip('/')}/t/c/{token}?u={quote(url, safe='')}&s={signature}"


def pixel_url(base_url: str, token: str) -> str:
    """The open pixel's address."""
    return f"{base_url.rstrip('/')}/t/o/{token}.gif"


def add_tracking(html: str, *, base_url: str, secret: bytes, token: str) -> str:
    """``html`` with its http(s) links (not ours) rewritten to click addresses and a pixel after ``<body>``."""
    own = urlsplit(base_url).netloc

    def rewrite(match: re.Match[str]) -> str:
        prefix, quote_char, value = match.groups()
        target = unescape(value).strip()
        parts = urlsplit(target)
        if parts.scheme not in ("http", "https") or parts.netloc == own:
            return match.group(0)
        tracked = click_url(base_url, secret, token, target)
        return f"{prefix}{quote_char}{escape(tracked, quote=True)}{quote_char}"

    rewritten = _HREF.sub(rewrite, html)
    pixel = (
        f'<img src="{escape(pixel_url(base_url, token), quote=True)}" width="1" height="1" alt="" '
        'style="display:block;width:1px;height:1px;border:0" />'
    )
    opened = _BODY_OPEN.search(rewritten)
    if opened is None:
        return pixel + rewritten
    return rewritten[: opened.end()] + pixel + rewritten[opened.end() :]


def tracking_consents(session: Session, contact_ids: Sequence[int]) -> set[int]:
    """The contacts among ``contact_ids`` whose profiling consent is granted now (they may be tracked)."""
    now = utcnow()
    query = (
        select(ConsentState.contact_id)
        .join(Purpose, Purpose.id == ConsentState.purpose_id)
        .where(
            Purpose.key == TRACKING_PURPOSE,
            ConsentState.contact_id.in_(contact_ids),
            ConsentState.status == ConsentStatus.GRANTED,
            or_(ConsentState.expires_at.is_(None), ConsentState.expires_at > now),
        )
    )
    return set(session.scalars(query))
