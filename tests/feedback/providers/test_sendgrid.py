"""SendGrid Signed Event Webhook: ECDSA verification, freshness, and the event mapping."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from zgoda.feedback.kinds import BounceClass, BounceReason, FeedbackKind
from zgoda.feedback.providers import ProviderEvent, WebhookRejected, parse_sendgrid

from ._support import NOW, REF, body, sendgrid_headers, sendgrid_public_key

STAMP = int((NOW - timedelta(minutes=2)).timestamp())


def event(name: str, **fields: Any) -> dict[str, Any]:
    """An event as in SendGrid's "Event Webhook Reference", with our unique argument merged in."""
    document: dict[str, Any] = {
        "email": "jane@example.com",
        "timestamp": STAMP,
        "smtp-id": "<14c5d75ce93.dfd.64b469@ismtpd-555>",
        "event": name,
        "category": ["newsletter"],
        "sg_event_id": f"sg-{name}-ZGV0ZWN0ZWQ",
        "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0",
        "zgoda_ref": REF,
    }
    document.update(fields)
    return document


def parse(batch: list[dict[str, Any]] | bytes, **options: Any) -> list[ProviderEvent]:
    payload = batch if isinstance(batch, bytes) else body(batch)
    return parse_sendgrid(payload, sendgrid_headers(payload), public_key=sendgrid_public_key(), now=NOW, **options)


def test_a_signed_batch_maps_every_event_type_we_use() -> None:
    batch = [
        event("processed"),
        event("deferred", response="400 try again later", attempt="5"),
        event("delivered", response="250 OK"),
        event("open", useragent="Mozilla/5.0", ip="255.255.255.255", sg_machine_open=False),
        event("click", url="https://client.example/offer", url_offset={"index": 0, "type": "html"}),
        event("spamreport"),
        event("unsubscribe"),
        event("group_unsubscribe", asm_group_id=10),
        event("group_resubscribe", asm_group_id=10),
        event(
            "bounce",
            type="bounce",
            status="5.1.1",
            reason="550 5.1.1 The email account that you tried to reach does not exist.",
            bounce_classification="Invalid Address",
        ),
    ]
    found = parse(batch)
    assert [(e.kind, e.event_id) for e in found] == [
        (FeedbackKind.DELIVERY, "sg-delivered-ZGV0ZWN0ZWQ"),
        (FeedbackKind.OPEN, "sg-open-ZGV0ZWN0ZWQ"),
        (FeedbackKind.CLICK, "sg-click-ZGV0ZWN0ZWQ"),
        (FeedbackKind.COMPLAINT, "sg-spamreport-ZGV0ZWN0ZWQ"),
        (FeedbackKind.UNSUBSCRIBE, "sg-unsubscribe-ZGV0ZWN0ZWQ"),
        (FeedbackKind.UNSUBSCRIBE, "sg-group_unsubscribe-ZGV0ZWN0ZWQ"),
        (FeedbackKind.BOUNCE, "sg-bounce-ZGV0ZWN0ZWQ"),
    ]
    assert found[-1] == ProviderEvent(
        provider="sendgrid",
        event_id="sg-bounce-ZGV0ZWN0ZWQ",
        kind=FeedbackKind.BOUNCE,
        recipient="jane@example.com",
        occurred_at=datetime.fromtimestamp(STAMP, UTC),
        bounce_class=BounceClass.HARD,
        reason=BounceReason.USER_UNKNOWN,
        status="5.1.1",
        diagnostic="550 5.1.1 The email account that you tried to reach does not exist.",
        send_ref=REF,
        provider_message_id="14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0",
    )
    assert found[-1].raw == batch[-1]
    assert found[0].diagnostic == "250 OK"
    assert all(e.send_ref == REF and e.provider == "sendgrid" for e in found)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"type": "bounce", "status": "5.1.1"}, (BounceClass.HARD, BounceReason.USER_UNKNOWN)),
        ({"type": "bounce", "status": "5.0.0"}, (BounceClass.HARD, BounceReason.OTHER)),
        ({"type": "blocked", "status": "5.0.0"}, (BounceClass.SOFT, BounceReason.OTHER)),
        ({"type": "blocked", "bounce_classification": "Reputation"}, (BounceClass.SOFT, BounceReason.SPAM_BLOCKED)),
        ({"type": "blocked", "bounce_classification": "Technical"}, (BounceClass.SOFT, BounceReason.NETWORK)),
        ({"type": "bounce", "bounce_classification": "Content"}, (BounceClass.SOFT, BounceReason.CONTENT_REJECTED)),
        (
            {"type": "blocked", "bounce_classification": "Frequency or Volume Too High"},
            (BounceClass.SOFT, BounceReason.RATE_LIMITED),
        ),
        (
            {"type": "bounce", "bounce_classification": "Mailbox Unavailable", "status": "5.2.1"},
            (BounceClass.HARD, BounceReason.MAILBOX_DISABLED),
        ),
        (
            {"type": "bounce", "bounce_classification": "Mailbox Unavailable", "status": "4.2.1"},
            (BounceClass.SOFT, BounceReason.MAILBOX_DISABLED),
        ),
        (
            {"type": "blocked", "bounce_classification": "Unclassified", "reason": "unable to get mx info"},
            (BounceClass.SOFT, BounceReason.OTHER),
        ),
        ({"status": "5.2.2", "reason": "552 5.2.2 mailbox full"}, (BounceClass.SOFT, BounceReason.MAILBOX_FULL)),
    ],
)
def test_bounce_type_and_classification_decide_class_and_reason(
    fields: dict[str, Any], expected: tuple[BounceClass, BounceReason]
) -> None:
    (found,) = parse([event("bounce", **fields)])
    assert (found.bounce_class, found.reason) == expected


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("Bounced Address", BounceReason.OTHER),
        ("Invalid", BounceReason.USER_UNKNOWN),
        ("Unsubscribed Address", None),
        ("Spam Reporting Address", None),
        ("Spam Content (if spam checker app is enabled)", None),
    ],
)
def test_dropped_events_count_only_for_address_problems(reason: str, expected: BounceReason | None) -> None:
    found = parse([event("dropped", reason=reason)])
    if expected is None:
        assert found == []
    else:
        (bounce,) = found
        assert (bounce.kind, bounce.bounce_class, bounce.reason) == (FeedbackKind.BOUNCE, BounceClass.HARD, expected)


def test_the_ref_falls_back_to_a_message_id_of_ours() -> None:
    (found,) = parse([event("delivered", **{"smtp-id": f"<{REF}@mail.client.example>", "zgoda_ref": None})])
    assert found.send_ref == REF
    (found,) = parse([event("delivered", zgoda_ref="NOT-A-REF")])
    assert found.send_ref is None


def test_unknown_event_types_are_left_out() -> None:
    assert parse([event("account_status_change"), event("a_future_event")]) == []


def test_a_forged_signature_is_rejected() -> None:
    payload = body([event("spamreport")])
    other = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(WebhookRejected, match="does not match"):
        parse_sendgrid(payload, sendgrid_headers(payload, key=other), public_key=sendgrid_public_key(), now=NOW)


def test_a_body_changed_after_signing_is_rejected() -> None:
    payload = body([event("delivered")])
    headers = sendgrid_headers(payload)
    changed = payload.replace(b"jane@example.com", b"joan@example.com")
    with pytest.raises(WebhookRejected, match="does not match"):
        parse_sendgrid(changed, headers, public_key=sendgrid_public_key(), now=NOW)


def test_a_timestamp_header_changed_after_signing_is_rejected() -> None:
    payload = body([event("delivered")])
    headers = sendgrid_headers(payload)
    headers["X-Twilio-Email-Event-Webhook-Timestamp"] = str(int(NOW.timestamp()) + 1)
    with pytest.raises(WebhookRejected, match="does not match"):
        parse_sendgrid(payload, headers, public_key=sendgrid_public_key(), now=NOW)


@pytest.mark.parametrize("offset", [timedelta(minutes=11), -timedelta(minutes=11)])
def test_a_stale_or_future_timestamp_is_rejected(offset: timedelta) -> None:
    payload = body([event("delivered")])
    headers = sendgrid_headers(payload, timestamp=NOW - offset)
    with pytest.raises(WebhookRejected, match="outside the 0:10:00 window"):
        parse_sendgrid(payload, headers, public_key=sendgrid_public_key(), now=NOW)
    assert parse_sendgrid(payload, headers, public_key=sendgrid_public_key(), now=NOW, window=timedelta(minutes=12))


def test_headers_are_found_whatever_their_case() -> None:
    payload = body([event("delivered")])
    headers = {name.lower(): value for name, value in sendgrid_headers(payload).items()}
    assert parse_sendgrid(payload, headers, public_key=sendgrid_public_key(), now=NOW)


@pytest.mark.parametrize(
    ("drop", "message"),
    [
        ("X-Twilio-Email-Event-Webhook-Signature", "Signature header is missing"),
        ("X-Twilio-Email-Event-Webhook-Timestamp", "Timestamp header is missing"),
    ],
)
def test_missing_signature_headers_are_named(drop: str, message: str) -> None:
    payload = body([event("delivered")])
    headers = sendgrid_headers(payload)
    del headers[drop]
    with pytest.raises(WebhookRejected, match=message):
        parse_sendgrid(payload, headers, public_key=sendgrid_public_key(), now=NOW)


def test_garbled_signature_headers_are_rejected() -> None:
    payload = body([event("delivered")])
    headers = sendgrid_headers(payload)
    with pytest.raises(WebhookRejected, match="not base64"):
        parse_sendgrid(
            payload,
            {**headers, "X-Twilio-Email-Event-Webhook-Signature": "%%%"},
            public_key=sendgrid_public_key(),
            now=NOW,
        )
    with pytest.raises(WebhookRejected, match="not a Unix time"):
        parse_sendgrid(
            payload,
            {**headers, "X-Twilio-Email-Event-Webhook-Timestamp": "soon"},
            public_key=sendgrid_public_key(),
            now=NOW,
        )


def test_a_key_that_is_not_p256_is_a_configuration_error() -> None:
    payload = body([event("delivered")])
    with pytest.raises(ValueError, match="not a base64 DER or PEM public key"):
        parse_sendgrid(payload, sendgrid_headers(payload), public_key="bm90IGEga2V5", now=NOW)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"[{", "not valid JSON"),
        (json.dumps({"event": "delivered"}).encode(), "must be a JSON array"),
        (json.dumps(["delivered"]).encode(), r"events\[0\] must be a JSON object"),
    ],
)
def test_malformed_bodies_are_rejected(payload: bytes, message: str) -> None:
    with pytest.raises(WebhookRejected, match=message):
        parse(payload)


@pytest.mark.parametrize("field", ["email", "timestamp", "sg_event_id", "event"])
def test_a_missing_field_rejects_the_whole_batch_and_names_it(field: str) -> None:
    broken = event("delivered")
    del broken[field]
    with pytest.raises(WebhookRejected, match=rf"events\[1\]\.{field} is missing"):
        parse([event("open"), broken])


def test_a_bad_address_or_time_is_named() -> None:
    with pytest.raises(WebhookRejected, match=r"events\[0\]\.email is not an email address"):
        parse([event("delivered", email="jane")])
    with pytest.raises(WebhookRejected, match=r"events\[0\]\.timestamp must be a Unix time"):
        parse([event("delivered", timestamp="yesterday")])
