"""The addresses a message carries: signed unsubscribe and preference links, the bounce address, Message-ID.

A link token names the workspace, contact, purpose and send, signed with the installation's secret
(itsdangerous, salt per use): it cannot be forged, and ids inside it cannot be changed or guessed
into another contact's link. Tokens do not expire (an unsubscribe link must work years later);
using one twice is harmless because withdrawing twice changes nothing.
"""

from __future__ import annotations

import base64
import functools
import secrets
from dataclasses import dataclass

from itsdangerous import BadSignature, URLSafeSerializer

from zgoda.core.errors import NotFound
from zgoda.feedback.kinds import BOUNCE_LOCAL_PREFIX

UNSUBSCRIBE_SALT = "zgoda.unsubscribe"
CONSENT_REQUEST_SALT = "zgoda.consent-request"  # a confirmation link: an unsubscribe token cannot stand in for it


@dataclass(frozen=True)
class LinkToken:
    """What a signed link says: whose, for which purpose, from which send."""

    workspace_id: int
    contact_id: int
    purpose_id: int
    send_id: int


def new_send_ref() -> str:
    """A random per-send reference: 26 characters of lower-case base32 (128 bits)."""
    return base64.b32encode(secrets.token_bytes(16)).decode().rstrip("=").lower()


@functools.lru_cache(maxsize=8)
def _serializer(secret: bytes, salt: str = UNSUBSCRIBE_SALT) -> URLSafeSerializer:
    """One serializer per secret and use: building it derives the signing key, which a campaign needs once."""
    return URLSafeSerializer(secret, salt=salt)


def make_token(secret: bytes, token: LinkToken, *, salt: str = UNSUBSCRIBE_SALT) -> str:
    """The signed token of unsubscribe and preference links (with ``CONSENT_REQUEST_SALT``: a confirmation link)."""
    payload = [token.workspace_id, token.contact_id, token.purpose_id, token.send_id]
    return str(_serializer(secret, salt).dumps(payload))


def read_token(secret: bytes, value: str, *, salt: str = UNSUBSCRIBE_SALT) -> LinkToken:
    """The token's contents; a forged, altered or truncated token is a 404 (it names nothing we know)."""
    try:
        payload = _serializer(secret, salt).loads(value)
    except BadSignature:
        raise NotFound("This link is not valid.", field="token") from None
    if not (isinstance(payload, list) and len(payload) == 4 and all(isinstance(v, int) for v in payload)):
        raise NotFound("This link is not valid.", field="token")
    workspace_id, contact_id, purpose_id, send_id = payload
    return LinkToken(workspace_id=workspace_id, contact_id=contact_id, purpose_id=purpose_id, send_id=send_id)


def unsubscribe_url(base_url: str, token: str) -> str:
    """The one-click (RFC 8058 POST) and footer unsubscribe address."""
    return f"{base_url.rstrip('/')}/u/{token}"


def confirm_url(base_url: str, token: str) -> str:
    """The page where the recipient of a consent request gives (confirms, refreshes) the consent."""
    return f"{base_url.rstrip('/')}/confirm/{token}"


def preferences_url(base_url: str, token: str) -> str:
    """The preference centre of the contact the token names."""
    return f"{base_url.rstrip('/')}/preferences/{token}"


def bounce_address(ref: str, domain: str) -> str:
    """The envelope sender (VERP): a bounce to it names the send."""
    return f"{BOUNCE_LOCAL_PREFIX}{ref}@{domain}"


def unsubscribe_mailto(ref: str, domain: str) -> str:
    """The ``mailto:`` unsubscribe address for ``List-Unsubscribe``."""
    return f"mailto:unsubscribe+{ref}@{domain}?subject=unsubscribe"


def message_id(ref: str, domain: str) -> str:
    """A unique Message-ID that names the send."""
    return f"<{ref}@{domain}>"
