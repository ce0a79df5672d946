"""The hard/soft rules on their own: status, reply code and diagnostic text, and how they combine."""

from __future__ import annotations

import pytest

from zgoda.feedback.kinds import BounceClass, BounceReason
from zgoda.feedback.parsing.classify import classify, find_smtp_code, find_status

H, S = BounceClass.HARD, BounceClass.SOFT
R = BounceReason


@pytest.mark.parametrize(
    ("status", "code", "text", "action", "expected"),
    [
        ("5.1.1", 550, "550 5.1.1 Recipient address rejected: user unknown", None, (H, R.USER_UNKNOWN)),
        ("5.1.10", 550, "550 5.1.10 RESOLVER.ADR.RecipientNotFound; not found", None, (H, R.USER_UNKNOWN)),
        ("5.1.10", 550, "Domain example.net does not accept mail (nullMX)", None, (H, R.DOMAIN_UNKNOWN)),
        ("5.1.10", None, None, None, (H, R.DOMAIN_UNKNOWN)),
        ("5.1.2", None, None, None, (H, R.DOMAIN_UNKNOWN)),
        ("5.1.6", None, None, None, (H, R.MAILBOX_MOVED)),
        ("5.2.1", 550, "The email account that you tried to reach is disabled", None, (H, R.MAILBOX_DISABLED)),
        ("4.2.1", 450, "mailbox disabled, try later", None, (S, R.MAILBOX_DISABLED)),
        (None, None, "account disabled", None, (S, R.MAILBOX_DISABLED)),
        ("5.2.2", 550, "550 5.2.2 mailbox full", None, (S, R.MAILBOX_FULL)),
        ("4.2.2", 452, "452 4.2.2 over quota", None, (S, R.MAILBOX_FULL)),
        ("5.3.4", 552, "552 5.3.4 message too big", None, (S, R.MESSAGE_TOO_LARGE)),
        ("5.7.1", 550, "550 5.7.1 rejected due to spam", None, (S, R.SPAM_BLOCKED)),
        ("5.7.1", 554, "554 5.7.1 client host blocked using zen.spamhaus.org", None, (S, R.SPAM_BLOCKED)),
        ("5.1.1", 550, "550 5.1.1 sender blocked by RBL", None, (S, R.SPAM_BLOCKED)),  # text refines the status
        ("5.7.1", 550, "550 5.7.1 <a@example.com>: user unknown", None, (H, R.USER_UNKNOWN)),  # and both ways
        ("5.7.26", 550, "unauthenticated mail", None, (S, R.AUTHENTICATION)),
        ("5.7.27", None, None, None, (S, R.AUTHENTICATION)),
        ("5.7.1", 550, "rejected by DMARC policy", None, (S, R.AUTHENTICATION)),
        ("5.7.1", 550, "550 5.7.1 relaying denied", None, (S, R.POLICY)),
        ("5.7.9", None, None, None, (S, R.AUTHENTICATION)),
        ("5.7.0", None, None, None, (S, R.POLICY)),
        ("4.7.0", 421, None, None, (S, R.RATE_LIMITED)),
        (None, 421, "421 service not available, too many connections", None, (S, R.RATE_LIMITED)),
        (None, 421, "421 closing", None, (S, R.RATE_LIMITED)),
        ("4.4.7", None, "delivery time expired", None, (S, R.EXPIRED)),
        ("5.4.7", None, None, None, (S, R.EXPIRED)),
        ("4.4.1", None, "connect to mx: Connection refused", None, (S, R.NETWORK)),
        ("4.4.2", None, None, None, (S, R.NETWORK)),
        ("5.6.0", 554, "554 5.6.0 message content rejected", None, (S, R.CONTENT_REJECTED)),
        ("5.0.0", 554, "554 5.0.0 Service unavailable", None, (S, R.OTHER)),
        ("5.1.3", 501, "501 5.1.3 Bad recipient address syntax", None, (H, R.OTHER)),
        ("5.1.8", 553, "553 5.1.8 bad sender domain", None, (S, R.POLICY)),
        ("5.5.0", None, None, None, (S, R.OTHER)),
        (None, None, None, None, (S, R.OTHER)),
        ("5.1.1", 550, "user unknown", "delayed", (S, R.USER_UNKNOWN)),  # a transient notice is never hard
        ("4.1.1", 450, "450 4.1.1 unverified address: user unknown", None, (S, R.USER_UNKNOWN)),
        (None, 550, "Użytkownik nie istnieje", None, (H, R.USER_UNKNOWN)),
        (None, 552, "Skrzynka odbiorcy jest pełna", None, (S, R.MAILBOX_FULL)),
        (None, 550, "User jan (jan@example.com) not listed in Domino Directory", None, (H, R.USER_UNKNOWN)),
        (None, None, "Sorry, I couldn't find any host named nohost.example. (#5.1.2)", None, (H, R.DOMAIN_UNKNOWN)),
        ("5.4.1", 550, "550 5.4.1 Recipient address rejected: Access denied", None, (H, R.USER_UNKNOWN)),
    ],
)
def test_classify(
    status: str | None,
    code: int | None,
    text: str | None,
    action: str | None,
    expected: tuple[BounceClass, BounceReason],
) -> None:
    assert classify(status, code, text, action=action) == expected


def test_context_is_read_only_when_the_diagnostic_names_nothing() -> None:
    assert classify(None, None, "delivery failed", context="mailbox full") == (S, R.MAILBOX_FULL)
    assert classify(None, None, "no such user", context="mailbox full") == (H, R.USER_UNKNOWN)
    assert classify("5.2.2", None, "failed", context="no such user") == (S, R.MAILBOX_FULL)


@pytest.mark.parametrize(
    ("text", "status", "code"),
    [
        ("550 5.1.1 user unknown", "5.1.1", 550),
        ("550-5.1.1 The email account", "5.1.1", 550),
        ("Sorry, no mailbox here by that name. (#5.1.1)", "5.1.1", None),
        ("host 10.5.1.1 said: 554 rejected", None, 554),
        ("451 4.4.316 Connection refused", "4.4.316", 451),
        ("delivered on 2026-04-14 at 12:30:45", None, None),
        ("'550 5.1.10 RESOLVER.ADR.RecipientNotFound'", "5.1.10", 550),
        ("#550 5.2.2 STOREDRV.Deliver; mailbox full ##", "5.2.2", 550),
    ],
)
def test_codes_are_found_in_text(text: str, status: str | None, code: int | None) -> None:
    assert find_status(text) == status
    assert find_smtp_code(text) == code
