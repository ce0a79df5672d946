"""SES notifications through SNS: bounces, complaints, deliveries, event publishing, refs, bad input."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from zgoda.feedback.kinds import BounceClass, BounceReason, FeedbackKind
from zgoda.feedback.providers import CertificateCache, ProviderEvent, WebhookRejected, parse_ses, parse_ses_notification

from ._support import NOW, REF, FakeFetch, body, sns_envelope

SNS_ID = "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324"
SES_ID = "0102018e0a6f6a54-8c4f5a1b-6a1e-4d3c-9f0e-1b2c3d4e5f60-000000"


def mail(destination: list[str] | None = None, *, ref: str | None = REF, headers: bool = True) -> dict[str, Any]:
    """The ``mail`` object of "Amazon SNS notification contents for Amazon SES", original headers included."""
    destination = destination or ["jane@example.com"]
    document: dict[str, Any] = {
        "timestamp": "2026-03-02T11:58:00.000Z",
        "source": "newsletter@client.example",
        "sourceArn": "arn:aws:ses:eu-central-1:123456789012:identity/client.example",
        "sourceIp": "192.0.2.10",
        "sendingAccountId": "123456789012",
        "messageId": SES_ID,
        "destination": destination,
    }
    if headers:
        document["headersTruncated"] = False
        document["headers"] = [
            {"name": "From", "value": "Client <newsletter@client.example>"},
            {"name": "To", "value": ", ".join(destination)},
            {"name": "Message-ID", "value": f"<{ref or 'not-a-ref'}@mail.client.example>"},
            {"name": "X-Zgoda-Ref", "value": ref or "not-a-ref"},
            {"name": "Subject", "value": "March news"},
        ]
        document["commonHeaders"] = {
            "from": ["Client <newsletter@client.example>"],
            "to": destination,
            "messageId": f"<{ref or 'not-a-ref'}@mail.client.example>",
            "subject": "March news",
        }
    return document


def bounce(bounce_type: str, subtype: str, recipients: list[dict[str, Any]], **mail_options: Any) -> dict[str, Any]:
    return {
        "notificationType": "Bounce",
        "bounce": {
            "bounceType": bounce_type,
            "bounceSubType": subtype,
            "bouncedRecipients": recipients,
            "timestamp": "2026-03-02T11:59:01.500Z",
            "feedbackId": "0102018e0a6f7b11-aaaa-bbbb-cccc-dddd-000000",
            "reportingMTA": "dns; mx.example.com",
            "remoteMtaIp": "198.51.100.7",
        },
        "mail": mail([r["emailAddress"] for r in recipients], **mail_options),
    }


def events(notification: dict[str, Any] | str) -> list[ProviderEvent]:
    """Through the whole path: signed SNS envelope, verification, then the SES mapping."""
    document = sns_envelope(notification, message_id=SNS_ID)
    return parse_ses(body(document), fetch=FakeFetch(), cache=CertificateCache(), now=NOW).events


def test_a_permanent_bounce_for_two_recipients_gives_two_events_with_distinct_ids() -> None:
    notification = bounce(
        "Permanent",
        "General",
        [
            {
                "emailAddress": "Jane@Example.com",
                "action": "failed",
                "status": "5.1.1",
                "diagnosticCode": "smtp; 550 5.1.1 <jane@example.com>... User unknown",
            },
            {"emailAddress": "richard@example.com", "action": "failed", "status": "5.2.1"},
        ],
    )
    first, second = events(notification)
    assert first == ProviderEvent(
        provider="ses",
        event_id=f"{SNS_ID}:0",
        kind=FeedbackKind.BOUNCE,
        recipient="jane@example.com",
        occurred_at=datetime(2026, 3, 2, 11, 59, 1, 500000, tzinfo=UTC),
        bounce_class=BounceClass.HARD,
        reason=BounceReason.USER_UNKNOWN,
        status="5.1.1",
        diagnostic="smtp; 550 5.1.1 <jane@example.com>... User unknown",
        send_ref=REF,
        provider_message_id=SES_ID,
    )
    assert first.raw == notification
    assert (second.event_id, second.recipient, second.reason, second.bounce_class) == (
        f"{SNS_ID}:1",
        "richard@example.com",
        BounceReason.MAILBOX_DISABLED,
        BounceClass.HARD,  # 5.2.1 is the permanent "mailbox disabled"
    )


def test_a_single_recipient_notification_uses_the_sns_message_id() -> None:
    (event,) = events(bounce("Permanent", "NoEmail", [{"emailAddress": "jane@example.com"}]))
    assert event.event_id == SNS_ID
    assert (event.bounce_class, event.reason, event.status) == (BounceClass.HARD, BounceReason.USER_UNKNOWN, None)


@pytest.mark.parametrize(
    ("bounce_type", "subtype", "status", "expected"),
    [
        ("Permanent", "General", "5.1.1", (BounceClass.HARD, BounceReason.USER_UNKNOWN)),
        ("Permanent", "General", "5.7.1", (BounceClass.SOFT, BounceReason.POLICY)),
        ("Permanent", "General", None, (BounceClass.HARD, BounceReason.OTHER)),
        ("Permanent", "NoEmail", None, (BounceClass.HARD, BounceReason.USER_UNKNOWN)),
        ("Permanent", "Suppressed", "5.1.1", (BounceClass.HARD, BounceReason.OTHER)),
        ("Permanent", "OnAccountSuppressionList", None, (BounceClass.HARD, BounceReason.OTHER)),
        ("Transient", "General", "4.4.7", (BounceClass.SOFT, BounceReason.EXPIRED)),
        ("Transient", "General", "5.1.1", (BounceClass.SOFT, BounceReason.OTHER)),
        ("Transient", "MailboxFull", "5.2.2", (BounceClass.SOFT, BounceReason.MAILBOX_FULL)),
        ("Transient", "MessageTooLarge", "5.3.4", (BounceClass.SOFT, BounceReason.MESSAGE_TOO_LARGE)),
        ("Transient", "ContentRejected", "5.6.0", (BounceClass.SOFT, BounceReason.CONTENT_REJECTED)),
        ("Transient", "AttachmentRejected", None, (BounceClass.SOFT, BounceReason.CONTENT_REJECTED)),
        ("Undetermined", "Undetermined", None, (BounceClass.SOFT, BounceReason.OTHER)),
    ],
)
def test_bounce_types_and_subtypes_map_to_class_and_reason(
    bounce_type: str, subtype: str, status: str | None, expected: tuple[BounceClass, BounceReason]
) -> None:
    recipient: dict[str, Any] = {"emailAddress": "jane@example.com", "action": "failed"}
    if status:
        recipient["status"] = status
    (event,) = parse_ses_notification(json.dumps(bounce(bounce_type, subtype, [recipient])), SNS_ID)
    assert (event.bounce_class, event.reason) == expected
    assert event.status == status


def test_a_complaint_carries_its_feedback_type_for_each_recipient() -> None:
    notification = {
        "notificationType": "Complaint",
        "complaint": {
            "userAgent": "ExampleCorp Feedback Loop (V0.01)",
            "complainedRecipients": [{"emailAddress": "jane@example.com"}],
            "complaintFeedbackType": "abuse",
            "arrivalDate": "2026-03-02T11:57:00.000Z",
            "timestamp": "2026-03-02T11:58:30.000Z",
            "feedbackId": "0102018e0a6f7b11-complaint-000000",
        },
        "mail": mail(),
    }
    (event,) = events(notification)
    assert (event.kind, event.recipient, event.feedback_type, event.send_ref) == (
        FeedbackKind.COMPLAINT,
        "jane@example.com",
        "abuse",
        REF,
    )
    assert event.bounce_class is None and event.reason is None
    assert event.occurred_at == datetime(2026, 3, 2, 11, 58, 30, tzinfo=UTC)


def test_a_complaint_about_the_account_suppression_list_is_not_a_new_complaint() -> None:
    notification = {
        "notificationType": "Complaint",
        "complaint": {
            "complainedRecipients": [{"emailAddress": "jane@example.com"}],
            "complaintSubType": "OnAccountSuppressionList",
            "timestamp": "2026-03-02T11:58:30.000Z",
            "feedbackId": "x",
        },
        "mail": mail(),
    }
    assert events(notification) == []


def test_a_delivery_gives_one_event_per_recipient() -> None:
    notification = {
        "notificationType": "Delivery",
        "mail": mail(["jane@example.com", "mary@example.com"]),
        "delivery": {
            "timestamp": "2026-03-02T11:58:05.000Z",
            "processingTimeMillis": 546,
            "recipients": ["jane@example.com", "MARY@example.com"],
            "smtpResponse": "250 ok:  Message 64111812 accepted",
            "reportingMTA": "a8-70.smtp-out.amazonses.com",
            "remoteMtaIp": "203.0.113.5",
        },
    }
    found = events(notification)
    assert [(e.kind, e.recipient, e.event_id) for e in found] == [
        (FeedbackKind.DELIVERY, "jane@example.com", f"{SNS_ID}:0"),
        (FeedbackKind.DELIVERY, "mary@example.com", f"{SNS_ID}:1"),
    ]
    assert found[0].diagnostic == "250 ok:  Message 64111812 accepted"


@pytest.mark.parametrize(("event_type", "kind"), [("Open", FeedbackKind.OPEN), ("Click", FeedbackKind.CLICK)])
def test_event_publishing_opens_and_clicks(event_type: str, kind: FeedbackKind) -> None:
    detail = {"ipAddress": "192.0.2.1", "timestamp": "2026-03-02T11:59:40.000Z", "userAgent": "Mozilla/5.0"}
    if event_type == "Click":
        detail["link"] = "https://client.example/offer"
    notification = {"eventType": event_type, "mail": mail(), event_type.lower(): detail}
    (event,) = events(notification)
    assert (event.kind, event.recipient, event.event_id, event.send_ref) == (kind, "jane@example.com", SNS_ID, REF)


def test_an_open_of_a_message_to_several_recipients_cannot_be_attributed_and_is_left_out() -> None:
    notification = {
        "eventType": "Open",
        "mail": mail(["a@example.com", "b@example.com"]),
        "open": {"timestamp": "2026-03-02T11:59:40.000Z"},
    }
    assert events(notification) == []


def test_event_publishing_bounces_use_the_same_mapping() -> None:
    notification = bounce("Transient", "MailboxFull", [{"emailAddress": "jane@example.com", "status": "4.2.2"}])
    notification["eventType"] = notification.pop("notificationType")
    (event,) = events(notification)
    assert (event.bounce_class, event.reason) == (BounceClass.SOFT, BounceReason.MAILBOX_FULL)


@pytest.mark.parametrize(
    "event_type", ["Send", "Reject", "DeliveryDelay", "Rendering Failure", "Subscription", "Novel"]
)
def test_other_event_types_are_left_out_not_rejected(event_type: str) -> None:
    assert events({"eventType": event_type, "mail": mail()}) == []


def test_the_setup_text_ses_publishes_gives_no_events() -> None:
    assert events("Successfully validated SNS topic for Amazon SES event publishing.") == []


def test_the_ref_comes_from_the_message_id_when_the_ref_header_is_absent() -> None:
    notification = bounce("Permanent", "General", [{"emailAddress": "jane@example.com"}])
    notification["mail"]["headers"] = [h for h in notification["mail"]["headers"] if h["name"] != "X-Zgoda-Ref"]
    (event,) = events(notification)
    assert event.send_ref == REF


def test_without_original_headers_there_is_no_ref() -> None:
    (event,) = events(bounce("Permanent", "General", [{"emailAddress": "jane@example.com"}], headers=False))
    assert event.send_ref is None


def test_an_invalid_ref_is_none() -> None:
    (event,) = events(bounce("Permanent", "General", [{"emailAddress": "jane@example.com"}], ref="short"))
    assert event.send_ref is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda n: n.pop("mail"), "mail is missing"),
        (lambda n: n["mail"].pop("messageId"), "mail.messageId is missing"),
        (lambda n: n.pop("bounce"), "bounce is missing"),
        (lambda n: n["bounce"].pop("bounceType"), "bounce.bounceType is missing"),
        (lambda n: n["bounce"].update(bounceType="Sideways"), "is not Permanent, Transient or Undetermined"),
        (lambda n: n["bounce"].pop("timestamp"), "bounce.timestamp is missing"),
        (lambda n: n["bounce"].update(timestamp="yesterday"), "bounce.timestamp is not an ISO 8601 time"),
        (lambda n: n["bounce"].update(bouncedRecipients=[]), "bounce.bouncedRecipients must be a non-empty list"),
        (lambda n: n["bounce"]["bouncedRecipients"][0].pop("emailAddress"), r"bouncedRecipients\[0\].emailAddress"),
        (
            lambda n: n["bounce"]["bouncedRecipients"][0].update(emailAddress="nobody"),
            r"bouncedRecipients\[0\].emailAddress is not an email address",
        ),
        (lambda n: n.pop("notificationType"), "neither notificationType nor eventType"),
    ],
)
def test_missing_or_broken_fields_are_rejected_by_name(change: Any, message: str) -> None:
    notification = copy.deepcopy(bounce("Permanent", "General", [{"emailAddress": "jane@example.com"}]))
    change(notification)
    with pytest.raises(WebhookRejected, match=message):
        events(notification)


def test_a_message_that_looks_like_json_but_is_not_is_rejected() -> None:
    with pytest.raises(WebhookRejected, match="not valid JSON"):
        events('{"notificationType": "Bounce",')


def test_one_broken_recipient_rejects_the_whole_notification() -> None:
    notification = bounce(
        "Permanent", "General", [{"emailAddress": "jane@example.com"}, {"emailAddress": "", "status": "5.1.1"}]
    )
    with pytest.raises(WebhookRejected, match=r"bouncedRecipients\[1\]"):
        events(notification)
