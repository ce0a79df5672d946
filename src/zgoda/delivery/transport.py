"""SMTP delivery with connection reuse and a two-phase send.

``SmtpConnection.prepare`` sends MAIL FROM, RCPT TO, DATA and the whole message except the final
``<CRLF>.<CRLF>``; ``complete`` writes that dot and reads the server's verdict. Between the two the
caller commits "sent" in its database. An SMTP server discards a DATA whose final dot never arrived
(RFC 5321 §4.1.1.4: the transaction is only processed on the end-of-data indication), so:

* a worker killed before its commit landed leaves a transaction the server throws away, and the
  message is sent again on resume (never twice: the first copy was never delivered);
* a worker killed after its commit but before the dot leaves the one message in doubt: recorded as
  sent, never delivered. That is the price of "nobody gets a message twice", and it is at most one
  message per connection.

``SmtpPool`` hands out connections to threads, reuses them across messages, reconnects broken ones
and rotates each after ``max_messages_per_connection``. See docs/delivery.md.
"""

from __future__ import annotations

import contextlib
import ctypes
import re
import smtplib
import socket
import ssl
import struct
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Literal

from zgoda.core import tcp_hold

if TYPE_CHECKING:
    from zgoda.core.settings import Settings

__all__ = [
    "Envelope",
    "EnvelopeRefusal",
    "Prepared",
    "SmtpAuthenticationError",
    "SmtpConnection",
    "SmtpConnectionError",
    "SmtpOutcome",
    "SmtpOutcomeUnknown",
    "SmtpPool",
    "SmtpSettings",
    "SmtpTlsError",
    "envelope_refusal",
    "normalise_message",
    "send_message",
    "smtp_settings_from",
]

Security = Literal["none", "starttls", "tls"]
CRLF = b"\r\n"
_EOL = re.compile(rb"\r\n|\r|\n")
_LEADING_DOT = re.compile(rb"(?m)^\.")
_ENHANCED = re.compile(r"^([245]\.\d{1,3}\.\d{1,3})(?:\s|$)")
_ADDRESS_FORBIDDEN = re.compile(r"[\r\n<>\x00]")


@dataclass(frozen=True)
class SmtpSettings:
    """Where and how to reach the SMTP server (a relay, an ESP's SMTP endpoint or the local sink)."""

    host: str
    port: int
    security: Security = "none"
    username: str | None = None
    password: str | None = None
    timeout: float = 30.0
    verify_certificate: bool = True
    ca_file: str | None = None
    local_hostname: str | None = None
    max_messages_per_connection: int = 1000
    # Additions to the agreed interface:
    pipelining: bool = True
    """Send MAIL, RCPT and DATA in one write when the server offers PIPELINING (RFC 2920)."""
    allow_insecure_auth: bool = False
    """Allow AUTH without TLS. Off by default: the password would cross the network in clear."""

    def __post_init__(self) -> None:
        if self.security not in ("none", "starttls", "tls"):
            raise ValueError(f"SMTP security must be 'none', 'starttls' or 'tls', not {self.security!r}.")
        if not 0 < self.port < 65536:
            raise ValueError(f"SMTP port {self.port} is out of range.")
        if self.timeout <= 0:
            raise ValueError("SMTP timeout must be positive.")
        if self.max_messages_per_connection < 1:
            raise ValueError("max_messages_per_connection must be at least 1.")
        if (self.username is None) != (self.password is None):
            raise ValueError("Give both an SMTP username and a password, or neither.")
        if self.username is not None and self.security == "none" and not self.allow_insecure_auth:
            raise ValueError(
                "An SMTP username with security='none' would send the password in clear; "
                "use 'starttls' or 'tls' (or set allow_insecure_auth=True for a loopback test server)."
            )

    @property
    def address(self) -> str:
        """``host:port``, as error messages name the server."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class SmtpOutcome:
    """The server's verdict on one message (or on the command that refused it)."""

    accepted: bool
    code: int
    text: str
    enhanced_status: str | None
    permanent: bool

    @classmethod
    def from_reply(cls, code: int, text: bytes | str) -> SmtpOutcome:
        """Build from an SMTP reply; ``permanent`` is a 5xx, ``accepted`` a 2xx."""
        decoded = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
        match = _ENHANCED.match(decoded)
        return cls(
            accepted=200 <= code < 300,
            code=code,
            text=decoded,
            enhanced_status=match.group(1) if match else None,
            permanent=500 <= code < 600,
        )


@dataclass(frozen=True)
class Prepared:
    """A message written up to (not including) its final dot; ``complete()`` or ``abandon()`` it."""

    mail_from: str
    rcpt_to: str
    size: int


class SmtpConnectionError(Exception):
    """The server could not be reached or the connection broke. Retry later (``retryable``)."""

    retryable = True

    def __init__(self, message: str, *, address: str) -> None:
        super().__init__(message)
        self.address = address


class SmtpAuthenticationError(SmtpConnectionError):
    """The server refused our credentials or offers no way to log in: a configuration problem."""

    retryable = False


class SmtpTlsError(SmtpConnectionError):
    """TLS could not be set up (certificate not trusted, STARTTLS not offered): a configuration problem."""

    retryable = False


class SmtpOutcomeUnknown(SmtpConnectionError):
    """The connection broke while writing the final dot or waiting for its reply.

    The server may or may not have accepted the message. The caller has already recorded it as
    sent, and must not send it again (that could deliver it twice); the connection itself
    reconnects on next use.
    """

    retryable = False


DOT = b".\r\n"


# libc's send() called without releasing Python's interpreter lock (ctypes.PyDLL keeps it): the final dots
# of a group commit go out back to back, without a thread switch between them (docs/sending.md)
def _libc() -> ctypes.PyDLL | None:
    try:
        libc = ctypes.PyDLL(None)
        libc.send.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int]
        libc.send.restype = ctypes.c_ssize_t
    except (OSError, AttributeError):  # no libc send() to call: the usual socket path
        return None
    return libc


_LIBC = _libc()
_MSG_NOSIGNAL = getattr(socket, "MSG_NOSIGNAL", 0)
_MSG_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0)


def _send_holding_gil(sock: socket.socket, data: bytes, timeout: float) -> bool:
    """Write a few bytes to a plain TCP socket in one non-blocking ``send``; False if not all went out.

    A False leaves the caller to write what is left the usual way (which may block): only the bytes
    reported sent were written.
    """
    if _LIBC is None or not _MSG_DONTWAIT:
        return False
    sent = _LIBC.send(sock.fileno(), data, len(data), _MSG_NOSIGNAL | _MSG_DONTWAIT)
    if sent == len(data):
        return True
    if sent > 0:
        with _blocking(sock, timeout):
            sock.sendall(data[sent:])
        return True
    return False


@contextlib.contextmanager
def _blocking(sock: socket.socket | None, timeout: float | None) -> Iterator[None]:
    """A socket a selector loop made non-blocking, blocking (up to ``timeout``) for one write."""
    if sock is None or sock.gettimeout() != 0.0:
        yield
        return
    sock.settimeout(timeout)
    try:
        yield
    finally:
        sock.setblocking(False)


def normalise_message(message: bytes) -> bytes:
    """CRLF line endings, leading dots doubled, a final CRLF: the DATA payload without its dot.

    Checks with ``bytes.count`` first, so a message that is already clean (the usual case) is not
    copied by a regular expression; see docs/delivery.md for the figures.
    """
    crlf = message.count(b"\r\n")
    if message.count(b"\n") != crlf or message.count(b"\r") != crlf:
        message = _EOL.sub(CRLF, message)
    if message.startswith(b".") or b"\n." in message:
        message = _LEADING_DOT.sub(b"..", message)
    if not message.endswith(CRLF):
        message += CRLF
    return message


def _payload(mail_from: str, rcpt_to: str, message: bytes) -> bytes:
    """The DATA payload of a message for these addresses (checked first: no command can be smuggled in)."""
    _check_address(mail_from, "Sender")
    _check_address(rcpt_to, "Recipient")
    return normalise_message(message)


def _check_address(address: str, what: str) -> None:
    if _ADDRESS_FORBIDDEN.search(address):
        raise ValueError(f"{what} {address!r} holds characters not allowed in an SMTP address.")


class _State(Enum):
    CLOSED = "closed"
    IDLE = "idle"
    PREPARED = "prepared"
    DOT_WRITTEN = "dot_written"


class SmtpConnection:
    """One SMTP session on one socket, reused for many messages; not thread-safe (one thread at a time).

    Opens lazily on the first ``prepare``; after a connection error it is closed and reopens on next use.
    """

    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings
        self._smtp: smtplib.SMTP | None = None
        self._state = _State.CLOSED
        self._prepared: Prepared | None = None
        self._dot_error: BaseException | None = None
        self._held = False
        self._tls_context: ssl.SSLContext | None = None
        self.messages_on_socket = 0
        """Messages completed (accepted or refused at the dot) since the socket was opened."""
        self.connections_opened = 0
        """How many sockets this object has opened over its life (reconnects and rotations included)."""
        self.last_used = 0.0

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._smtp is not None and self._state is not _State.CLOSED

    @property
    def is_prepared(self) -> bool:
        return self._state is _State.PREPARED

    def open(self) -> None:
        """Connect, greet (EHLO), start TLS and log in as the settings say. Idempotent."""
        if self.is_open:
            return
        settings = self.settings
        smtp: smtplib.SMTP | None = None
        try:
            # The host goes to the constructor (which connects): smtplib checks the certificate against it.
            if settings.security == "tls":
                smtp = smtplib.SMTP_SSL(
                    settings.host,
                    settings.port,
                    local_hostname=settings.local_hostname,
                    timeout=settings.timeout,
                    context=self._tls(),
                )
            else:
                smtp = smtplib.SMTP(
                    settings.host, settings.port, local_hostname=settings.local_hostname, timeout=settings.timeout
                )
            # The dot goes out as its own small write right after the body and then we wait for the reply:
            # without TCP_NODELAY, Nagle's algorithm and the server's delayed ACK can stall it for 40 ms.
            assert smtp.sock is not None
            smtp.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._ehlo(smtp)
            if settings.security == "starttls":
                if not smtp.has_extn("starttls"):
                    raise SmtpTlsError(
                        f"SMTP server {settings.address}: STARTTLS is not offered.", address=settings.address
                    )
                smtp.starttls(context=self._tls())
                self._ehlo(smtp)
            if settings.username is not None and settings.password is not None:
                self._login(smtp, settings.username, settings.password)
        except SmtpConnectionError:
            if smtp is not None:
                _hard_close(smtp)
            raise
        except ssl.SSLCertVerificationError as error:
            if smtp is not None:
                _hard_close(smtp)
            raise SmtpTlsError(
                f"SMTP server {settings.address}: its TLS certificate is not trusted ({error.verify_message}).",
                address=settings.address,
            ) from error
        except (OSError, smtplib.SMTPException) as error:
            if smtp is not None:
                _hard_close(smtp)
            raise self._error(error, "could not connect") from error
        self._smtp = smtp
        self._state = _State.IDLE
        self._held = False
        self.messages_on_socket = 0
        self.connections_opened += 1
        self.last_used = time.monotonic()

    def close(self) -> None:
        """Say QUIT and close. A prepared message is abandoned first, never delivered by accident."""
        if self._state is _State.PREPARED:
            self.abandon()
            return
        smtp, self._smtp = self._smtp, None
        self._state = _State.CLOSED
        if smtp is None:
            return
        try:
            smtp.quit()
        except (OSError, smtplib.SMTPException):
            pass
        finally:
            _hard_close(smtp)

    def abandon(self, *, reset: bool = True) -> None:
        """Drop the prepared message: close the socket without the final dot, so the server discards it.

        ``reset=False`` closes without a TCP reset: bytes already written (a final dot) still go out.
        """
        smtp, self._smtp = self._smtp, None
        self._state = _State.CLOSED
        self._prepared = None
        self._held = False
        if smtp is not None:
            _hard_close(smtp, reset=reset)

    def __enter__(self) -> SmtpConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- sending ---------------------------------------------------------------------------------

    def prepare(self, mail_from: str, rcpt_to: str, message: bytes) -> Prepared | SmtpOutcome:
        """Send the envelope and the message without its final dot.

        Returns ``Prepared`` when the server is waiting for the dot, or the refusal (``SmtpOutcome``,
        ``accepted=False``) when MAIL, RCPT or DATA was refused; the connection stays usable then.
        Raises ``SmtpConnectionError`` when the server cannot be reached or the connection breaks.
        """
        if self._state in (_State.PREPARED, _State.DOT_WRITTEN):
            raise RuntimeError("A prepared message is waiting: complete() or abandon() it before the next one.")
        data = _payload(mail_from, rcpt_to, message)
        if self.due_for_rotation:
            self.close()
        reused = self.is_open
        self.open()
        try:
            return self._transaction(mail_from, rcpt_to, data)
        except _StaleConnection:
            self.abandon()
            if not reused:
                raise self._error(None, "closed the connection before answering MAIL FROM") from None
        # The server had closed a reused (idle) connection before we wrote: nothing was accepted,
        # so one fresh connection is safe to try.
        self.open()
        try:
            return self._transaction(mail_from, rcpt_to, data)
        except _StaleConnection:
            self.abandon()
            raise self._error(None, "closed the connection before answering MAIL FROM") from None

    def complete(self) -> SmtpOutcome:
        """Write the final dot and return the server's verdict on the prepared message.

        Raises ``SmtpOutcomeUnknown`` if the connection breaks now: the message may have been
        delivered, so it must not be sent again.
        """
        self.write_dot()
        return self.verdict()

    def write_dot(self, *, held: bool = False, drop_if_killed: bool = False) -> None:
        """Write the prepared message's final dot; ``verdict()`` then reads the server's answer.

        The sender calls this right after committing the message as sent, possibly from the thread
        that committed it while the connection's own thread waits (nothing else touches the socket
        then); a failed write is kept for ``verdict()`` to report. With ``held`` the dot stays in this
        process's kernel buffer until ``release_dot()``: a killed process's close still sends it, unless
        ``drop_if_killed`` (until ``keep_dot_if_killed()``); see core/tcp_hold.py.
        """
        if self._state is not _State.PREPARED or self._smtp is None:
            raise RuntimeError("Nothing is prepared on this connection.")
        self._state = _State.DOT_WRITTEN
        sock = self._smtp.sock
        try:
            if sock is not None and not isinstance(sock, ssl.SSLSocket):
                if not (held and self._held and not drop_if_killed):  # not held already by hold_dot()
                    self._held = held and tcp_hold.hold(sock, drop_if_killed=drop_if_killed)
                if _send_holding_gil(sock, DOT, self.settings.timeout):
                    return
            with _blocking(sock, self.settings.timeout):  # a selector loop's socket: wait for room this once
                self._smtp.send(DOT)
        except (OSError, smtplib.SMTPException) as error:
            self._dot_error = error

    def hold_dot(self) -> None:
        """Hold what is written next (the final dot) in the kernel until ``release_dot()``, ahead of
        ``write_dot(held=True)``, so that writing the dot is one system call."""
        sock = self._smtp.sock if self._smtp is not None else None
        if sock is not None and not isinstance(sock, ssl.SSLSocket):
            self._held = tcp_hold.hold(sock)

    def keep_dot_if_killed(self) -> None:
        """From now on a held dot goes out even if the process is killed (its socket closes gracefully)."""
        if self._held and self._smtp is not None and self._smtp.sock is not None:
            tcp_hold.keep_if_killed(self._smtp.sock)

    def release_dot(self) -> None:
        """Let a dot written ``held`` go out now."""
        if self._held and self._smtp is not None and self._smtp.sock is not None:
            tcp_hold.release(self._smtp.sock)
        self._held = False

    def verdict(self) -> SmtpOutcome:
        """The server's answer to the final dot ``write_dot()`` wrote.

        Raises ``SmtpOutcomeUnknown`` if the connection broke: the message may have been delivered,
        so it must not be sent again.
        """
        if self._state is not _State.DOT_WRITTEN or self._smtp is None:
            raise RuntimeError("No final dot was written on this connection.")
        code, text = -1, b""
        error, self._dot_error = self._dot_error, None
        if error is None:
            try:
                code, text = self._smtp.getreply()
            except (OSError, smtplib.SMTPException) as failure:
                error = failure
        return self.settle(code, text, error=error)

    def settle(self, code: int, text: bytes, *, error: BaseException | None = None) -> SmtpOutcome:
        """The verdict on the final dot from its reply read elsewhere (a selector loop), as ``verdict()``.

        ``error``: the connection broke instead of answering; then, as when writing the dot had failed,
        ``SmtpOutcomeUnknown`` is raised.
        """
        if self._state is not _State.DOT_WRITTEN or self._smtp is None:
            raise RuntimeError("No final dot was written on this connection.")
        error, self._dot_error = error or self._dot_error, None
        if error is not None:
            self.abandon()
            raise SmtpOutcomeUnknown(
                f"SMTP server {self.settings.address}: the connection broke after the final dot was written; "
                f"the message may or may not have been delivered ({error}).",
                address=self.settings.address,
            ) from error
        self._prepared = None
        self._state = _State.IDLE
        self.messages_on_socket += 1
        self.last_used = time.monotonic()
        outcome = SmtpOutcome.from_reply(code, text)
        if code == 421 or code < 0:
            self.abandon()
        return outcome

    # -- driven from a selector loop (delivery/channel.py) ------------------------------------------

    @property
    def sock(self) -> socket.socket | None:
        """The open connection's socket (plain or TLS), for a loop that reads and writes it itself."""
        return self._smtp.sock if self._smtp is not None and self._state is not _State.CLOSED else None

    @property
    def due_for_rotation(self) -> bool:
        """Whether the open connection has carried its ``max_messages_per_connection``."""
        return self.is_open and self.messages_on_socket >= self.settings.max_messages_per_connection

    @property
    def offers_pipelining(self) -> bool:
        return self._smtp is not None and self.settings.pipelining and bool(self._smtp.has_extn("pipelining"))

    def begin(self, mail_from: str, rcpt_to: str, message: bytes) -> Envelope | SmtpOutcome:
        """What to write for a message on this open, idle connection: its commands and its DATA payload.

        For a caller that writes and reads the socket itself; ``mark_prepared`` once everything up to the
        final dot is written. A refusal made locally (SMTPUTF8 not offered) comes back as an outcome.
        """
        # after a final dot (DOT_WRITTEN) a pipelining caller may begin the next message before the verdict
        if self._state not in (_State.IDLE, _State.DOT_WRITTEN) or self._smtp is None:
            raise RuntimeError("begin() needs an open connection with no message under way.")
        data = _payload(mail_from, rcpt_to, message)
        envelope = self._envelope(mail_from, rcpt_to, data)
        if isinstance(envelope, SmtpOutcome):
            return envelope
        return Envelope(mail_from=mail_from, rcpt_to=rcpt_to, commands=(*envelope, b"DATA\r\n"), data=data)

    def mark_prepared(self, envelope: Envelope) -> Prepared:
        """The envelope was accepted and the payload written: the message waits for its final dot."""
        self._prepared = Prepared(mail_from=envelope.mail_from, rcpt_to=envelope.rcpt_to, size=len(envelope.data))
        self._state = _State.PREPARED
        return self._prepared

    @property
    def dot_failed(self) -> bool:
        """Whether writing the final dot failed (``verdict()`` then raises ``SmtpOutcomeUnknown``)."""
        return self._state is _State.DOT_WRITTEN and self._dot_error is not None

    # -- internals -------------------------------------------------------------------------------

    def _envelope(self, mail_from: str, rcpt_to: str, data: bytes) -> tuple[bytes, bytes] | SmtpOutcome:
        """The MAIL and RCPT commands for a message (options as the server offers), or a local refusal."""
        smtp = self._smtp
        assert smtp is not None
        mail_options = []
        if smtp.has_extn("size"):
            mail_options.append(f"SIZE={len(data)}")
        if smtp.has_extn("8bitmime") and not data.isascii():
            mail_options.append("BODY=8BITMIME")
        if not (mail_from.isascii() and rcpt_to.isascii()):
            if not smtp.has_extn("smtputf8"):
                return SmtpOutcome(
                    accepted=False,
                    code=553,
                    text="The server does not offer SMTPUTF8, needed for a non-ASCII address (refused locally).",
                    enhanced_status="5.6.7",
                    permanent=True,
                )
            mail_options.append("SMTPUTF8")
        mail = f"MAIL FROM:<{mail_from}>{''.join(' ' + o for o in mail_options)}\r\n".encode()
        return mail, f"RCPT TO:<{rcpt_to}>\r\n".encode()

    def _transaction(self, mail_from: str, rcpt_to: str, data: bytes) -> Prepared | SmtpOutcome:
        smtp = self._smtp
        assert smtp is not None
        envelope = self._envelope(mail_from, rcpt_to, data)
        if isinstance(envelope, SmtpOutcome):
            return envelope
        mail, rcpt = envelope
        try:
            if self.offers_pipelining:
                replies = [self._first(smtp, mail + rcpt + b"DATA\r\n"), self._reply(smtp), self._reply(smtp)]
            else:
                replies = [self._first(smtp, mail)]
                if replies[0][0] == 250:
                    smtp.send(rcpt)
                    replies.append(self._reply(smtp))
                    if replies[1][0] in (250, 251):
                        smtp.send(b"DATA\r\n")
                        replies.append(self._reply(smtp))
            refusal = envelope_refusal(replies)
            if refusal is not None:
                if refusal.drop_connection:
                    self.abandon()
                else:
                    self._rset(smtp)
                return refusal.outcome
            smtp.send(data)
        except _StaleConnection:
            raise
        except (OSError, smtplib.SMTPException) as error:
            self.abandon()
            raise self._error(error, "connection broke during the transaction") from error
        self._prepared = Prepared(mail_from=mail_from, rcpt_to=rcpt_to, size=len(data))
        self._state = _State.PREPARED
        return self._prepared

    def _first(self, smtp: smtplib.SMTP, command: bytes) -> tuple[int, bytes]:
        """Send the first command(s) of a transaction and read the first reply.

        A disconnect here means the server had dropped the connection before reading them, so nothing
        was accepted and the transaction may be tried again on a fresh connection.
        """
        try:
            smtp.send(command)
            return smtp.getreply()
        except smtplib.SMTPServerDisconnected:
            raise _StaleConnection from None

    @staticmethod
    def _reply(smtp: smtplib.SMTP) -> tuple[int, bytes]:
        return smtp.getreply()

    def _rset(self, smtp: smtplib.SMTP) -> None:
        try:
            code, _ = smtp.docmd("RSET")
        except (OSError, smtplib.SMTPException):
            self.abandon()
            return
        if code != 250:
            self.abandon()

    def _ehlo(self, smtp: smtplib.SMTP) -> None:
        code, reply = smtp.ehlo()
        if code != 250:
            code, reply = smtp.helo()
            if code != 250:
                raise smtplib.SMTPHeloError(code, reply)

    def _login(self, smtp: smtplib.SMTP, username: str, password: str) -> None:
        address = self.settings.address
        if not smtp.has_extn("auth"):
            raise SmtpAuthenticationError(
                f"SMTP server {address} offers no AUTH (is TLS required before login?).", address=address
            )
        try:
            smtp.login(username, password)
        except smtplib.SMTPAuthenticationError as error:
            detail = error.smtp_error.decode("utf-8", "replace") if isinstance(error.smtp_error, bytes) else ""
            raise SmtpAuthenticationError(
                f"SMTP server {address} refused the login for {username!r}: {error.smtp_code} {detail}".rstrip(),
                address=address,
            ) from error
        except smtplib.SMTPException as error:
            if isinstance(error, smtplib.SMTPServerDisconnected):
                raise
            raise SmtpAuthenticationError(f"SMTP server {address}: login failed: {error}", address=address) from error

    def _tls(self) -> ssl.SSLContext:
        if self._tls_context is None:
            self._tls_context = make_tls_context(self.settings)
        return self._tls_context

    def _error(self, error: BaseException | None, what: str) -> SmtpConnectionError:
        detail = ""
        if error is not None:
            detail = f": {error}" if str(error) else f": {type(error).__name__}"
        return SmtpConnectionError(
            f"SMTP server {self.settings.address}: {what}{detail}", address=self.settings.address
        )


class _StaleConnection(Exception):
    """The server closed the connection before answering the first command of a transaction."""


def _first_refusal(replies: Sequence[tuple[int, bytes]]) -> tuple[int, bytes] | None:
    expected = ((250,), (250, 251), (354,))
    for (code, text), good in zip(replies, expected, strict=False):
        if code not in good:
            return code, text
    return None


@dataclass(frozen=True)
class Envelope:
    """One message's SMTP commands (MAIL, RCPT, DATA) and its DATA payload up to the final dot."""

    mail_from: str
    rcpt_to: str
    commands: tuple[bytes, bytes, bytes]
    data: bytes


@dataclass(frozen=True)
class EnvelopeRefusal:
    """The server refused MAIL, RCPT or DATA; ``drop_connection`` unless a RSET makes it usable again."""

    outcome: SmtpOutcome
    drop_connection: bool


def envelope_refusal(replies: Sequence[tuple[int, bytes]]) -> EnvelopeRefusal | None:
    """What the replies to MAIL, RCPT and DATA (as many as were sent) say: None when all were accepted."""
    refusal = _first_refusal(replies)
    if refusal is None:
        return None
    code, text = refusal
    # DATA accepted although MAIL or RCPT was not (a non-conforming server): never send a body to it
    accepted_data = replies[-1][0] == 354 and len(replies) == 3
    return EnvelopeRefusal(SmtpOutcome.from_reply(code, text), drop_connection=accepted_data or code == 421)


def _hard_close(smtp: smtplib.SMTP, *, reset: bool = False) -> None:
    """Close the socket without a word to the server (no QUIT, no dot); with ``reset`` send a TCP RST."""
    sock = smtp.sock
    if reset and sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        smtp.close()


def make_tls_context(settings: SmtpSettings) -> ssl.SSLContext:
    """The client TLS context: system CAs (or ``ca_file``) with hostname checks, or no checks at all."""
    if settings.verify_certificate:
        context = ssl.create_default_context(cafile=settings.ca_file)
    else:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def send_message(conn: SmtpConnection, mail_from: str, rcpt_to: str, message: bytes) -> SmtpOutcome:
    """Prepare and complete in one call, for senders with nothing to commit in between."""
    prepared = conn.prepare(mail_from, rcpt_to, message)
    if isinstance(prepared, SmtpOutcome):
        return prepared
    return conn.complete()


class SmtpPool:
    """Up to ``size`` connections shared by threads: ``with pool.connection() as conn: ...``.

    A connection is lent to one thread at a time and returned to the pool afterwards (most recently
    used first, so few sockets stay warm under light load). Broken connections are dropped and
    replaced; a connection that has carried ``max_messages_per_connection`` messages is closed.
    A connection returned with a prepared message (an exception between ``prepare`` and
    ``complete``) is abandoned, so that message is never delivered.
    """

    def __init__(self, settings: SmtpSettings, size: int) -> None:
        if size < 1:
            raise ValueError("An SMTP pool needs at least one connection.")
        self.settings = settings
        self.size = size
        self._slots = threading.BoundedSemaphore(size)
        self._lock = threading.Lock()
        self._idle: list[SmtpConnection] = []
        self._lent: dict[SmtpConnection, int] = {}
        self._generation = 0

    @contextlib.contextmanager
    def connection(self, timeout: float | None = None) -> Iterator[SmtpConnection]:
        """Borrow a connection (waiting up to ``timeout`` seconds for a free slot; None waits forever)."""
        if not self._slots.acquire(timeout=timeout):
            raise TimeoutError(f"No SMTP connection to {self.settings.address} free within {timeout} s.")
        try:
            with self._lock:
                conn = self._idle.pop() if self._idle else SmtpConnection(self.settings)
                self._lent[conn] = self._generation
            try:
                yield conn
            finally:
                self._give_back(conn)
        finally:
            self._slots.release()

    def _give_back(self, conn: SmtpConnection) -> None:
        if conn.is_prepared:
            conn.abandon()
        elif conn.due_for_rotation:
            conn.close()
        with self._lock:
            generation = self._lent.pop(conn)
            keep = conn.is_open and generation == self._generation
            if keep:
                self._idle.append(conn)
        if not keep:
            conn.close()

    def close_all(self) -> None:
        """QUIT every idle connection; connections lent out now are closed when they come back.

        The pool stays usable: later borrowers get fresh connections.
        """
        with self._lock:
            self._generation += 1
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    @property
    def idle_count(self) -> int:
        with self._lock:
            return len(self._idle)

    def __enter__(self) -> SmtpPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close_all()


def smtp_settings_from(config: Settings) -> SmtpSettings:
    """``SmtpSettings`` from the installation's settings (``ZGODA_SMTP_*``).

    Logging in without TLS is allowed only to a server on this machine (a local relay or test server).
    """
    password = config.smtp_password.get_secret_value() if config.smtp_password is not None else None
    return SmtpSettings(
        host=config.smtp_host,
        port=config.smtp_port,
        security=config.smtp_tls,
        username=config.smtp_username,
        password=password,
        timeout=config.smtp_timeout,
        verify_certificate=config.smtp_verify_certificate,
        ca_file=config.smtp_ca_file,
        allow_insecure_auth=config.smtp_host in ("127.0.0.1", "localhost", "::1"),
    )
