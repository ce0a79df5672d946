"""Amazon SNS HTTP(S) delivery: the envelope around SES notifications, and how to trust it.

What is checked, in this order (cheap and offline first):

1. the body is an SNS JSON document of a known ``Type`` with the fields its signature covers;
2. ``TopicArn`` is on the caller's allow-list, when one is given;
3. ``Timestamp`` is at most ``max_age`` old (default 90 minutes: SNS stops retrying an HTTP/S delivery
   after 3,600 seconds at most, plus room for throttling and clock skew) and not from the future;
4. ``SigningCertURL`` is ``https://sns.<region>.amazonaws.com[.cn]/<name>.pem`` and nothing else —
   checked before anything is fetched, so a forged URL never makes us connect anywhere;
5. the certificate (fetched over HTTPS, whose TLS verification vouches for the Amazon host, and cached)
   is currently valid, and its RSA key verifies ``Signature`` over the documented string to sign:
   SHA1withRSA for ``SignatureVersion`` 1, SHA256withRSA for 2.

Duplicates are the caller's: SNS keeps ``MessageId`` across retries, and ProviderEvent ids derive from it.
"""

from __future__ import annotations

import base64
import binascii
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from zgoda.feedback.providers._fields import as_object, iso_time, load_json, optional_str, require_str
from zgoda.feedback.providers.errors import WebhookRejected

Fetch = Callable[[str], bytes]
SnsType = Literal["Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation"]

DEFAULT_MAX_AGE = timedelta(minutes=90)
FUTURE_SKEW = timedelta(minutes=5)
FETCH_TIMEOUT_SECONDS = 5.0
MAX_FETCH_BYTES = 64 * 1024

# The keys each signature covers, in the documented order ("Subject" only when present).
NOTIFICATION_KEYS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
CONFIRMATION_KEYS = ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type")
_TYPES: tuple[SnsType, ...] = ("Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation")

# A region is letters-letters-digit (us-east-1, eu-central-1, us-gov-west-1, cn-north-1): a bare
# "[a-z0-9-]+" would also admit hosts such as sns.s3.amazonaws.com, an S3 bucket anyone could name "sns".
_SNS_HOST = r"sns\.[a-z]{2}(?:-[a-z]+)+-\d{1,2}\.amazonaws\.com(?:\.cn)?"
_CERT_URL = re.compile(rf"https://{_SNS_HOST}/[A-Za-z0-9._-]+(?:/[A-Za-z0-9._-]+)*\.pem")
_SUBSCRIBE_URL = re.compile(rf"https://{_SNS_HOST}/\?[A-Za-z0-9._~%&=:+-]+")


@dataclass(frozen=True)
class SnsMessage:
    """A verified SNS envelope. ``message`` is the published text (for SES, a JSON document)."""

    type: SnsType
    message_id: str
    topic_arn: str
    timestamp: datetime
    message: str
    subject: str | None
    subscribe_url: str | None
    token: str | None
    signing_cert_url: str
    raw: dict[str, Any] = field(hash=False, compare=False, repr=False)


def check_cert_url(url: str) -> str:
    """``url`` if it names an SNS signing certificate on an Amazon SNS host, else WebhookRejected."""
    if not _CERT_URL.fullmatch(url):
        raise WebhookRejected(
            f"SigningCertURL {url!r} is not an https://sns.<region>.amazonaws.com/….pem address; not fetched."
        )
    return url


def check_subscribe_url(url: str) -> str:
    """``url`` if it is an SNS ``?Action=…`` address on an Amazon SNS host, else WebhookRejected."""
    if not _SUBSCRIBE_URL.fullmatch(url):
        raise WebhookRejected(f"SubscribeURL {url!r} is not an https://sns.<region>.amazonaws.com/?… address.")
    return url


def default_fetch(url: str) -> bytes:
    """GET ``url`` over verified HTTPS, with a short timeout, no redirects and a size cap."""
    with httpx.Client(timeout=FETCH_TIMEOUT_SECONDS, follow_redirects=False) as client:
        response = client.get(url)
        response.raise_for_status()
        if len(response.content) > MAX_FETCH_BYTES:
            raise ValueError(f"{url} answered with more than {MAX_FETCH_BYTES} bytes")
        return response.content


class CertificateCache:
    """A bounded LRU of parsed signing certificates by URL; thread-safe. SNS reuses one per region."""

    def __init__(self, maxsize: int = 16) -> None:
        if maxsize < 1:
            raise ValueError("CertificateCache needs room for at least one certificate")
        self.maxsize = maxsize
        self._items: OrderedDict[str, x509.Certificate] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, url: str, fetch: Fetch) -> x509.Certificate:
        """The certificate at ``url`` (which must already have passed check_cert_url), fetched on a miss."""
        with self._lock:
            cached = self._items.get(url)
            if cached is not None:
                self._items.move_to_end(url)
                return cached
        try:
            pem = fetch(url)
        except Exception as error:  # any fetch failure is a transient refusal, reported as such
            raise WebhookRejected(
                f"Could not fetch the SNS signing certificate {url}: {type(error).__name__}.", retryable=True
            ) from error
        try:
            certificate = x509.load_pem_x509_certificate(pem)
        except ValueError:
            raise WebhookRejected(f"{url} did not answer with a PEM X.509 certificate.") from None
        with self._lock:
            self._items[url] = certificate
            self._items.move_to_end(url)
            while len(self._items) > self.maxsize:
                self._items.popitem(last=False)
        return certificate


_default_cache = CertificateCache()


def string_to_sign(envelope: dict[str, Any]) -> bytes:
    """The canonical text SNS signs: ``key\\nvalue\\n`` for each covered key, in the documented order."""
    keys = NOTIFICATION_KEYS if envelope.get("Type") == "Notification" else CONFIRMATION_KEYS
    parts: list[str] = []
    for key in keys:
        value = envelope.get(key)
        if value is None and key == "Subject":
            continue
        if not isinstance(value, str):
            raise WebhookRejected(f"SNS field {key} is missing or not a string.")
        parts.append(f"{key}\n{value}\n")
    return "".join(parts).encode("utf-8")


def parse_sns(body: bytes) -> SnsMessage:
    """The SNS envelope in ``body``, read strictly but NOT verified: use verify_sns for anything you act on."""
    envelope = as_object(load_json(body, "SNS"), "The SNS body")
    kind = require_str(envelope, "Type", "")
    if kind not in _TYPES:
        raise WebhookRejected(f"Type {kind!r} is not an SNS message type ({', '.join(_TYPES)}).")
    confirmation = kind != "Notification"
    string_to_sign(envelope)  # every signed field present and a string
    return SnsMessage(
        type=kind,
        message_id=require_str(envelope, "MessageId", ""),
        topic_arn=require_str(envelope, "TopicArn", ""),
        timestamp=iso_time(envelope, "Timestamp", ""),
        message=envelope["Message"],
        subject=optional_str(envelope, "Subject", ""),
        subscribe_url=require_str(envelope, "SubscribeURL", "") if confirmation else None,
        token=require_str(envelope, "Token", "") if confirmation else None,
        signing_cert_url=require_str(envelope, "SigningCertURL", ""),
        raw=envelope,
    )


def verify_sns(
    body: bytes,
    *,
    topic_arns: Collection[str] | None = None,
    fetch: Fetch | None = None,
    cache: CertificateCache | None = None,
    max_age: timedelta = DEFAULT_MAX_AGE,
    now: datetime | None = None,
) -> SnsMessage:
    """Parse and verify an SNS POST body; the SnsMessage it returns came from Amazon SNS, unchanged.

    ``topic_arns``: when given, only these topics are accepted. ``fetch`` gets a certificate's bytes
    (default: httpx over HTTPS). Raises WebhookRejected saying which check failed.
    """
    message = parse_sns(body)
    envelope = message.raw
    if topic_arns is not None and message.topic_arn not in topic_arns:
        raise WebhookRejected(f"TopicArn {message.topic_arn!r} is not one this endpoint accepts.")
    current = (now or datetime.now(UTC)).astimezone(UTC)
    if current - message.timestamp > max_age:
        raise WebhookRejected(
            f"SNS message {message.message_id} is from {message.timestamp.isoformat()}, older than {max_age}."
        )
    if message.timestamp - current > FUTURE_SKEW:
        raise WebhookRejected(f"SNS message {message.message_id} is dated in the future.")
    version = envelope.get("SignatureVersion")
    if version == "1":
        algorithm: hashes.HashAlgorithm = hashes.SHA1()  # noqa: S303 - SNS SignatureVersion 1 is SHA1withRSA
    elif version == "2":
        algorithm = hashes.SHA256()
    else:
        raise WebhookRejected(f"SignatureVersion {version!r} is not supported (1 or 2).")
    url = check_cert_url(message.signing_cert_url)
    try:
        signature = base64.b64decode(require_str(envelope, "Signature", ""), validate=True)
    except (binascii.Error, ValueError):
        raise WebhookRejected("Signature is not valid base64.") from None
    certificate = (cache if cache is not None else _default_cache).get(url, fetch or default_fetch)
    if not certificate.not_valid_before_utc <= current <= certificate.not_valid_after_utc:
        raise WebhookRejected(f"The SNS signing certificate {url} is not valid at {current.isoformat()}.")
    public_key = certificate.public_key()
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise WebhookRejected(f"The SNS signing certificate {url} does not hold an RSA key.")
    try:
        public_key.verify(signature, string_to_sign(envelope), padding.PKCS1v15(), algorithm)
    except InvalidSignature:
        raise WebhookRejected(f"The signature of SNS message {message.message_id} does not match.") from None
    return message


def confirm_subscription(url: str, fetch: Fetch | None = None) -> bytes:
    """GET a SubscriptionConfirmation's ``SubscribeURL`` (host-checked first) to start receiving messages.

    Call it only with the URL of a message verify_sns accepted. Returns SNS's answer (XML).
    """
    checked = check_subscribe_url(url)
    try:
        return (fetch or default_fetch)(checked)
    except Exception as error:  # reported as a retryable refusal
        raise WebhookRejected(
            f"Could not confirm the SNS subscription: {type(error).__name__}.", retryable=True
        ) from error
