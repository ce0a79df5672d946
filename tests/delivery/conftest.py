"""Real SMTP servers on loopback (aiosmtpd on an ephemeral port) and TLS certificates made here."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from zgoda.delivery.sink import SmtpServerThread
from zgoda.delivery.transport import SmtpSettings

WAIT = 10.0  # seconds: an upper bound for synchronisation, never a measured figure


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    peer: Any


@dataclass
class Recorder:
    """An aiosmtpd handler that records what arrives and can refuse chosen recipients."""

    pipelining: bool = False
    rcpt_replies: dict[str, str] = field(default_factory=dict)
    messages: list[Received] = field(default_factory=list)
    opened: int = 0
    closed: int = 0
    auth_mechanisms: list[str] = field(default_factory=list)
    condition: threading.Condition = field(default_factory=threading.Condition)

    async def handle_EHLO(  # noqa: N802
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        if self.pipelining:
            return [*responses[:-1], "250-PIPELINING", responses[-1]]
        return responses

    async def handle_RCPT(  # noqa: N802
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if address in self.rcpt_replies:
            return self.rcpt_replies[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        with self.condition:
            self.messages.append(
                Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content, session.peer)
            )
            self.condition.notify_all()
        return "250 2.0.0 OK stored"

    def connection_opened(self) -> None:
        with self.condition:
            self.opened += 1
            self.condition.notify_all()

    def connection_closed(self) -> None:
        with self.condition:
            self.closed += 1
            self.condition.notify_all()

    def wait(self, predicate: Callable[[], bool]) -> None:
        with self.condition:
            assert self.condition.wait_for(predicate, WAIT), "the SMTP server never got there"

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        self.auth_mechanisms.append(mechanism)
        ok = isinstance(auth_data, LoginPassword) and auth_data == (b"zgoda", b"s3cret pass")
        return AuthResult(success=ok, handled=False)


class TrackingSMTP(SMTP):
    """aiosmtpd's SMTP, telling the handler when a TCP connection opens and closes."""

    def connection_made(self, transport: Any) -> None:
        first = self.transport is None  # STARTTLS calls this again on the same connection
        super().connection_made(transport)
        if first:
            self.event_handler.connection_opened()

    def connection_lost(self, error: Exception | None) -> None:
        super().connection_lost(error)
        self.event_handler.connection_closed()


@dataclass
class Server:
    recorder: Recorder
    thread: SmtpServerThread

    @property
    def port(self) -> int:
        return self.thread.port

    def settings(self, **overrides: Any) -> SmtpSettings:
        return SmtpSettings(host="127.0.0.1", port=self.port, **overrides)


@pytest.fixture
def start_server() -> Iterator[Callable[..., Server]]:
    """Start an aiosmtpd server: ``start_server(pipelining=..., ssl_context=..., **smtp_kwargs)``."""
    started: list[SmtpServerThread] = []

    def start(*, pipelining: bool = False, ssl_context: ssl.SSLContext | None = None, **smtp_kwargs: Any) -> Server:
        recorder = Recorder(pipelining=pipelining)
        if smtp_kwargs.pop("with_auth", False):
            smtp_kwargs["authenticator"] = recorder.authenticate
        thread = SmtpServerThread(recorder, ssl_context=ssl_context, smtp_class=TrackingSMTP, **smtp_kwargs)
        thread.start()
        started.append(thread)
        return Server(recorder, thread)

    yield start
    for thread in started:
        thread.stop()


@pytest.fixture
def server(start_server: Callable[..., Server]) -> Server:
    return start_server()


@dataclass(frozen=True)
class Certificates:
    ca_file: Path
    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


@pytest.fixture(scope="session")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """A self-signed CA and a server certificate it signed, for 127.0.0.1 and localhost."""
    folder = tmp_path_factory.mktemp("tls")
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Zgoda test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_file = folder / "ca.pem"
    cert_file = folder / "server.pem"
    key_file = folder / "server.key"
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return Certificates(ca_file, cert_file, key_file)


def message(subject: str = "Hello", body: str = "Dzień dobry!\r\n", to: str = "ola@example.org") -> bytes:
    """A small, well-formed message with CRLF line endings."""
    return (
        f"From: Kawiarnia Zgoda <news@zgoda.example>\r\nTo: {to}\r\nSubject: {subject}\r\n"
        "Message-ID: <" + subject.replace(" ", ".") + "@zgoda.example>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" + body
    ).encode()
