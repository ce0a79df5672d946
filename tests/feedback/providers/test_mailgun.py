"""Mailgun webhooks: HMAC signature, freshness, one-time tokens, and the event mapping."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from zgoda.feedback.kinds import BounceClass, BounceReason, FeedbackKind
from zgoda.feedback.providers import ProviderEvent, WebhookRejected, parse_mailgun, verify_mailgun
from zgoda.feedback.providers.mailgun import mailgun_signature

from ._support import MAILGUN_KEY, NOW, REF, TokenStore, body, mailgun_body

EVENT_TIME = NOW - timedelta(minutes=1)


def event_data(event: str, **fields: Any) -> dict[str, Any]:
    """``event-data`` shaped as in Mailgun's "Webhook Payloads" page."""
    document: dict[str, Any] = {
        "id": f"G9Bn5sl1TC6nu79C8C0bwg-{event}",
        "timestamp": EVENT_TIME.timestamp(),
        "log-level": "info",
        "event": event,
        "recipient": "Jane@Example.com",
        "recipient-domain": "example.com",
        "envelope": {"sender": "bounces@mg.client.example", "targets": "jane@example.com", "transport": "smtp"},
        "message": {
            "headers": {
                "to": "jane@example.com",
                "message-id": f"{REF}@mail.client.example",
                "from": "Client <newsletter@client.example>",
                "subject": "March news",
            },
            "size": 4242,
        },
        "tags": ["newsletter"],
        "user-variables": {"zgoda_ref": REF},
        "flags": {"is-authenticated": True, "is-test-mode": False},
    }
    document.update(fields)
    return document


def failed(severity: str, *, reason: str = "bounce", **status: Any) -> dict[str, Any]:
    delivery_status = {
        "attempt-no": 1,
        "code": 550,
        "enhanced-code": "5.1.1",
        "message": "5.1.1 The email account that you tried to reach does not exist.",
        "description": "",
        "session-seconds": 0.43,
    }
    delivery_status.update(status)
    return event_data(
        "failed", severity=severity, reason=reason, **{"log-level": "error", "delivery-status": delivery_status}
    )


def parse(data: dict[str, Any], store: TokenStore | None = None, **options: Any) -> list[ProviderEvent]:
    return parse_mailgun(
        mailgun_body(data, **options), signing_key=MAILGUN_KEY, seen_token=(store or TokenStore()).seen, now=NOW
    )


def test_a_permanent_failure_is_a_hard_bounce() -> None:
    data = failed("permanent")
    (found,) = parse(data)
    assert found == ProviderEvent(
        provider="mailgun",
        event_id="G9Bn5sl1TC6nu79C8C0bwg-failed",
        kind=FeedbackKind.BOUNCE,
        recipient="jane@example.com",
        occurred_at=datetime.fromtimestamp(EVENT_TIME.timestamp(), UTC),
        bounce_class=BounceClass.HARD,
        reason=BounceReason.USER_UNKNOWN,
        status="5.1.1",
        diagnostic="5.1.1 The email account that you tried to reach does not exist.",
        send_ref=REF,
        provider_message_id=f"{REF}@mail.client.example",
    )
    assert found.raw == data


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            failed("permanent", code=552, **{"enhanced-code": "5.2.2", "message": "mailbox full"}),
            (BounceClass.SOFT, BounceReason.MAILBOX_FULL),
        ),
        (
            failed("permanent", reason="old", code=421, **{"enhanced-code": "", "message": "Too old"}),
            (BounceClass.SOFT, BounceReason.EXPIRED),
        ),
        (
            failed(
                "permanent",
                reason="suppress-bounce",
                code=605,
                **{"enhanced-code": "", "message": "", "description": "Not delivering to previously bounced address"},
            ),
            (BounceClass.HARD, BounceReason.OTHER),
        ),
        (
            failed("permanent", reason="generic", code=554, **{"enhanced-code": "", "message": "554 rejected"}),
            (BounceClass.HARD, BounceReason.OTHER),
        ),
        (
            failed("permanent", reason="generic", code=450, **{"enhanced-code": "", "message": "450 try later"}),
            (BounceClass.SOFT, BounceReason.OTHER),
        ),
        (
            failed("permanent", code=550, **{"enhanced-code": "5.7.26", "message": "DMARC"}),
            (BounceClass.SOFT, BounceReason.AUTHENTICATION),
        ),
    ],
)
def test_permanent_failures_map_by_reason_and_status(
    data: dict[str, Any], expected: tuple[BounceClass, BounceReason]
) -> None:
    (found,) = parse(data)
    assert (found.bounce_class, found.reason) == expected


def test_temporary_failures_and_account_suppressions_are_left_out() -> None:
    assert parse(failed("temporary", code=452, **{"enhanced-code": "4.2.2"})) == []
    assert parse(failed("permanent", reason="suppress-complaint", code=607)) == []
    assert parse(failed("permanent", reason="suppress-unsubscribe", code=606)) == []


@pytest.mark.parametrize(
    ("event", "kind"),
    [
        ("delivered", FeedbackKind.DELIVERY),
        ("complained", FeedbackKind.COMPLAINT),
        ("unsubscribed", FeedbackKind.UNSUBSCRIBE),
        ("opened", FeedbackKind.OPEN),
        ("clicked", FeedbackKind.CLICK),
    ],
)
def test_other_events_map_to_their_kinds(event: str, kind: FeedbackKind) -> None:
    (found,) = parse(event_data(event))
    assert (found.kind, found.recipient, found.send_ref, found.bounce_class) == (kind, "jane@example.com", REF, None)


@pytest.mark.parametrize("event", ["accepted", "rejected", "stored", "list_member_uploaded"])
def test_unused_events_are_left_out(event: str) -> None:
    assert parse(event_data(event)) == []


def test_the_ref_falls_back_to_the_message_id_and_survives_empty_user_variables() -> None:
    (found,) = parse(event_data("delivered", **{"user-variables": []}))
    assert found.send_ref == REF
    data = event_data("delivered", **{"user-variables": {"zgoda_ref": "bad"}})
    data["message"]["headers"]["message-id"] = "20260302.abc@mg.client.example"
    (found,) = parse(data)
    assert found.send_ref is None


def test_a_forged_signature_is_rejected() -> None:
    with pytest.raises(WebhookRejected, match="signature does not match"):
        parse_mailgun(
            mailgun_body(event_data("complained"), key="someone-elses-key"),
            signing_key=MAILGUN_KEY,
            seen_token=TokenStore().seen,
            now=NOW,
        )


def test_a_token_changed_after_signing_is_rejected() -> None:
    payload = json.loads(mailgun_body(event_data("complained")))
    payload["signature"]["token"] = "x" + payload["signature"]["token"][1:]
    with pytest.raises(WebhookRejected, match="signature does not match"):
        parse_mailgun(body(payload), signing_key=MAILGUN_KEY, seen_token=TokenStore().seen, now=NOW)


def test_a_stale_signature_is_rejected_and_the_window_is_configurable() -> None:
    old = mailgun_body(event_data("complained"), timestamp=NOW - timedelta(hours=9))
    with pytest.raises(WebhookRejected, match="older than"):
        parse_mailgun(old, signing_key=MAILGUN_KEY, seen_token=TokenStore().seen, now=NOW)
    recent = mailgun_body(event_data("complained"), timestamp=NOW - timedelta(minutes=20))
    with pytest.raises(WebhookRejected, match="older than"):
        parse_mailgun(
            recent, signing_key=MAILGUN_KEY, seen_token=TokenStore().seen, now=NOW, window=timedelta(minutes=15)
        )
    assert parse_mailgun(recent, signing_key=MAILGUN_KEY, seen_token=TokenStore().seen, now=NOW)


def test_a_signature_from_the_future_is_rejected() -> None:
    future = mailgun_body(event_data("complained"), timestamp=NOW + timedelta(minutes=6))
    with pytest.raises(WebhookRejected, match="in the future"):
        parse_mailgun(future, signing_key=MAILGUN_KEY, seen_token=TokenStore().seen, now=NOW)


def test_a_replayed_token_is_rejected() -> None:
    store = TokenStore()
    payload = mailgun_body(event_data("complained"))
    assert parse_mailgun(payload, signing_key=MAILGUN_KEY, seen_token=store.seen, now=NOW)
    with pytest.raises(WebhookRejected, match="already used"):
        parse_mailgun(payload, signing_key=MAILGUN_KEY, seen_token=store.seen, now=NOW)


def test_forged_and_malformed_requests_do_not_use_up_a_token() -> None:
    store = TokenStore()
    with pytest.raises(WebhookRejected):
        parse_mailgun(
            mailgun_body(event_data("complained"), key="wrong"), signing_key=MAILGUN_KEY, seen_token=store.seen, now=NOW
        )
    broken = event_data("complained")
    del broken["recipient"]
    with pytest.raises(WebhookRejected, match=r"event-data\.recipient is missing"):
        parse(broken, store)
    assert store.tokens == set()
    assert parse(event_data("complained"), store)  # the same token, now with a good payload


def test_verify_mailgun_asks_the_token_store_last() -> None:
    asked: list[str] = []

    def seen(token: str) -> bool:
        asked.append(token)
        return False

    stamp = str(int(NOW.timestamp()))
    with pytest.raises(WebhookRejected):
        verify_mailgun(
            signing_key=MAILGUN_KEY, timestamp=stamp, token="t" * 50, signature="0" * 64, seen_token=seen, now=NOW
        )
    assert asked == []
    good = mailgun_signature(MAILGUN_KEY, stamp, "t" * 50)
    verify_mailgun(signing_key=MAILGUN_KEY, timestamp=stamp, token="t" * 50, signature=good, seen_token=seen, now=NOW)
    assert asked == ["t" * 50]


def test_a_numeric_timestamp_in_the_signature_block_is_accepted() -> None:
    payload = json.loads(mailgun_body(event_data("delivered")))
    payload["signature"]["timestamp"] = int(payload["signature"]["timestamp"])
    assert parse_mailgun(body(payload), signing_key=MAILGUN_KEY, seen_token=TokenStore().seen, now=NOW)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: p.pop("signature"), "signature is missing"),
        (lambda p: p["signature"].pop("token"), "signature.token is missing"),
        (lambda p: p["signature"].pop("signature"), "signature.signature is missing"),
        (lambda p: p["signature"].pop("timestamp"), "signature.timestamp is missing"),
        (lambda p: p.pop("event-data"), "event-data is missing"),
        (lambda p: p["event-data"].pop("id"), "event-data.id is missing"),
        (lambda p: p["event-data"].pop("timestamp"), "event-data.timestamp is missing"),
        (lambda p: p["event-data"].pop("event"), "event-data.event is missing"),
        (lambda p: p["event-data"].update(recipient="not an address"), "event-data.recipient is not an email address"),
    ],
)
def test_missing_fields_are_named(change: Any, message: str) -> None:
    payload = copy.deepcopy(json.loads(mailgun_body(event_data("complained"))))
    change(payload)
    with pytest.raises(WebhookRejected, match=message):
        parse_mailgun(body(payload), signing_key=MAILGUN_KEY, seen_token=TokenStore().seen, now=NOW)


def test_a_failure_needs_its_severity() -> None:
    data = failed("permanent")
    del data["severity"]
    with pytest.raises(WebhookRejected, match=r"event-data\.severity is missing"):
        parse(data)


def test_malformed_json_is_rejected() -> None:
    with pytest.raises(WebhookRejected, match="not valid JSON"):
        parse_mailgun(b"token=abc&signature=def", signing_key=MAILGUN_KEY, seen_token=TokenStore().seen, now=NOW)
