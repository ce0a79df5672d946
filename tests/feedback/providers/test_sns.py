"""SNS envelope verification: certificate URL, signature versions, freshness, topics, certificate cache."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from zgoda.feedback.providers import (
    CertificateCache,
    SnsMessage,
    WebhookRejected,
    check_cert_url,
    confirm_subscription,
    parse_ses,
    verify_sns,
)
from zgoda.feedback.providers.sns import string_to_sign

from ._support import (
    CERT_URL,
    NOW,
    TOPIC,
    FakeFetch,
    Fetch,
    body,
    never_called,
    sign_sns,
    sns_certificate,
    sns_envelope,
)


def verify(document: dict[str, Any], fetch: Fetch | None = None, **options: Any) -> SnsMessage:
    return verify_sns(body(document), fetch=fetch or FakeFetch(), cache=CertificateCache(), now=NOW, **options)


@pytest.mark.parametrize("version", ["1", "2"])
def test_both_signature_versions_verify(version: str) -> None:
    message = verify(sns_envelope("hello", version=version, subject="Greeting"))
    assert message.type == "Notification"
    assert message.message == "hello"
    assert message.subject == "Greeting"
    assert message.topic_arn == TOPIC


def test_string_to_sign_follows_the_documented_keys_and_order() -> None:
    notification = {"Type": "Notification", "MessageId": "m", "TopicArn": "t", "Message": "x\ny", "Timestamp": "ts"}
    assert (
        string_to_sign(notification) == b"Message\nx\ny\nMessageId\nm\nTimestamp\nts\nTopicArn\nt\nType\nNotification\n"
    )
    with_subject = {**notification, "Subject": "s"}
    assert b"MessageId\nm\nSubject\ns\nTimestamp" in string_to_sign(with_subject)
    confirmation = {
        "Type": "SubscriptionConfirmation",
        "MessageId": "m",
        "TopicArn": "t",
        "Message": "x",
        "Timestamp": "ts",
        "Token": "k",
        "SubscribeURL": "u",
        "Subject": "ignored",
    }
    assert string_to_sign(confirmation) == (
        b"Message\nx\nMessageId\nm\nSubscribeURL\nu\nTimestamp\nts\nToken\nk\nTopicArn\nt\nType\nSubscriptionConfirmation\n"
    )


def test_a_forged_signature_is_rejected() -> None:
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = sns_envelope("hello", key=other_key)
    with pytest.raises(WebhookRejected, match=r"signature .* does not match"):
        verify(forged)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("Message", "hello!"),
        ("MessageId", "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf325"),
        ("Timestamp", "2026-03-02T11:59:58.000Z"),
        ("TopicArn", "arn:aws:sns:eu-central-1:123456789012:other"),
        ("Subject", "Greetings"),
    ],
)
def test_a_field_changed_after_signing_is_rejected(field: str, value: str) -> None:
    document = sns_envelope("hello", subject="Greeting")
    assert document[field] != value
    document[field] = value
    with pytest.raises(WebhookRejected, match="does not match"):
        verify(document)


def test_a_version_1_signature_does_not_pass_as_version_2() -> None:
    document = sns_envelope("hello", version="1")
    document["SignatureVersion"] = "2"
    with pytest.raises(WebhookRejected, match="does not match"):
        verify(document)


@pytest.mark.parametrize("version", [None, "3", 2])
def test_unknown_signature_versions_are_rejected(version: object) -> None:
    document = sns_envelope("hello")
    document["SignatureVersion"] = version
    with pytest.raises(WebhookRejected, match="SignatureVersion"):
        verify(document, fetch=never_called)


@pytest.mark.parametrize(
    "url",
    [
        "http://sns.eu-central-1.amazonaws.com/SimpleNotificationService-abc.pem",
        "https://evil.com/SimpleNotificationService-abc.pem",
        "https://sns.amazonaws.com.evil.com/SimpleNotificationService-abc.pem",
        "https://sns.eu-central-1.amazonaws.com.evil.com/SimpleNotificationService-abc.pem",
        "https://amazonaws.com.attacker.net/SimpleNotificationService-abc.pem",
        "https://sns.eu-central-1.amazonaws.com@evil.com/SimpleNotificationService-abc.pem",
        "https://evil.com\\@sns.eu-central-1.amazonaws.com/SimpleNotificationService-abc.pem",
        "https://sns.s3.amazonaws.com/SimpleNotificationService-abc.pem",  # an S3 bucket called "sns"
        "https://sns.eu-central-1.amazonaws.com:8443/SimpleNotificationService-abc.pem",
        "https://sns.eu-central-1.amazonaws.com/SimpleNotificationService-abc.txt",
        "https://sns.eu-central-1.amazonaws.com/SimpleNotificationService-abc.pem?x=1",
        "https://SNS.EU-CENTRAL-1.AMAZONAWS.COM/SimpleNotificationService-abc.pem",
        "",
    ],
)
def test_certificate_urls_off_amazon_sns_hosts_are_rejected_without_fetching(url: str) -> None:
    with pytest.raises(WebhookRejected, match="SigningCertURL"):
        verify(sns_envelope("hello", cert_url=url), fetch=never_called)


@pytest.mark.parametrize(
    "url",
    [
        CERT_URL,
        "https://sns.us-gov-west-1.amazonaws.com/SimpleNotificationService-0123.pem",
        "https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-0123.pem",
        "https://sns.ap-southeast-2.amazonaws.com/SimpleNotificationService-bb750dd426d95ee9390147a5624348ee.pem",
    ],
)
def test_amazon_sns_certificate_urls_are_accepted(url: str) -> None:
    assert check_cert_url(url) == url


def test_the_certificate_is_fetched_once_and_cached() -> None:
    fetch = FakeFetch()
    cache = CertificateCache()
    for n in range(3):
        verify_sns(body(sns_envelope(f"m{n}", message_id=f"id-{n}")), fetch=fetch, cache=cache, now=NOW)
    assert fetch.calls == [CERT_URL]


def test_the_certificate_cache_is_bounded_and_evicts_the_least_recently_used() -> None:
    urls = [f"https://sns.eu-central-1.amazonaws.com/SimpleNotificationService-{n}.pem" for n in range(3)]
    fetch = FakeFetch({url: sns_certificate() for url in urls})
    cache = CertificateCache(maxsize=2)
    for url in [urls[0], urls[1], urls[0], urls[2], urls[0], urls[1]]:
        verify_sns(body(sns_envelope("m", cert_url=url)), fetch=fetch, cache=cache, now=NOW)
    assert len(cache) == 2
    # urls[1] was evicted by urls[2] (urls[0] had been used more recently), so it is fetched twice.
    assert fetch.calls == [urls[0], urls[1], urls[2], urls[1]]


def test_a_fetch_failure_is_a_retryable_rejection() -> None:
    with pytest.raises(WebhookRejected) as caught:
        verify(sns_envelope("hello"), fetch=FakeFetch({}))
    assert caught.value.retryable
    assert "Could not fetch" in caught.value.reason


def test_a_fetched_document_that_is_not_a_certificate_is_rejected() -> None:
    with pytest.raises(WebhookRejected, match=r"PEM X\.509"):
        verify(sns_envelope("hello"), fetch=FakeFetch({CERT_URL: b"<html>hello</html>"}))


@pytest.mark.parametrize(
    ("not_before", "not_after"),
    [(NOW - timedelta(days=400), NOW - timedelta(days=1)), (NOW + timedelta(days=1), NOW + timedelta(days=400))],
)
def test_a_certificate_outside_its_validity_is_rejected(not_before: object, not_after: object) -> None:
    fetch = FakeFetch({CERT_URL: sns_certificate(not_before=not_before, not_after=not_after)})  # type: ignore[arg-type]
    with pytest.raises(WebhookRejected, match="not valid at"):
        verify(sns_envelope("hello"), fetch=fetch)


def test_a_message_older_than_the_maximum_age_is_rejected_before_fetching() -> None:
    old = sns_envelope("hello", timestamp=NOW - timedelta(minutes=91))
    with pytest.raises(WebhookRejected, match="older than"):
        verify(old, fetch=never_called)
    assert verify(sns_envelope("hello", timestamp=NOW - timedelta(minutes=89)))
    with pytest.raises(WebhookRejected, match="older than"):
        verify(sns_envelope("hello", timestamp=NOW - timedelta(minutes=11)), max_age=timedelta(minutes=10))


def test_a_message_from_the_future_is_rejected() -> None:
    with pytest.raises(WebhookRejected, match="future"):
        verify(sns_envelope("hello", timestamp=NOW + timedelta(minutes=6)), fetch=never_called)


def test_topics_outside_the_allow_list_are_rejected_before_fetching() -> None:
    document = sns_envelope("hello", topic="arn:aws:sns:eu-central-1:999999999999:someone-else")
    with pytest.raises(WebhookRejected, match="TopicArn"):
        verify(document, fetch=never_called, topic_arns={TOPIC})
    assert verify(sns_envelope("hello"), topic_arns={TOPIC})


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe", "not UTF-8"),
        (b"[]", "must be a JSON object"),
        (b'{"Type": "Notification"}', "Message is missing or not a string"),
        (b'{"Type": "Gossip"}', "not an SNS message type"),
        (b"{}", "Type is missing"),
    ],
)
def test_malformed_envelopes_are_rejected(raw: bytes, message: str) -> None:
    with pytest.raises(WebhookRejected, match=message):
        verify_sns(raw, fetch=never_called, now=NOW)


@pytest.mark.parametrize("missing", ["MessageId", "Timestamp", "TopicArn", "SigningCertURL", "Signature"])
def test_missing_envelope_fields_are_named(missing: str) -> None:
    document = sns_envelope("hello")
    del document[missing]
    with pytest.raises(WebhookRejected, match=missing):
        verify(document)


def test_a_subscription_confirmation_tells_the_caller_what_to_get() -> None:
    document = sns_envelope(
        f"You have chosen to subscribe to the topic {TOPIC}.\nTo confirm the subscription, visit the SubscribeURL.",
        kind="SubscriptionConfirmation",
        message_id="165545c9-2a5c-472c-8df2-7ff2be2b3b1b",
    )
    result = parse_ses(body(document), fetch=FakeFetch(), cache=CertificateCache(), now=NOW)
    assert result.events == []
    assert result.subscribe_url == document["SubscribeURL"]
    fetch = FakeFetch({document["SubscribeURL"]: b"<ConfirmSubscriptionResponse/>"})
    assert result.subscribe_url is not None
    assert confirm_subscription(result.subscribe_url, fetch) == b"<ConfirmSubscriptionResponse/>"
    assert fetch.calls == [document["SubscribeURL"]]


def test_a_subscription_confirmation_with_a_changed_subscribe_url_is_rejected() -> None:
    document = sns_envelope("confirm", kind="SubscriptionConfirmation")
    document["SubscribeURL"] = document["SubscribeURL"].replace("Token=", "Token=0")
    with pytest.raises(WebhookRejected, match="does not match"):
        parse_ses(body(document), fetch=FakeFetch(), cache=CertificateCache(), now=NOW)


def test_an_unsubscribe_confirmation_is_verified_and_carries_nothing_to_do() -> None:
    document = sns_envelope("unsubscribed", kind="UnsubscribeConfirmation")
    result = parse_ses(body(document), fetch=FakeFetch(), cache=CertificateCache(), now=NOW)
    assert result.events == []
    assert result.subscribe_url is None
    assert result.message.type == "UnsubscribeConfirmation"


@pytest.mark.parametrize(
    "url",
    [
        "http://sns.eu-central-1.amazonaws.com/?Action=ConfirmSubscription&Token=1",
        "https://evil.com/?Action=ConfirmSubscription&Token=1",
        "https://sns.eu-central-1.amazonaws.com.evil.com/?Action=ConfirmSubscription",
        "https://sns.eu-central-1.amazonaws.com@evil.com/?Action=ConfirmSubscription",
        "https://sns.eu-central-1.amazonaws.com/?Action=ConfirmSubscription#@evil.com",
    ],
)
def test_confirm_subscription_refuses_other_hosts_without_fetching(url: str) -> None:
    with pytest.raises(WebhookRejected, match="SubscribeURL"):
        confirm_subscription(url, never_called)


def test_resigning_with_the_right_key_after_a_change_is_what_makes_it_valid() -> None:
    """Guards the tamper tests: the verifier accepts a changed body once it is signed again."""
    document = sns_envelope(json.dumps({"x": 1}))
    changed = sign_sns({**document, "Message": json.dumps({"x": 2})})
    assert verify(changed).message == '{"x": 2}'
