"""Keys, certificates and signers made in the tests, standing in for the providers' own."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from zgoda.feedback.providers.sns import string_to_sign

NOW = datetime(2026, 3, 2, 12, 0, 0, tzinfo=UTC)
REF = "abcdefghijklmnopqrstuvwxyz"  # 26 characters of base32
OTHER_REF = "zyxwvutsrqponmlkjihgfedcba"
CERT_URL = "https://sns.eu-central-1.amazonaws.com/SimpleNotificationService-abc.pem"
TOPIC = "arn:aws:sns:eu-central-1:123456789012:zgoda-ses-feedback"


@cache
def sns_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def sns_certificate(
    key: rsa.RSAPrivateKey | None = None, *, not_before: datetime | None = None, not_after: datetime | None = None
) -> bytes:
    """A self-signed PEM certificate for ``key`` (standing in for Amazon's sns.amazonaws.com one)."""
    key = key or sns_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or NOW - timedelta(days=1))
        .not_valid_after(not_after or NOW + timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM)


class FakeFetch:
    """An injectable ``fetch`` that serves fixed bytes and records every URL asked for."""

    def __init__(self, responses: dict[str, bytes] | None = None) -> None:
        self.responses = responses if responses is not None else {CERT_URL: sns_certificate()}
        self.calls: list[str] = []

    def __call__(self, url: str) -> bytes:
        self.calls.append(url)
        if url not in self.responses:
            raise ConnectionError(f"no route to {url}")
        return self.responses[url]


def sns_envelope(
    message: str | dict[str, Any],
    *,
    kind: str = "Notification",
    message_id: str = "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
    timestamp: datetime = NOW - timedelta(seconds=3),
    topic: str = TOPIC,
    cert_url: str = CERT_URL,
    version: str = "2",
    key: rsa.RSAPrivateKey | None = None,
    subject: str | None = None,
) -> dict[str, Any]:
    """A signed SNS HTTP(S) delivery body, following "HTTP/HTTPS notification JSON format"."""
    envelope: dict[str, Any] = {
        "Type": kind,
        "MessageId": message_id,
        "TopicArn": topic,
        "Message": message if isinstance(message, str) else json.dumps(message),
        "Timestamp": timestamp.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
        "SignatureVersion": version,
        "SigningCertURL": cert_url,
    }
    if subject is not None:
        envelope["Subject"] = subject
    if kind == "Notification":
        envelope["UnsubscribeURL"] = (
            f"https://sns.eu-central-1.amazonaws.com/?Action=Unsubscribe&SubscriptionArn={topic}:c9135db0"
        )
    else:
        envelope["Token"] = "2336412f37fb687f5d51e6e241d09c805a5a57b30d712f794cc5f6a988666d92768dd60a747ba6f3beb7"
        envelope["SubscribeURL"] = (
            f"https://sns.eu-central-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn={topic}"
            f"&Token={envelope['Token']}"
        )
    return sign_sns(envelope, version=version, key=key)


def sign_sns(envelope: dict[str, Any], *, version: str = "2", key: rsa.RSAPrivateKey | None = None) -> dict[str, Any]:
    algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
    signature = (key or sns_key()).sign(string_to_sign(envelope), padding.PKCS1v15(), algorithm)
    return {**envelope, "Signature": base64.b64encode(signature).decode()}


def body(document: Any) -> bytes:
    return json.dumps(document).encode()


@cache
def sendgrid_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def sendgrid_public_key(key: ec.EllipticCurvePrivateKey | None = None) -> str:
    """The verification key as SendGrid shows it: base64 DER SubjectPublicKeyInfo."""
    der = (
        (key or sendgrid_key())
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return base64.b64encode(der).decode()


def sendgrid_headers(
    payload: bytes, *, timestamp: datetime = NOW, key: ec.EllipticCurvePrivateKey | None = None
) -> dict[str, str]:
    stamp = str(int(timestamp.timestamp()))
    signature = (key or sendgrid_key()).sign(stamp.encode() + payload, ec.ECDSA(hashes.SHA256()))
    return {
        "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
        "X-Twilio-Email-Event-Webhook-Timestamp": stamp,
    }


MAILGUN_KEY = "key-test-mailgun-webhook-signing-0123456789"


def mailgun_body(
    event_data: dict[str, Any],
    *,
    timestamp: datetime = NOW,
    token: str = "e0b5477167110d68991efc6b9f89f0a11066af27834600e123",
    key: str = MAILGUN_KEY,
) -> bytes:
    stamp = str(int(timestamp.timestamp()))
    signature = hmac.new(key.encode(), f"{stamp}{token}".encode(), hashlib.sha256).hexdigest()
    return body({"signature": {"timestamp": stamp, "token": token, "signature": signature}, "event-data": event_data})


class TokenStore:
    """What a caller keeps: tokens it has accepted. ``seen`` answers and remembers, like a unique insert."""

    def __init__(self) -> None:
        self.tokens: set[str] = set()

    def seen(self, token: str) -> bool:
        if token in self.tokens:
            return True
        self.tokens.add(token)
        return False


def never_called(_: str) -> bytes:
    raise AssertionError("fetch must not be called")


Fetch = Callable[[str], bytes]
