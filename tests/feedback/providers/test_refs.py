"""Send refs out (provider_ref_headers) and back in: each provider's way of echoing them, end to end."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage

import pytest

from zgoda.feedback.kinds import FeedbackKind
from zgoda.feedback.providers import (
    CertificateCache,
    ProviderEvent,
    parse_mailgun,
    parse_postmark,
    parse_sendgrid,
    parse_ses,
    provider_ref_headers,
    ref_from_message_id,
    valid_ref,
)

from ._support import (
    MAILGUN_KEY,
    NOW,
    OTHER_REF,
    REF,
    FakeFetch,
    TokenStore,
    body,
    mailgun_body,
    sendgrid_headers,
    sendgrid_public_key,
    sns_envelope,
)


def outgoing(provider: str, ref: str) -> EmailMessage:
    """A message as delivery would build it: the common ref headers plus the provider's extras."""
    message = EmailMessage()
    message["From"] = "Client <newsletter@client.example>"
    message["To"] = "jane@example.com"
    message["Subject"] = "March news"
    message["Message-ID"] = f"<{OTHER_REF}@mail.client.example>"  # deliberately another ref: the extras win
    for name, value in provider_ref_headers(provider, ref).items():
        message[name] = value
    message.set_content("Hello")
    return message


def test_headers_per_provider() -> None:
    assert provider_ref_headers("ses", REF) == {"X-Zgoda-Ref": REF}
    assert json.loads(provider_ref_headers("sendgrid", REF)["X-SMTPAPI"]) == {"unique_args": {"zgoda_ref": REF}}
    assert json.loads(provider_ref_headers("mailgun", REF)["X-Mailgun-Variables"]) == {"zgoda_ref": REF}
    assert provider_ref_headers("postmark", REF) == {"X-PM-Metadata-zgoda-ref": REF}
    assert provider_ref_headers("smtp", REF) == {}
    assert provider_ref_headers("none", REF) == {}


@pytest.mark.parametrize("ref", ["", "short", REF.upper(), REF + "a", "abcdefghijklmnopqrstuvwxy1", f" {REF}"])
def test_only_real_refs_go_out(ref: str) -> None:
    with pytest.raises(ValueError, match="not a send ref"):
        provider_ref_headers("ses", ref)


def test_an_unknown_provider_is_named() -> None:
    with pytest.raises(ValueError, match="Unknown provider 'sparkpost'"):
        provider_ref_headers("sparkpost", REF)


def test_refs_are_validated_on_the_way_in() -> None:
    assert valid_ref(REF) == REF
    assert valid_ref(f" {REF.upper()} ") == REF  # some MTAs fold case
    assert valid_ref("abc") is None
    assert valid_ref(None) is None
    assert valid_ref(12) is None
    assert ref_from_message_id(f"<{REF}@mail.client.example>") == REF
    assert ref_from_message_id(f"{REF}@mail.client.example") == REF
    assert ref_from_message_id("<0102018e0a6f6a54@email.amazonses.com>") is None
    assert ref_from_message_id(REF) is None


def ses_echo(message: EmailMessage) -> dict[str, object]:
    """What SES reports with "include original headers" on: mail.headers and mail.commonHeaders."""
    return {
        "notificationType": "Delivery",
        "mail": {
            "timestamp": "2026-03-02T11:58:00.000Z",
            "messageId": "0102018e0a6f6a54-0000",
            "destination": ["jane@example.com"],
            "headers": [{"name": name, "value": str(value)} for name, value in message.items()],
            "commonHeaders": {"messageId": message["Message-ID"], "to": ["jane@example.com"]},
        },
        "delivery": {"timestamp": "2026-03-02T11:58:05.000Z", "recipients": ["jane@example.com"]},
    }


def sendgrid_echo(message: EmailMessage) -> list[dict[str, object]]:
    """SendGrid merges the X-SMTPAPI unique_args into each event as top-level keys."""
    unique_args = json.loads(message["X-SMTPAPI"])["unique_args"]
    event = {
        "email": "jane@example.com",
        "timestamp": int(NOW.timestamp()),
        "event": "delivered",
        "sg_event_id": "ZGVsaXZlcmVk",
        "sg_message_id": "abc.filter0001",
        "smtp-id": "<14c5d75ce93.dfd.64b469@ismtpd-555>",
    }
    return [{**event, **unique_args}]


def mailgun_echo(message: EmailMessage) -> dict[str, object]:
    """Mailgun turns X-Mailgun-Variables into event-data.user-variables."""
    return {
        "id": "G9Bn5sl1TC6nu79C8C0bwg",
        "timestamp": NOW.timestamp(),
        "event": "delivered",
        "recipient": "jane@example.com",
        "message": {"headers": {"message-id": "20260302115800.1a2b3c@mg.client.example"}},
        "user-variables": json.loads(message["X-Mailgun-Variables"]),
    }


def postmark_echo(message: EmailMessage) -> dict[str, object]:
    """Postmark turns each X-PM-Metadata-<key> header into Metadata[<key>]."""
    prefix = "x-pm-metadata-"
    metadata = {name[len(prefix) :]: value for name, value in message.items() if name.lower().startswith(prefix)}
    return {
        "RecordType": "Delivery",
        "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
        "Recipient": "jane@example.com",
        "DeliveredAt": "2026-03-02T11:58:10Z",
        "Metadata": metadata,
    }


def through_provider(provider: str, message: EmailMessage) -> list[ProviderEvent]:
    if provider == "ses":
        document = sns_envelope(ses_echo(message), timestamp=NOW - timedelta(seconds=5))
        return parse_ses(body(document), fetch=FakeFetch(), cache=CertificateCache(), now=NOW).events
    if provider == "sendgrid":
        payload = body(sendgrid_echo(message))
        return parse_sendgrid(payload, sendgrid_headers(payload), public_key=sendgrid_public_key(), now=NOW)
    if provider == "mailgun":
        return parse_mailgun(
            mailgun_body(mailgun_echo(message)), signing_key=MAILGUN_KEY, seen_token=TokenStore().seen, now=NOW
        )
    return parse_postmark(body(postmark_echo(message)))


@pytest.mark.parametrize("provider", ["ses", "sendgrid", "mailgun", "postmark"])
def test_the_ref_survives_the_round_trip_through_each_provider(provider: str) -> None:
    (event,) = through_provider(provider, outgoing(provider, REF))
    assert event.kind is FeedbackKind.DELIVERY
    assert event.send_ref == REF
    assert event.occurred_at.tzinfo is UTC and event.occurred_at <= datetime(2026, 3, 2, 12, tzinfo=UTC)
