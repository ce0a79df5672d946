"""SMTP channels: many connections driven from one thread's selector, against a real aiosmtpd server."""

from __future__ import annotations

import selectors
import smtplib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from tests.delivery.conftest import WAIT, Certificates, Server, message
from zgoda.delivery.channel import Broken, Phase, ReplyParser, SmtpChannel, Step, Verdict
from zgoda.delivery.transport import Prepared, SmtpConnection, SmtpOutcome, SmtpSettings

SENDER = "bounces@zgoda.example"


def test_replies_are_parsed_as_they_arrive() -> None:
    parser = ReplyParser()
    assert parser.feed(b"250-first line\r\n250-sec") == []
    assert parser.feed(b"ond\r\n250 last\r\n354 go ahead\r\n") == [
        (250, b"first line\nsecond\nlast"),
        (354, b"go ahead"),
    ]
    assert parser.feed(b"xyz garbled\r\n") == [(-1, b"garbled")]
    with pytest.raises(smtplib.SMTPResponseException):
        parser.feed(b"250 " + b"x" * 9000)


class Loop:
    """A minimal selector loop, as the sender's: it opens channels, and moves them until a condition holds."""

    def __init__(self, settings: SmtpSettings, count: int = 1) -> None:
        self.selector = selectors.DefaultSelector()
        self.channels = [SmtpChannel(SmtpConnection(settings), self.selector) for _ in range(count)]
        self.steps: dict[int, list[Step]] = {index: [] for index in range(count)}
        for channel in self.channels:
            channel.connection.open()
            channel.opened()

    def record(self, channel: SmtpChannel, steps: list[Step]) -> None:
        self.steps[self.channels.index(channel)].extend(steps)

    def start(self, index: int, rcpt: str, body: bytes) -> None:
        channel = self.channels[index]
        self.record(channel, channel.start(SENDER, rcpt, body))

    def run_until(self, done: Callable[[], bool]) -> None:
        deadline = time.monotonic() + WAIT
        while not done():
            assert time.monotonic() < deadline, "the channels never got there"
            for key, events in self.selector.select(0.05):
                channel: SmtpChannel = key.data
                if events & selectors.EVENT_WRITE:
                    self.record(channel, channel.on_writable())
                if events & selectors.EVENT_READ and channel.phase not in (Phase.CLOSED, Phase.OPENING):
                    self.record(channel, channel.on_readable())
            for channel in self.channels:
                if channel.deadline < time.monotonic():
                    self.record(channel, channel.expire())

    def last(self, index: int) -> Step | None:
        steps = self.steps[index]
        return steps[-1] if steps else None

    def complete(self, index: int) -> None:
        """What the group commit does for a prepared message: its dot, then the verdict awaited."""
        channel = self.channels[index]
        channel.connection.write_dot()
        self.record(channel, channel.dot_written())

    def close(self) -> None:
        for channel in self.channels:
            channel.detach()
            channel.connection.close()
        self.selector.close()


@pytest.mark.parametrize("pipelining", [False, True], ids=["lockstep", "pipelined"])
def test_one_thread_sends_over_several_connections(start_server: Callable[..., Server], pipelining: bool) -> None:
    server = start_server(pipelining=pipelining)
    loop = Loop(server.settings(), count=3)
    for round_ in range(2):
        for index in range(3):
            loop.start(index, f"c{round_}{index}@example.org", message(f"m{round_}{index}"))
        loop.run_until(lambda: all(isinstance(loop.last(i), Prepared) for i in range(3)))
        assert server.recorder.messages[round_ * 3 :] == []  # nothing is delivered before its dot
        for index in range(3):
            loop.complete(index)
        loop.run_until(lambda: all(isinstance(loop.last(i), Verdict) for i in range(3)))
    verdicts = [step for steps in loop.steps.values() for step in steps if isinstance(step, Verdict)]
    assert len(verdicts) == 6
    assert all(v.outcome is not None and v.outcome.accepted and v.outcome.code == 250 for v in verdicts)
    loop.close()
    server.recorder.wait(lambda: server.recorder.closed == 3)
    assert server.recorder.opened == 3
    received = sorted((m.rcpt_tos[0], m.content) for m in server.recorder.messages)
    expected = sorted((f"c{r}{i}@example.org", message(f"m{r}{i}")) for r in range(2) for i in range(3))
    assert received == expected


def test_the_next_envelope_follows_the_dot_without_waiting_for_its_verdict(
    start_server: Callable[..., Server],
) -> None:
    server = start_server(pipelining=True)
    loop = Loop(server.settings())
    channel = loop.channels[0]
    loop.start(0, "first@example.org", message("first"))
    loop.run_until(lambda: isinstance(loop.last(0), Prepared))
    loop.complete(0)
    assert channel.phase is Phase.DOT and channel.can_follow_the_dot
    loop.start(0, "second@example.org", message("second"))  # behind the dot, its verdict not read yet
    assert channel.phase is Phase.ENVELOPE
    loop.run_until(lambda: len(loop.steps[0]) == 3)
    first_verdict, prepared = loop.steps[0][1:]
    assert isinstance(first_verdict, Verdict) and first_verdict.outcome is not None
    assert first_verdict.outcome.accepted  # the first message's answer came ahead of the second envelope's
    assert isinstance(prepared, Prepared) and prepared.rcpt_to == "second@example.org"
    loop.complete(0)
    loop.run_until(lambda: isinstance(loop.last(0), Verdict))
    assert channel.phase is Phase.IDLE
    loop.close()
    assert [m.rcpt_tos for m in server.recorder.messages] == [["first@example.org"], ["second@example.org"]]
    assert server.recorder.messages[1].content == message("second")
    assert server.recorder.opened == 1


def test_without_pipelining_the_next_message_waits_for_the_verdict(server: Server) -> None:
    loop = Loop(server.settings())
    loop.start(0, "first@example.org", message("first"))
    loop.run_until(lambda: isinstance(loop.last(0), Prepared))
    loop.complete(0)
    assert loop.channels[0].phase is Phase.DOT
    assert not loop.channels[0].can_follow_the_dot
    loop.run_until(lambda: isinstance(loop.last(0), Verdict))
    loop.close()


@pytest.mark.parametrize("pipelining", [False, True], ids=["lockstep", "pipelined"])
def test_a_refusal_resets_the_connection_for_the_next_message(
    start_server: Callable[..., Server], pipelining: bool
) -> None:
    server = start_server(pipelining=pipelining)
    server.recorder.rcpt_replies["gone@example.org"] = "550 5.1.1 <gone@example.org>: mailbox unavailable"
    loop = Loop(server.settings())
    loop.start(0, "gone@example.org", message("refused"))
    loop.run_until(lambda: loop.channels[0].phase is Phase.IDLE)
    refusal = loop.last(0)
    assert isinstance(refusal, SmtpOutcome)
    assert (refusal.accepted, refusal.code, refusal.enhanced_status, refusal.permanent) == (False, 550, "5.1.1", True)
    loop.start(0, "ok@example.org", message("after"))
    loop.run_until(lambda: isinstance(loop.last(0), Prepared))
    loop.complete(0)
    loop.run_until(lambda: isinstance(loop.last(0), Verdict))
    loop.close()
    assert [m.rcpt_tos for m in server.recorder.messages] == [["ok@example.org"]]
    assert server.recorder.opened == 1


def test_a_prepared_message_abandoned_is_never_delivered(server: Server) -> None:
    loop = Loop(server.settings())
    loop.start(0, "a@example.org", message("never"))
    loop.run_until(lambda: isinstance(loop.last(0), Prepared))
    loop.channels[0].connection.abandon()  # what the sender does when the commit did not mark it sent
    loop.channels[0].abandoned()
    assert loop.channels[0].phase is Phase.CLOSED
    server.recorder.wait(lambda: server.recorder.closed == 1)
    loop.close()
    assert server.recorder.messages == []


def test_a_large_message_is_written_as_the_socket_takes_it(server: Server) -> None:
    big = message("big") + b"".join(
        b"line %07d of a long message body, to fill the socket\r\n" % i for i in range(60_000)
    )
    loop = Loop(server.settings())
    loop.start(0, "a@example.org", big)
    assert loop.channels[0].phase in (Phase.ENVELOPE, Phase.BODY)
    loop.run_until(lambda: isinstance(loop.last(0), Prepared))
    loop.complete(0)
    loop.run_until(lambda: isinstance(loop.last(0), Verdict))
    loop.close()
    assert len(server.recorder.messages) == 1
    assert server.recorder.messages[0].content == big


def test_an_idle_connection_the_server_closed_is_closed_without_a_message_lost(
    start_server: Callable[..., Server],
) -> None:
    server = start_server(timeout=0.3)  # aiosmtpd closes connections idle for 0.3 s (saying 421)
    loop = Loop(server.settings())
    loop.run_until(lambda: loop.channels[0].phase is Phase.CLOSED)
    assert loop.steps[0] == []  # no message was under way: nothing to report
    loop.close()


@contextmanager
def scripted_server(conversation: Callable[[socket.socket], None]) -> Iterator[int]:
    """A one-connection SMTP server on loopback that says what ``conversation`` says; yields its port."""
    with socket.create_server(("127.0.0.1", 0)) as listener:

        def serve() -> None:
            client, _ = listener.accept()
            with client:
                conversation(client)

        server = threading.Thread(target=serve, daemon=True)
        server.start()
        yield listener.getsockname()[1]
        server.join(WAIT)


def test_a_server_that_stops_answering_breaks_the_message_at_its_deadline() -> None:
    answered = threading.Event()

    def greet_then_fall_silent(client: socket.socket) -> None:
        client.sendall(b"220 silent.example ESMTP\r\n")
        client.recv(1024)  # EHLO
        client.sendall(b"250 silent.example\r\n")
        answered.wait(WAIT)  # MAIL FROM is never answered

    with scripted_server(greet_then_fall_silent) as port:
        loop = Loop(SmtpSettings(host="127.0.0.1", port=port, timeout=0.2))
        loop.start(0, "a@example.org", message())
        loop.run_until(lambda: loop.last(0) is not None)
        answered.set()
    broken = loop.last(0)
    assert isinstance(broken, Broken)
    assert "did not answer in time" in str(broken.error)
    assert loop.channels[0].phase is Phase.CLOSED
    loop.close()


def test_a_server_refusing_the_message_before_its_dot_refuses_it() -> None:
    """An early reply while the body is written (552: too large) is the server's verdict; the connection ends."""

    def refuse_the_body(client: socket.socket) -> None:
        client.sendall(b"220 strict.example ESMTP\r\n")
        client.recv(1024)  # EHLO
        client.sendall(b"250-strict.example\r\n250 PIPELINING\r\n")
        received = b""
        while received.count(b"\r\n") < 3:
            received += client.recv(1024)  # MAIL, RCPT, DATA
        client.sendall(b"250 ok\r\n250 ok\r\n354 go ahead\r\n")
        client.recv(1024)  # the first of the body
        client.sendall(b"552 5.3.4 Message too big for this server\r\n")
        client.recv(1024)

    with scripted_server(refuse_the_body) as port:
        loop = Loop(SmtpSettings(host="127.0.0.1", port=port))
        big = message() + b"x" * 60 + b"\r\n" * 200_000
        loop.start(0, "a@example.org", big)
        loop.run_until(lambda: isinstance(loop.last(0), SmtpOutcome))
    refusal = loop.last(0)
    assert isinstance(refusal, SmtpOutcome)
    assert (refusal.accepted, refusal.code, refusal.enhanced_status, refusal.permanent) == (False, 552, "5.3.4", True)
    assert loop.channels[0].phase is Phase.CLOSED
    loop.close()


@pytest.mark.parametrize("security", ["starttls", "tls"])
def test_tls_connections_are_driven_without_blocking(
    start_server: Callable[..., Server], certificates: Certificates, security: str
) -> None:
    if security == "tls":
        server = start_server(ssl_context=certificates.server_context(), pipelining=True)
    else:
        server = start_server(tls_context=certificates.server_context(), pipelining=True)
    loop = Loop(server.settings(security=security, ca_file=str(certificates.ca_file)), count=2)
    for index in range(2):
        loop.start(index, f"c{index}@example.org", message(f"m{index}"))
    loop.run_until(lambda: all(isinstance(loop.last(i), Prepared) for i in range(2)))
    for index in range(2):
        loop.complete(index)
    loop.run_until(lambda: all(isinstance(loop.last(i), Verdict) for i in range(2)))
    loop.close()
    assert sorted(m.content for m in server.recorder.messages) == [message("m0"), message("m1")]
