"""Postmark webhooks: Basic credentials or a path token, and the RecordType / bounce Type mapping."""

from __future__ import annotations

import base64
import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from zgoda.feedback.kinds import BounceClass, BounceReason, FeedbackKind
from zgoda.feedback.providers import (
    ProviderEvent,
    WebhookRejected,
    parse_postmark,
    verify_postmark,
    verify_postmark_token,
)

from ._support import REF, body

MESSAGE_ID = "883953f4-6105-42a2-a16a-77a8eac79483"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def bounce(
    bounce_type: str, type_code: int, details: str = "smtp;550 5.1.1 The email account does not exist"
) -> dict[str, Any]:
    """The bounce webhook body from Postmark's "Bounce webhook" page."""
    return {
        "RecordType": "Bounce",
        "MessageStream": "broadcast",
        "ID": 4323372036854775807,
        "Type": bounce_type,
        "TypeCode": type_code,
        "Name": "Hard bounce",
        "Tag": "newsletter",
        "MessageID": MESSAGE_ID,
        "Metadata": {"zgoda-ref": REF},
        "ServerID": 23,
        "Description": "The server was unable to deliver your message (ex: unknown user, mailbox not found).",
        "Details": details,
        "Email": "Jane@Example.com",
        "From": "newsletter@client.example",
        "BouncedAt": "2026-03-02T06:58:10.2735393-05:00",
        "DumpAvailable": True,
        "Inactive": True,
        "CanActivate": True,
        "Subject": "March news",
        "Content": "Return-Path:<>…",
    }


def test_basic_credentials_are_checked() -> None:
    verify_postmark(basic("postmark", "s3cret-pass"), "postmark", "s3cret-pass")
    for header in [basic("postmark", "wrong"), basic("other", "s3cret-pass"), basic("postmark", "s3cret-pass2")]:
        with pytest.raises(WebhookRejected, match="credentials are wrong"):
            verify_postmark(header, "postmark", "s3cret-pass")


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (None, "Authorization header is missing"),
        ("", "Authorization header is missing"),
        ("Bearer abc", "not HTTP Basic"),
        ("Basic", "not HTTP Basic"),
        ("Basic %%%", "not base64"),
        ("Basic " + base64.b64encode(b"no-colon").decode(), "user:password"),
    ],
)
def test_malformed_authorization_headers_are_rejected(header: str | None, message: str) -> None:
    with pytest.raises(WebhookRejected, match=message):
        verify_postmark(header, "postmark", "s3cret-pass")


def test_empty_expected_credentials_are_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="expected user and password"):
        verify_postmark(basic("", ""), "", "")


def test_the_path_token_variant() -> None:
    token = "k9X2vQ7mR4tW8zY1bN5cL0"
    verify_postmark_token(token, token)
    for presented in [None, "", token[:-1], token + "x"]:
        with pytest.raises(WebhookRejected, match="path token is wrong"):
            verify_postmark_token(presented, token)
    with pytest.raises(ValueError, match="at least 16"):
        verify_postmark_token("short", "short")


def test_a_hard_bounce() -> None:
    raw = bounce("HardBounce", 1)
    (found,) = parse_postmark(body(raw))
    assert found == ProviderEvent(
        provider="postmark",
        event_id="Bounce:4323372036854775807",
        kind=FeedbackKind.BOUNCE,
        recipient="jane@example.com",
        occurred_at=datetime(2026, 3, 2, 11, 58, 10, 273539, tzinfo=UTC),
        bounce_class=BounceClass.HARD,
        reason=BounceReason.USER_UNKNOWN,
        status="5.1.1",
        diagnostic="smtp;550 5.1.1 The email account does not exist",
        send_ref=REF,
        provider_message_id=MESSAGE_ID,
    )
    assert found.raw == raw


@pytest.mark.parametrize(
    ("bounce_type", "code", "details", "expected"),
    [
        ("HardBounce", 1, "smtp;550 5.1.1 unknown", (FeedbackKind.BOUNCE, BounceClass.HARD, BounceReason.USER_UNKNOWN)),
        ("HardBounce", 1, "smtp;550 5.7.1 policy", (FeedbackKind.BOUNCE, BounceClass.HARD, BounceReason.OTHER)),
        ("HardBounce", 1, "no code here", (FeedbackKind.BOUNCE, BounceClass.HARD, BounceReason.USER_UNKNOWN)),
        (
            "SoftBounce",
            4096,
            "smtp;452 4.2.2 mailbox full",
            (FeedbackKind.BOUNCE, BounceClass.SOFT, BounceReason.MAILBOX_FULL),
        ),
        ("SoftBounce", 4096, "smtp;550 5.1.1 unknown", (FeedbackKind.BOUNCE, BounceClass.SOFT, BounceReason.OTHER)),
        ("DnsError", 256, "", (FeedbackKind.BOUNCE, BounceClass.SOFT, BounceReason.NETWORK)),
        ("SpamNotification", 512, "", (FeedbackKind.BOUNCE, BounceClass.SOFT, BounceReason.SPAM_BLOCKED)),
        ("Unknown", 2048, "", (FeedbackKind.BOUNCE, BounceClass.SOFT, BounceReason.OTHER)),
        ("VirusNotification", 8192, "", (FeedbackKind.BOUNCE, BounceClass.SOFT, BounceReason.CONTENT_REJECTED)),
        ("BadEmailAddress", 100000, "", (FeedbackKind.BOUNCE, BounceClass.HARD, BounceReason.USER_UNKNOWN)),
        ("Blocked", 100006, "", (FeedbackKind.BOUNCE, BounceClass.SOFT, BounceReason.SPAM_BLOCKED)),
        ("Blocked", 100006, "smtp;554 5.7.1 listed", (FeedbackKind.BOUNCE, BounceClass.SOFT, BounceReason.POLICY)),
        ("DMARCPolicy", 100009, "", (FeedbackKind.BOUNCE, BounceClass.SOFT, BounceReason.AUTHENTICATION)),
        ("AutoResponder", 64, "Out of office", (FeedbackKind.AUTO_REPLY, None, None)),
        ("AddressChange", 128, "", (FeedbackKind.AUTO_REPLY, None, None)),
        ("ChallengeVerification", 16384, "", (FeedbackKind.AUTO_REPLY, None, None)),
        ("Unsubscribe", 16, "", (FeedbackKind.UNSUBSCRIBE, None, None)),
        ("SpamComplaint", 100001, "", (FeedbackKind.COMPLAINT, None, None)),
    ],
)
def test_bounce_types_map_to_kind_class_and_reason(
    bounce_type: str, code: int, details: str, expected: tuple[FeedbackKind, BounceClass | None, BounceReason | None]
) -> None:
    (found,) = parse_postmark(body(bounce(bounce_type, code, details)))
    assert (found.kind, found.bounce_class, found.reason) == expected


@pytest.mark.parametrize(
    ("bounce_type", "code"),
    [
        ("Transient", 2),
        ("Subscribe", 32),
        ("OpenRelayTest", 1024),
        ("ManuallyDeactivated", 100002),
        ("Unconfirmed", 100003),
        ("SMTPApiError", 100007),
        ("InboundError", 100008),
        ("TemplateRenderingFailed", 100010),
        ("SomethingNew", 999999),
    ],
)
def test_bounce_types_that_say_nothing_about_the_recipient_are_left_out(bounce_type: str, code: int) -> None:
    assert parse_postmark(body(bounce(bounce_type, code))) == []


def test_the_type_code_is_used_when_the_type_name_is_absent() -> None:
    raw = bounce("HardBounce", 4096, "smtp;452 4.2.2 full")
    del raw["Type"]
    (found,) = parse_postmark(body(raw))
    assert (found.bounce_class, found.reason) == (BounceClass.SOFT, BounceReason.MAILBOX_FULL)
    raw["TypeCode"] = 31337
    with pytest.raises(WebhookRejected, match="TypeCode 31337"):
        parse_postmark(body(raw))


def test_a_spam_complaint_record() -> None:
    raw = {**bounce("SpamComplaint", 100001, "Test spam complaint details"), "RecordType": "SpamComplaint", "ID": 42}
    (found,) = parse_postmark(body(raw))
    assert (found.kind, found.event_id, found.recipient, found.send_ref) == (
        FeedbackKind.COMPLAINT,
        "SpamComplaint:42",
        "jane@example.com",
        REF,
    )


def test_delivery_open_and_click_records() -> None:
    common = {"MessageID": MESSAGE_ID, "Recipient": "jane@example.com", "Metadata": {"zgoda-ref": REF}, "Tag": "news"}
    delivery = {
        **common,
        "RecordType": "Delivery",
        "ServerID": 23,
        "MessageStream": "broadcast",
        "DeliveredAt": "2026-03-02T11:58:10Z",
        "Details": "Test delivery webhook details",
    }
    opened = {
        **common,
        "RecordType": "Open",
        "FirstOpen": True,
        "ReceivedAt": "2026-03-02T11:59:00Z",
        "Platform": "WebMail",
        "UserAgent": "Mozilla/5.0",
    }
    clicked = {
        **common,
        "RecordType": "Click",
        "ClickLocation": "HTML",
        "OriginalLink": "https://client.example/offer",
        "ReceivedAt": "2026-03-02T11:59:30Z",
    }
    (d,) = parse_postmark(body(delivery))
    (o,) = parse_postmark(body(opened))
    (c,) = parse_postmark(body(clicked))
    assert [(e.kind, e.event_id) for e in (d, o, c)] == [
        (FeedbackKind.DELIVERY, f"Delivery:{MESSAGE_ID}:jane@example.com"),
        (FeedbackKind.OPEN, f"Open:{MESSAGE_ID}:jane@example.com:2026-03-02T11:59:00Z"),
        (FeedbackKind.CLICK, f"Click:{MESSAGE_ID}:jane@example.com:2026-03-02T11:59:30Z:https://client.example/offer"),
    ]
    assert d.diagnostic == "Test delivery webhook details"
    assert all(e.send_ref == REF and e.provider_message_id == MESSAGE_ID for e in (d, o, c))
    assert o.occurred_at == datetime(2026, 3, 2, 11, 59, tzinfo=UTC)


def subscription_change(**fields: Any) -> dict[str, Any]:
    """The body of Postmark's "Subscription change webhook" page."""
    document = {
        "RecordType": "SubscriptionChange",
        "MessageID": MESSAGE_ID,
        "ServerID": 123456,
        "MessageStream": "broadcast",
        "ChangedAt": "2026-03-02T10:53:34.416071Z",
        "Recipient": "jane@example.com",
        "Origin": "Recipient",
        "SuppressSending": True,
        "SuppressionReason": "ManualSuppression",
        "Tag": "newsletter",
        "Metadata": {"zgoda-ref": REF},
    }
    document.update(fields)
    return document


def test_a_recipients_own_unsubscribe_is_an_unsubscribe() -> None:
    (found,) = parse_postmark(body(subscription_change()))
    assert (found.kind, found.event_id, found.send_ref) == (
        FeedbackKind.UNSUBSCRIBE,
        "SubscriptionChange:jane@example.com:2026-03-02T10:53:34.416071Z",
        REF,
    )


@pytest.mark.parametrize(
    "fields",
    [
        {"SuppressSending": False, "SuppressionReason": None, "Metadata": {}},  # reactivation
        {"SuppressionReason": "HardBounce"},  # arrives as its own Bounce webhook
        {"SuppressionReason": "SpamComplaint"},
        {"Origin": "Customer", "MessageID": None},  # an operator in Postmark, not the recipient
        {"Origin": "Admin", "MessageID": None},
    ],
)
def test_other_subscription_changes_are_left_out(fields: dict[str, Any]) -> None:
    assert parse_postmark(body(subscription_change(**fields))) == []


def test_unknown_record_types_are_left_out() -> None:
    assert parse_postmark(body({"RecordType": "Inbound", "FromFull": {}})) == []


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{", "not valid JSON"),
        (b"[]", "must be a JSON object"),
        (body({"ID": 1}), "RecordType is missing"),
        (body(subscription_change(SuppressSending="yes")), "SuppressSending must be true or false"),
    ],
)
def test_malformed_bodies_are_rejected(raw: bytes, message: str) -> None:
    with pytest.raises(WebhookRejected, match=message):
        parse_postmark(raw)


@pytest.mark.parametrize("field", ["ID", "Email", "BouncedAt"])
def test_missing_bounce_fields_are_named(field: str) -> None:
    raw = copy.deepcopy(bounce("HardBounce", 1))
    del raw[field]
    with pytest.raises(WebhookRejected, match=f"{field} is missing"):
        parse_postmark(body(raw))


@pytest.mark.parametrize(
    ("record", "field"), [("Delivery", "DeliveredAt"), ("Open", "ReceivedAt"), ("Click", "MessageID")]
)
def test_missing_engagement_fields_are_named(record: str, field: str) -> None:
    raw = {
        "RecordType": record,
        "MessageID": MESSAGE_ID,
        "Recipient": "jane@example.com",
        "DeliveredAt": "2026-03-02T11:58:10Z",
        "ReceivedAt": "2026-03-02T11:59:00Z",
    }
    del raw[field]
    with pytest.raises(WebhookRejected, match=f"{field} is missing"):
        parse_postmark(body(raw))
