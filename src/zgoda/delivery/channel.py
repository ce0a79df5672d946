"""One SMTP connection driven from a selector loop, so that one thread keeps many connections busy.

``SmtpConnection`` (transport.py) blocks on every reply; a sender with K connections then needs K
threads, which on a busy interpreter pass the lock to each other at every step of every message
(docs/benchmarks.md, sending, "where a message waits"). A ``SmtpChannel`` speaks the same protocol
without blocking: the loop writes what it asks for when the socket has room and hands it the bytes
that arrive, and it says what happened to the message under way:

* ``Prepared``: the envelope was accepted and the whole message up to its final dot written; the
  connection waits for the dot exactly as after ``SmtpConnection.prepare`` (the loop commits, then
  ``write_dot`` and ``dot_written``);
* ``SmtpOutcome``: MAIL, RCPT or DATA was refused (the channel resets or drops the connection itself);
* ``Broken``: the connection failed before the dot (``stale`` when a reused connection had been
  closed by the server before our first command: nothing was accepted, so the message may be tried
  on a fresh one);
* ``Verdict``: the server's answer to the final dot, or that the connection broke after it.

Opening (connect, greeting, EHLO, STARTTLS, AUTH) and closing (QUIT) still block: the loop runs them
outside itself, on ``SmtpConnection``, while the channel is ``OPENING`` or ``CLOSED``.
"""

from __future__ import annotations

import contextlib
import math
import selectors
import smtplib
import socket
import ssl
import time
from dataclasses import dataclass
from enum import Enum
from typing import Any

from zgoda.delivery.transport import (
    Envelope,
    Prepared,
    SmtpConnection,
    SmtpConnectionError,
    SmtpOutcome,
    SmtpOutcomeUnknown,
    envelope_refusal,
)

__all__ = ["Broken", "Phase", "ReplyParser", "SmtpChannel", "Step", "Verdict"]

MAX_LINE = 8192  # as smtplib: a longer reply line is a broken server
_WOULD_BLOCK = (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


class Phase(Enum):
    CLOSED = "closed"  # no socket
    OPENING = "opening"  # being opened (or rotated) outside the loop
    IDLE = "idle"  # open, no message
    ENVELOPE = "envelope"  # MAIL, RCPT, DATA written, their replies awaited
    BODY = "body"  # the message being written up to its final dot
    RESET = "reset"  # after a refusal, RSET's reply awaited
    PREPARED = "prepared"  # everything but the final dot written
    DOT = "dot"  # the final dot written, its verdict awaited


@dataclass(frozen=True)
class Broken:
    """The connection failed before the final dot: the message was not delivered."""

    error: SmtpConnectionError
    stale: bool = False
    after_previous: bool = False  # lost with the connection behind the previous message's dot


@dataclass(frozen=True)
class Verdict:
    """The server's answer to the final dot; ``outcome`` None when the connection broke after the dot
    (``error`` says how): the message may have been delivered."""

    outcome: SmtpOutcome | None
    error: SmtpOutcomeUnknown | None = None


Step = Prepared | SmtpOutcome | Broken | Verdict


class ReplyParser:
    """SMTP replies parsed from bytes as they arrive (a multi-line reply's texts joined by newlines)."""

    def __init__(self) -> None:
        self._buffer = b""
        self._lines: list[bytes] = []

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        """The replies completed by ``data``; raises ``SMTPResponseException`` on a line over 8 KB."""
        buffer = self._buffer + data if self._buffer else data
        replies: list[tuple[int, bytes]] = []
        start = 0
        while (end := buffer.find(b"\n", start)) >= 0:
            line = buffer[start : end + 1]
            start = end + 1
            if len(line) > MAX_LINE:
                raise smtplib.SMTPResponseException(500, "Line too long.")
            self._lines.append(line[4:].strip(b" \t\r\n"))
            try:
                code = int(line[:3])
            except ValueError:
                code = -1
            if code == -1 or line[3:4] != b"-":
                replies.append((code, b"\n".join(self._lines)))
                self._lines = []
        self._buffer = buffer[start:]
        if len(self._buffer) > MAX_LINE:
            raise smtplib.SMTPResponseException(500, "Line too long.")
        return replies


class SmtpChannel:
    """One ``SmtpConnection`` whose transactions a selector loop drives; ``payload`` is the loop's own.

    The channel keeps its socket registered in the loop's selector (``key.data`` is the channel) for
    reading while open, and for writing while it has bytes the socket did not take yet. Every call
    returns what happened, in order (a list: one read may finish one message and advance the next).

    Where the server offers PIPELINING, the next message may ``start`` while the last one's verdict is
    still awaited (phase ``DOT``): its envelope follows the final dot without waiting for the
    answer (RFC 2920 allows commands after the message content in one group), which saves a round
    trip a message; the verdict then arrives first, as a ``Verdict``, before the new envelope's replies.
    """

    def __init__(self, connection: SmtpConnection, selector: selectors.BaseSelector) -> None:
        self.connection = connection
        self.selector = selector
        self.phase = Phase.CLOSED
        self.payload: Any = None
        self.awaiting: Any = None
        """The loop's payload of a message whose verdict is awaited while ``payload``'s is under way."""
        self.deadline = math.inf
        """When the reply (or the room to write) awaited now is overdue (``time.monotonic()``)."""
        self._sock: socket.socket | None = None
        self._events = 0
        self._fresh = False  # opened for the message under way: a failure is not a stale connection
        self._out: list[memoryview] = []
        self._parser = ReplyParser()
        self._envelope: Envelope | None = None
        self._replies: list[tuple[int, bytes]] = []
        self._pipelined = False
        self._commands: list[bytes] = []  # still to send, one at a time, to a server without PIPELINING
        self._verdict_pending = False  # the last message's verdict comes before this envelope's replies

    # -- for the loop -----------------------------------------------------------------------------

    @property
    def can_follow_the_dot(self) -> bool:
        """Whether a new message may start now, its envelope written behind the last one's final dot."""
        connection = self.connection
        return (
            self.phase is Phase.DOT
            and connection.offers_pipelining
            and connection.messages_on_socket + 1 < connection.settings.max_messages_per_connection
        )

    def opened(self) -> None:
        """The connection was opened (outside the loop): from now on its socket does not block."""
        sock = self.connection.sock
        assert sock is not None
        sock.setblocking(False)
        self._sock = sock
        self.phase = Phase.IDLE
        self._fresh = True
        self._verdict_pending = False
        self._parser = ReplyParser()
        self._out = []
        self._events = selectors.EVENT_READ
        self.selector.register(sock, self._events, self)

    def detach(self) -> None:
        """Before the connection is closed or reopened outside the loop: out of the selector, blocking again."""
        sock = self._sock
        self._forget_socket()
        if sock is not None and self.connection.sock is sock:
            with contextlib.suppress(OSError):
                sock.settimeout(self.connection.settings.timeout)
        self.phase = Phase.OPENING

    def start(self, mail_from: str, rcpt_to: str, message: bytes) -> list[Step]:
        """Begin a message on the idle channel (or behind the last one's dot, ``can_follow_the_dot``)."""
        after_dot = self.phase is Phase.DOT
        if not (self.phase is Phase.IDLE or (after_dot and self.can_follow_the_dot)):
            raise RuntimeError(f"A channel in phase {self.phase.value} cannot start a message now.")
        envelope = self.connection.begin(mail_from, rcpt_to, message)
        if isinstance(envelope, SmtpOutcome):
            return [envelope]
        self._envelope = envelope
        self._replies = []
        self._verdict_pending = after_dot
        self.phase = Phase.ENVELOPE
        self._pipelined = self.connection.offers_pipelining
        if self._pipelined:
            self._commands = []
            self._queue(b"".join(envelope.commands))
        else:
            first, *self._commands = envelope.commands
            self._queue(first)
        if not after_dot:
            self._await_reply()
        return self._flush()

    def on_writable(self) -> list[Step]:
        return self._flush()

    def on_readable(self) -> list[Step]:
        """Read what arrived and act on it."""
        sock = self._sock
        assert sock is not None
        eof = False
        try:
            data = sock.recv(65536)
            if not data:
                eof = True
            elif isinstance(sock, ssl.SSLSocket):
                while sock.pending():
                    data += sock.recv(65536)
            replies = self._parser.feed(data) if data else []
        except _WOULD_BLOCK:
            return []
        except (OSError, smtplib.SMTPException) as error:
            return self._broke(error)
        steps: list[Step] = []
        for reply in replies:
            steps += self._on_reply(*reply)
            if self.phase is Phase.CLOSED:
                return steps
        if eof:
            steps += self._broke(None, what="closed the connection")
        return steps

    def dot_written(self) -> list[Step]:
        """After the loop's group commit wrote the final dot: await its verdict (or report the write's failure)."""
        if self.connection.sock is None:  # a failed commit dropped its held dots (and the connection)
            self.abandoned()
            return [Broken(self._error(None, "closed before the final dot (the commit failed)"))]
        self.phase = Phase.DOT
        if self.connection.dot_failed:
            return self._verdict(-1, b"")  # the connection reports the write's error
        self._await_reply()
        return []

    def drop(self) -> None:
        """Close the connection without a word: a message under way is never completed (the server
        discards a DATA without its final dot)."""
        self._drop()

    def abandoned(self) -> None:
        """The connection was closed without its dot (``SmtpConnection.abandon``): the channel is closed."""
        self._forget_socket()
        self.phase = Phase.CLOSED
        self._verdict_pending = False

    def expire(self) -> list[Step]:
        """The awaited reply (or room to write) did not come in time: as a broken connection."""
        return self._broke(TimeoutError("timed out"), what="did not answer in time")

    # -- inside ---------------------------------------------------------------------------------

    def _forget_socket(self) -> None:
        if self._sock is not None and self._events:
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(self._sock)
        self._sock = None
        self._events = 0
        self._out = []
        self.deadline = math.inf

    def _queue(self, data: bytes) -> None:
        self._out.append(memoryview(data))

    def _await_reply(self) -> None:
        self.deadline = time.monotonic() + self.connection.settings.timeout

    def _flush(self) -> list[Step]:
        """Write what is queued while the socket takes it; a message whose body is all written is prepared."""
        sock = self._sock
        assert sock is not None
        try:
            while self._out:
                sent = sock.send(self._out[0])
                if self.phase is Phase.BODY and sent:
                    self._await_reply()  # the server is taking it: the time runs from the last progress
                if sent < len(self._out[0]):
                    self._out[0] = self._out[0][sent:]
                    break
                self._out.pop(0)
        except _WOULD_BLOCK:
            pass
        except OSError as error:
            return self._broke(error)
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if self._out else 0)
        if events != self._events:
            self.selector.modify(sock, events, self)
            self._events = events
        if self.phase is Phase.BODY and not self._out:
            assert self._envelope is not None
            self.phase = Phase.PREPARED
            self.deadline = math.inf
            self._fresh = False
            return [self.connection.mark_prepared(self._envelope)]
        return []

    def _on_reply(self, code: int, text: bytes) -> list[Step]:
        phase = self.phase
        if self._verdict_pending:  # the last message's answer, ahead of this envelope's
            return self._verdict(code, text)
        if phase is Phase.ENVELOPE:
            self._replies.append((code, text))
            if self._pipelined:
                return self._after_envelope() if len(self._replies) == 3 else []
            accepted = ((250,), (250, 251), (354,))[len(self._replies) - 1]
            if code in accepted and self._commands:
                self._queue(self._commands.pop(0))
                self._await_reply()
                return self._flush()
            return self._after_envelope()
        if phase is Phase.RESET:
            if code == 250:
                self.phase = Phase.IDLE
                self.deadline = math.inf
            else:
                self._drop()
            return []
        if phase is Phase.DOT:
            return self._verdict(code, text)
        # a reply nobody asked for: a server closing an idle connection (421), or refusing the message
        # before its dot (552 too large): the connection is done, and the message refused as it says
        self._drop()
        if phase in (Phase.BODY, Phase.PREPARED):
            return [SmtpOutcome.from_reply(code, text)]
        return []

    def _after_envelope(self) -> list[Step]:
        self._fresh = False
        refusal = envelope_refusal(self._replies)
        if refusal is not None:
            if refusal.drop_connection:
                self._drop()
            else:
                self.phase = Phase.RESET
                self._queue(b"RSET\r\n")
                self._await_reply()
                self._flush()  # a failure closes the channel; the refusal stands either way
            return [refusal.outcome]
        assert self._envelope is not None
        self.phase = Phase.BODY
        self._queue(self._envelope.data)
        self._await_reply()  # not a reply: room to write the body, within the same time
        return self._flush()

    def _verdict(self, code: int, text: bytes, error: BaseException | None = None) -> list[Step]:
        """The last message's verdict; a message started behind its dot goes on (or breaks with the connection)."""
        following = self._verdict_pending
        self._verdict_pending = False
        try:
            verdict = Verdict(self.connection.settle(code, text, error=error))
        except SmtpOutcomeUnknown as unknown:
            verdict = Verdict(None, unknown)
        if not self.connection.is_open:  # 421, a garbled answer, or broken: the connection dropped itself
            self.abandoned()
            if following:
                broken = self._error(error, "closed the connection after the previous message")
                return [verdict, Broken(broken, after_previous=True)]
            return [verdict]
        if following:
            self._await_reply()  # now the envelope's replies
        else:
            self.phase = Phase.IDLE
            self.deadline = math.inf
        return [verdict]

    def _broke(
        self, error: BaseException | None, *, what: str = "connection broke during the transaction"
    ) -> list[Step]:
        phase = self.phase
        if phase is Phase.DOT or self._verdict_pending:
            return self._verdict(-1, b"", error or ConnectionError(what))
        stale = phase is Phase.ENVELOPE and not self._replies and not self._fresh
        self._drop()
        if phase in (Phase.ENVELOPE, Phase.BODY, Phase.PREPARED):
            if stale:
                what = "closed the connection before answering MAIL FROM"
            return [Broken(self._error(error, what), stale=stale)]
        return []  # idle (or resetting after a refusal already reported): just closed

    def _drop(self) -> None:
        """Close the connection without a word (a message under way is never completed)."""
        self._forget_socket()  # out of the selector before its descriptor is closed (and reused)
        self.connection.abandon()
        self.phase = Phase.CLOSED
        self._verdict_pending = False

    def _error(self, error: BaseException | None, what: str) -> SmtpConnectionError:
        address = self.connection.settings.address
        detail = f": {error}" if error is not None and str(error) else ""
        return SmtpConnectionError(f"SMTP server {address}: {what}{detail}", address=address)
