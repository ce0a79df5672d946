"""The shared vocabulary of feedback: what a message or provider event says happened, and why.

Every intake path (a bounce mailbox, the sink's Maildir, a provider webhook) maps onto these values, so
rules and reports never care where an event came from.
"""

from __future__ import annotations

from enum import StrEnum


class FeedbackKind(StrEnum):
    """What an inbound message or a provider event is."""

    BOUNCE = "bounce"
    COMPLAINT = "complaint"
    AUTO_REPLY = "auto_reply"
    NOT_FEEDBACK = "not_feedback"
    # provider events only
    DELIVERY = "delivery"
    UNSUBSCRIBE = "unsubscribe"
    OPEN = "open"
    CLICK = "click"


class BounceClass(StrEnum):
    """``hard``: the address itself does not work. ``soft``: the address is not to blame."""

    HARD = "hard"
    SOFT = "soft"


class BounceReason(StrEnum):
    """Why a message bounced (docs/feedback.md describes each, with its class)."""

    USER_UNKNOWN = "user_unknown"  # hard
    DOMAIN_UNKNOWN = "domain_unknown"  # hard (also a null MX)
    MAILBOX_MOVED = "mailbox_moved"  # hard
    MAILBOX_FULL = "mailbox_full"  # soft
    MAILBOX_DISABLED = "mailbox_disabled"  # soft unless permanent (5.2.1 is hard)
    MESSAGE_TOO_LARGE = "message_too_large"  # soft
    SPAM_BLOCKED = "spam_blocked"  # soft
    POLICY = "policy"  # soft
    RATE_LIMITED = "rate_limited"  # soft
    EXPIRED = "expired"  # soft
    NETWORK = "network"  # soft
    AUTHENTICATION = "authentication"  # soft
    CONTENT_REJECTED = "content_rejected"  # soft
    OTHER = "other"  # class from the status code


# How a send is named in what comes back: the per-send token ("ref") appears in the envelope sender
# ``bounces+<ref>@<bounce domain>`` (VERP), in the ``Message-ID`` ``<<ref>@<sending domain>>`` and in the
# ``X-Zgoda-Ref`` header. A ref is 26 characters of lower-case base32 (a-z, 2-7): it survives the
# case-folding some MTAs apply to local parts.
SEND_REF_PATTERN = r"[a-z2-7]{26}"
SEND_REF_HEADER = "X-Zgoda-Ref"
BOUNCE_LOCAL_PREFIX = "bounces+"
