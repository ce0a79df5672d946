"""DKIM signing per sending domain (RFC 6376, rsa-sha256, relaxed/relaxed).

``DkimSigner`` canonicalises and hashes here (relaxed header and body canonicalisation, RFC 6376
§3.4.2 and §3.4.4) and signs with ``cryptography`` (OpenSSL), because dkimpy's RSA is pure Python
and re-parses the key on every signature: about 40 times slower (figures in docs/delivery.md).
dkimpy stays the reference: the tests verify every signature made here with ``dkim.verify``.

What is signed by default: the headers in ``DEFAULT_SIGNED_HEADERS``. A listed header that the
message lacks is still named in ``h=`` (an empty value is hashed), so nobody can add it later
without breaking the signature; that is how List-Unsubscribe and List-Unsubscribe-Post stay
covered as RFC 8058 requires.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

__all__ = [
    "DEFAULT_SIGNED_HEADERS",
    "DkimKey",
    "DkimSigner",
    "PendingSignature",
    "canonicalize_body_relaxed",
    "canonicalize_header_relaxed",
    "dns_record",
    "dns_txt_chunks",
    "dns_txt_quoted",
    "generate_key",
    "verify",
]

DEFAULT_SIGNED_HEADERS: tuple[bytes, ...] = (
    b"from",
    b"to",
    b"cc",
    b"subject",
    b"date",
    b"message-id",
    b"reply-to",
    b"sender",
    b"mime-version",
    b"content-type",
    b"content-transfer-encoding",
    b"list-unsubscribe",
    b"list-unsubscribe-post",
    b"list-id",
    b"feedback-id",
    b"in-reply-to",
    b"references",
)
"""RFC 6376 §5.4.1's recommendations plus RFC 8058's List-Unsubscribe(-Post), List-Id and Feedback-ID."""

_NOT_SIGNABLE = frozenset({b"dkim-signature", b"return-path", b"received", b"bcc", b"resent-bcc"})
_EOL = re.compile(rb"\r\n|\r|\n")
_TRAILING_WSP = re.compile(rb"[ \t]+\r\n")
_WSP_TO_SQUEEZE = re.compile(rb"\t[ \t]*| [ \t]+")
_WSP_RUN = re.compile(rb"[ \t]+")
_TOKEN = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.\-_]*[A-Za-z0-9])?$")
_HEADER_NAME = re.compile(rb"^[\x21-\x39\x3b-\x7e]+$")


@dataclass(frozen=True)
class DkimKey:
    """A new RSA key pair: the private key to keep secret, the public key for DNS."""

    private_key_pem: bytes
    """PKCS#1 (``BEGIN RSA PRIVATE KEY``), the form dkimpy, OpenDKIM and most MTAs read."""
    public_key_b64: str
    """Base64 of the SubjectPublicKeyInfo DER: the ``p=`` value of the DNS record."""
    bits: int


def generate_key(bits: int = 2048) -> DkimKey:
    """A fresh RSA key for one sending domain (2048 bits: long enough, and fits a TXT record in two strings)."""
    if bits < 1024:
        raise ValueError("DKIM keys shorter than 1024 bits are refused by verifiers (RFC 8301); use 2048.")
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    pem = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    der = private_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return DkimKey(private_key_pem=pem, public_key_b64=base64.b64encode(der).decode("ascii"), bits=bits)


def dns_record(domain: str, selector: str, public_key_b64: str) -> tuple[str, str]:
    """The TXT record to publish: (``<selector>._domainkey.<domain>``, ``v=DKIM1; k=rsa; p=...``)."""
    return f"{_token(selector, 'selector')}._domainkey.{_domain(domain)}", f"v=DKIM1; k=rsa; p={public_key_b64}"


def dns_txt_chunks(value: str, size: int = 255) -> list[str]:
    """``value`` cut into the at most 255-character strings one TXT record is made of (RFC 1035 §3.3)."""
    if not 0 < size <= 255:
        raise ValueError("A DNS character-string holds 1 to 255 characters.")
    return [value[i : i + size] for i in range(0, len(value), size)] or [""]


def dns_txt_quoted(value: str) -> str:
    """The zone-file / DNS-console form of a long TXT value: ``"first 255 chars" "the rest"``."""
    return " ".join(f'"{chunk}"' for chunk in dns_txt_chunks(value))


def canonicalize_body_relaxed(body: bytes) -> bytes:
    """RFC 6376 §3.4.4 for a CRLF body: no WSP at line ends, WSP runs as one SP, no empty lines at the end."""
    if b" \r\n" in body or b"\t" in body:
        body = _TRAILING_WSP.sub(b"\r\n", body)
    if b"\t" in body or b"  " in body:
        body = _WSP_TO_SQUEEZE.sub(b" ", body)
    body = body.rstrip(b"\r\n")
    return body + b"\r\n" if body else b""


def canonicalize_header_relaxed(field: bytes) -> bytes:
    """RFC 6376 §3.4.2 for one raw header field (``Name: value`` with its folds): ``name:value\\r\\n``."""
    name, _, value = field.partition(b":")
    value = _WSP_RUN.sub(b" ", value.replace(b"\r\n", b"")).strip(b" \t")
    return name.rstrip(b" \t").lower() + b":" + value + b"\r\n"


class DkimSigner:
    """Signs messages for one domain and selector; reuse one instance (the key is parsed once)."""

    def __init__(
        self,
        domain: str,
        selector: str,
        private_key_pem: bytes,
        signed_headers: Sequence[bytes] = DEFAULT_SIGNED_HEADERS,
    ) -> None:
        self.domain = _domain(domain)
        self.selector = _token(selector, "selector")
        names = tuple(name.lower().strip() for name in signed_headers)
        if b"from" not in names:
            raise ValueError("DKIM must sign the From header (RFC 6376 §5.4).")
        for name in names:
            if not _HEADER_NAME.match(name):
                raise ValueError(f"{name!r} is not a header name.")
            if name in _NOT_SIGNABLE:
                raise ValueError(f"The {name.decode()} header must not be signed: it changes in transit.")
        self.signed_headers = names
        key = serialization.load_pem_private_key(private_key_pem, password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError("The DKIM private key must be an RSA key (rsa-sha256).")
        if key.key_size < 1024:
            raise ValueError("DKIM keys shorter than 1024 bits are refused by verifiers (RFC 8301).")
        self._key = key
        self._h_tag = _fold_list(names)

    def sign(self, message: bytes, *, timestamp: int | None = None) -> bytes:
        """The message (CRLF line endings, ending in CRLF) with a ``DKIM-Signature`` header on top."""
        pending = self.prepare(message, timestamp=timestamp)
        return pending.complete(self.signature(pending))

    def prepare(self, message: bytes, *, timestamp: int | None = None) -> PendingSignature:
        """Everything of :meth:`sign` before the RSA signature: canonical forms and hashes (Python's work)."""
        message = _crlf(message)
        end = message.find(b"\r\n\r\n")
        if end < 0:
            head, body = message, b""
        else:
            head, body = message[: end + 2], message[end + 4 :]
        fields = _header_fields(head)
        body_hash = base64.b64encode(hashlib.sha256(canonicalize_body_relaxed(body)).digest())

        by_name: dict[bytes, list[bytes]] = {}
        for field in fields:
            by_name.setdefault(field[: field.find(b":")].rstrip(b" \t").lower(), []).append(field)
        if b"from" not in by_name:
            raise ValueError("The message has no From header; DKIM cannot sign it.")
        chunks = []
        for name in self.signed_headers:
            instances = by_name.get(name)
            if instances:  # the bottom-most instance not yet used (RFC 6376 §5.4.2)
                chunks.append(canonicalize_header_relaxed(instances.pop()))

        moment = int(time.time()) if timestamp is None else timestamp
        unsigned = (
            "v=1; a=rsa-sha256; c=relaxed/relaxed;\r\n"
            f"\td={self.domain}; s={self.selector};\r\n"
            f"\tt={moment}; h={self._h_tag};\r\n"
            f"\tbh={body_hash.decode('ascii')};\r\n"
            "\tb="
        ).encode("ascii")
        # The signature header itself is hashed last, with an empty b= and no final CRLF (§3.7).
        chunks.append(canonicalize_header_relaxed(b"DKIM-Signature: " + unsigned)[:-2])
        return PendingSignature(b"DKIM-Signature: " + unsigned, b"".join(chunks), message)

    def signature(self, pending: PendingSignature) -> bytes:
        """The RSA signature of a prepared message. OpenSSL computes it without holding Python's
        interpreter lock, so other threads run meanwhile (the sender's builder relies on it)."""
        return self._key.sign(pending.signed_data, padding.PKCS1v15(), hashes.SHA256())


@dataclass(frozen=True, slots=True)
class PendingSignature:
    """A message prepared for signing: its ``DKIM-Signature`` header up to ``b=``, and the data to sign."""

    header: bytes
    signed_data: bytes
    message: bytes

    def complete(self, signature: bytes) -> bytes:
        """The message with its ``DKIM-Signature`` header on top, ``b=`` folded to 72 characters a line."""
        encoded = base64.b64encode(signature)
        folded = b"\r\n\t".join(encoded[i : i + 72] for i in range(0, len(encoded), 72))
        return self.header + folded + b"\r\n" + self.message


def verify(message: bytes, dns_txt: Callable[[str], str | None]) -> bool:
    """Check the first DKIM signature with dkimpy, looking keys up with ``dns_txt(name)``.

    For tests and for checking what the sink caught against the records we ask users to publish.
    """
    import dkim as dkimpy

    def lookup(name: bytes, timeout: float = 5) -> bytes | None:
        value = dns_txt(name.decode("ascii").rstrip("."))
        return value.encode("ascii") if value is not None else None

    return bool(dkimpy.verify(message, dnsfunc=lookup))


def _crlf(message: bytes) -> bytes:
    crlf = message.count(b"\r\n")
    if message.count(b"\n") != crlf or message.count(b"\r") != crlf:
        message = _EOL.sub(b"\r\n", message)
    return message if message.endswith(b"\r\n") else message + b"\r\n"


def _header_fields(head: bytes) -> list[bytes]:
    """Raw header fields, each with its continuation lines and final CRLF."""
    fields: list[bytes] = []
    for line in head.split(b"\r\n")[:-1]:
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += line + b"\r\n"
        elif b":" in line:
            fields.append(line + b"\r\n")
        else:
            raise ValueError(f"Not a header line: {line[:60]!r}")
    return fields


def _fold_list(names: tuple[bytes, ...]) -> str:
    """The h= value, folded after a colon so no line grows past about 70 characters."""
    lines: list[str] = []
    line = ""
    for name in names:
        part = name.decode("ascii")
        if line and len(line) + len(part) > 60:
            lines.append(line)
            line = ""
        line = f"{line}:{part}" if line else part
    lines.append(line)
    return ":\r\n\t".join(lines)


def _token(value: str, what: str) -> str:
    if not _TOKEN.match(value):
        raise ValueError(f"{value!r} is not a valid DKIM {what}.")
    return value


def _domain(domain: str) -> str:
    domain = domain.strip().rstrip(".").lower()
    try:
        ascii_domain = domain.encode("idna").decode("ascii")
    except UnicodeError as error:
        raise ValueError(f"{domain!r} is not a valid domain: {error}") from None
    if not ascii_domain or not all(_TOKEN.match(label) for label in ascii_domain.split(".")):
        raise ValueError(f"{domain!r} is not a valid domain.")
    return ascii_domain
