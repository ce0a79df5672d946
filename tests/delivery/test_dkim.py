"""DKIM signing: every signature made here is verified by dkimpy, the reference implementation."""

from __future__ import annotations

import base64
import email.policy
from collections.abc import Callable
from email.message import EmailMessage

import dkim as dkimpy
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from dkim.canonicalization import Relaxed
from hypothesis import given, settings
from hypothesis import strategies as st

from zgoda.delivery.dkim import (
    DEFAULT_SIGNED_HEADERS,
    DkimKey,
    DkimSigner,
    canonicalize_body_relaxed,
    canonicalize_header_relaxed,
    dns_record,
    dns_txt_chunks,
    dns_txt_quoted,
    generate_key,
    verify,
)

DOMAIN = "kawiarnia.example"
SELECTOR = "zgoda2026"


@pytest.fixture(scope="module")
def key() -> DkimKey:
    return generate_key()


@pytest.fixture(scope="module")
def signer(key: DkimKey) -> DkimSigner:
    return DkimSigner(DOMAIN, SELECTOR, key.private_key_pem)


@pytest.fixture(scope="module")
def dns(key: DkimKey) -> dict[str, str]:
    name, value = dns_record(DOMAIN, SELECTOR, key.public_key_b64)
    return {name: value}


def campaign_message() -> bytes:
    """What the campaign layer sends: RFC 8058 headers, folded headers, a quoted-printable Polish body."""
    msg = EmailMessage(policy=email.policy.SMTP)
    msg["From"] = "Kawiarnia Zgoda <news@kawiarnia.example>"
    msg["To"] = "Ola Nowak <ola@example.org>"
    msg["Subject"] = "Nowa karta jesienna: dynia, cynamon i " + "bardzo długi temat " * 4
    msg["Date"] = "Tue, 06 Jan 2026 09:00:00 +0100"
    msg["Message-ID"] = "<c1.r42@kawiarnia.example>"
    msg["List-Unsubscribe"] = "<https://zgoda.example/u/abc123>, <mailto:unsub@zgoda.example?subject=u-abc123>"
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg["List-Id"] = "Nowości <news.kawiarnia.example>"
    msg["Feedback-ID"] = "c1:demo:zgoda"
    msg.set_content("Dzień dobry!\n\nZapraszamy na kawę z cynamonem.   \n\n\n\n", cte="quoted-printable")
    return msg.as_bytes()


def test_generated_key_is_pkcs1_and_its_public_half_is_spki(key: DkimKey) -> None:
    assert key.bits == 2048
    assert key.private_key_pem.startswith(b"-----BEGIN RSA PRIVATE KEY-----\n")
    private = serialization.load_pem_private_key(key.private_key_pem, password=None)
    assert isinstance(private, rsa.RSAPrivateKey)
    public = serialization.load_der_public_key(base64.b64decode(key.public_key_b64))
    assert isinstance(public, rsa.RSAPublicKey)
    assert public.public_numbers() == private.public_key().public_numbers()
    assert generate_key().public_key_b64 != key.public_key_b64


def test_dns_record_and_its_255_character_strings(key: DkimKey) -> None:
    name, value = dns_record("Kawiarnia.Example.", SELECTOR, key.public_key_b64)
    assert name == "zgoda2026._domainkey.kawiarnia.example"
    assert value == f"v=DKIM1; k=rsa; p={key.public_key_b64}"
    chunks = dns_txt_chunks(value)
    assert [len(c) for c in chunks] == [255, len(value) - 255]
    assert "".join(chunks) == value
    assert dns_txt_quoted(value) == f'"{chunks[0]}" "{chunks[1]}"'
    assert dns_txt_quoted("short") == '"short"'
    assert dns_record("kawiarnia-żubr.pl", "s1", "AAAA")[0] == "s1._domainkey.xn--kawiarnia-ubr-d5c.pl"  # IDNA
    with pytest.raises(ValueError, match="selector"):
        dns_record(DOMAIN, "bad selector", "AAAA")


def test_dkimpy_reads_our_private_key(key: DkimKey) -> None:
    header = dkimpy.sign(b"From: a@kawiarnia.example\r\n\r\nx\r\n", b"s", b"kawiarnia.example", key.private_key_pem)
    assert header.startswith(b"DKIM-Signature: ")


def test_a_campaign_message_verifies(signer: DkimSigner, dns: dict[str, str]) -> None:
    raw = campaign_message()
    assert b"=C5=9B" in raw or b"=C4=85" in raw  # the body really is quoted-printable
    assert b"\r\n " in raw.split(b"\r\n\r\n")[0]  # and the subject is folded
    signed = signer.sign(raw)
    assert signed.startswith(b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed;\r\n\td=kawiarnia.example;")
    assert signed.endswith(raw)
    assert verify(signed, dns.get)
    assert dkimpy.verify(signed, dnsfunc=lambda name, timeout=5: dns.get(name.decode().rstrip("."), "").encode())


def test_a_signature_made_in_three_steps_is_the_one_sign_makes(signer: DkimSigner, dns: dict[str, str]) -> None:
    """The sender prepares, signs (without the interpreter lock) and completes in separate steps."""
    raw = campaign_message().replace(b"\r\n", b"\n")  # prepare gives the message CRLF line endings, as sign does
    pending = signer.prepare(raw, timestamp=1_767_686_400)
    assert pending.header.startswith(b"DKIM-Signature: v=1;") and pending.header.endswith(b"b=")
    assert pending.message == campaign_message()
    signature = signer.signature(pending)
    signed = pending.complete(signature)
    assert signed == signer.sign(raw, timestamp=1_767_686_400)  # RSA PKCS#1 v1.5 signatures are deterministic
    assert b"t=1767686400;" in signed
    assert verify(signed, dns.get)
    tampered = pending.complete(signature[:-1] + bytes([signature[-1] ^ 1]))
    assert not verify(tampered, dns.get)


def test_every_default_header_is_in_h_including_rfc8058_ones(signer: DkimSigner) -> None:
    raw = campaign_message()
    signed = signer.sign(raw)
    header = signed[: -len(raw)]
    h_tag = dkimpy.util.parse_tag_value(dkimpy.rfc822_parse(signed)[0][0][1])[b"h"]
    names = [n.strip() for n in h_tag.replace(b"\r\n", b"").split(b":")]
    assert names == list(DEFAULT_SIGNED_HEADERS)
    for required in (b"from", b"list-unsubscribe", b"list-unsubscribe-post", b"list-id", b"feedback-id"):
        assert required in names
    assert header.count(b"DKIM-Signature:") == 1
    assert all(len(line) <= 78 for line in header.split(b"\r\n"))


@pytest.mark.parametrize(
    "tamper",
    [
        lambda m: m.replace(b"https://zgoda.example/u/abc123", b"https://evil.example/u/abc123"),
        lambda m: m.replace(b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n", b""),
        lambda m: m.replace(b"Zapraszamy", b"Zapraszamy tanio"),
        lambda m: m.replace(b"Ola Nowak", b"Ala Nowak"),
        lambda m: m.replace(b"\r\nFrom: ", b"\r\nFrom: Bank <x@bank.example>\r\nFrom: ", 1),
    ],
    ids=["list-unsubscribe changed", "list-unsubscribe-post removed", "body", "to", "second from"],
)
def test_changes_after_signing_break_the_signature(
    signer: DkimSigner, dns: dict[str, str], tamper: Callable[[bytes], bytes]
) -> None:
    signed = signer.sign(campaign_message())
    tampered = tamper(signed)
    assert tampered != signed
    assert not verify(tampered, dns.get)


def test_adding_list_unsubscribe_to_a_message_without_one_breaks_it(signer: DkimSigner, dns: dict[str, str]) -> None:
    signed = signer.sign(b"From: a@kawiarnia.example\r\nTo: b@example.org\r\nSubject: hi\r\n\r\nbody\r\n")
    assert verify(signed, dns.get)
    added = signed.replace(b"Subject: hi\r\n", b"Subject: hi\r\nList-Unsubscribe: <https://evil.example/>\r\n")
    assert not verify(added, dns.get)


def test_relaxed_canonicalisation_tolerates_refolding_and_trailing_blank_lines(
    signer: DkimSigner, dns: dict[str, str]
) -> None:
    signed = signer.sign(
        b"From: a@kawiarnia.example\r\nSubject:  one\r\n\ttwo \r\n\r\nline  with   spaces \r\n\r\n\r\n"
    )
    refolded = signed.replace(b"Subject:  one\r\n\ttwo \r\n", b"Subject: one two\r\n")
    refolded = refolded.replace(b"line  with   spaces \r\n\r\n\r\n", b"line with spaces\r\n")
    assert verify(signed, dns.get)
    assert verify(refolded, dns.get)


@pytest.mark.parametrize(
    "raw",
    [
        b"From: a@kawiarnia.example\nTo: b@example.org\nSubject: LF only\n\nbody\n.dot\n",
        b"From: a@kawiarnia.example\r\nSubject: no body",
        b"From: a@kawiarnia.example\r\nSubject: empty body\r\n\r\n",
        b"From: a@kawiarnia.example\r\nTo: x@example.org\r\nTo: y@example.org\r\n\r\ntwo To headers\r\n",
        b"From: a@kawiarnia.example\r\nSubject: no final newline\r\n\r\nbody   ",
        "From: Łucja <a@kawiarnia.example>\r\nSubject: żółw\r\n\r\nraw UTF-8 (SMTPUTF8)\r\n".encode(),
    ],
    ids=["lf", "no-body", "empty-body", "repeated-header", "no-final-crlf", "utf8-headers"],
)
def test_unusual_messages_verify(signer: DkimSigner, dns: dict[str, str], raw: bytes) -> None:
    signed = signer.sign(raw)
    assert signed.endswith(b"\r\n")
    assert b"\n" not in signed.replace(b"\r\n", b"")
    assert verify(signed, dns.get)


def test_same_body_hash_as_dkimpy(key: DkimKey, signer: DkimSigner) -> None:
    raw = campaign_message()
    ours = dkimpy.util.parse_tag_value(dkimpy.rfc822_parse(signer.sign(raw))[0][0][1])
    header = dkimpy.sign(
        raw, SELECTOR.encode(), DOMAIN.encode(), key.private_key_pem, canonicalize=(b"relaxed", b"relaxed")
    )
    theirs = dkimpy.util.parse_tag_value(header.split(b": ", 1)[1])
    assert ours[b"bh"] == theirs[b"bh"]


def test_signer_refuses_bad_configuration(key: DkimKey) -> None:
    with pytest.raises(ValueError, match="must sign the From"):
        DkimSigner(DOMAIN, SELECTOR, key.private_key_pem, signed_headers=[b"to", b"subject"])
    with pytest.raises(ValueError, match="must not be signed"):
        DkimSigner(DOMAIN, SELECTOR, key.private_key_pem, signed_headers=[b"from", b"received"])
    ec_pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(ValueError, match="RSA"):
        DkimSigner(DOMAIN, SELECTOR, ec_pem)
    signer = DkimSigner(DOMAIN, SELECTOR, key.private_key_pem)
    with pytest.raises(ValueError, match="no From header"):
        signer.sign(b"To: b@example.org\r\n\r\nbody\r\n")


_line = st.text(alphabet=" \tab.=\u00e9", max_size=12).map(lambda s: s.encode())


@settings(max_examples=300, deadline=None)
@given(st.lists(_line, max_size=8), st.booleans())
def test_body_canonicalisation_matches_dkimpy(lines: list[bytes], final_crlf: bool) -> None:
    body = b"\r\n".join(lines) + (b"\r\n" if final_crlf and lines else b"")
    assert canonicalize_body_relaxed(body) == Relaxed.canonicalize_body(body)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([b"Subject", b"X-Tag ", b"LIST-ID"]), st.lists(_line, min_size=1, max_size=4))
def test_header_canonicalisation_matches_dkimpy(name: bytes, parts: list[bytes]) -> None:
    value = parts[0] + b"".join(b"\r\n " + p for p in parts[1:]) + b"\r\n"
    field = name + b":" + value
    ((c_name, c_value),) = Relaxed.canonicalize_headers([(name, value)])
    assert canonicalize_header_relaxed(field) == c_name + b":" + c_value
