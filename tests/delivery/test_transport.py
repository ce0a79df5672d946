"""The SMTP transport against a real aiosmtpd server on loopback."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable

import pytest

from tests.delivery.conftest import Certificates, Server, message
from zgoda.delivery.transport import (
    Prepared,
    SmtpAuthenticationError,
    SmtpConnection,
    SmtpConnectionError,
    SmtpOutcome,
    SmtpPool,
    SmtpSettings,
    SmtpTlsError,
    normalise_message,
    send_message,
    smtp_settings_from,
)

SENDER = "bounces@zgoda.example"


@pytest.mark.parametrize("pipelining", [False, True], ids=["lockstep", "pipelined"])
def test_several_messages_travel_over_one_connection(start_server: Callable[..., Server], pipelining: bool) -> None:
    server = start_server(pipelining=pipelining)
    with SmtpConnection(server.settings()) as conn:
        outcomes = [send_message(conn, SENDER, f"c{i}@example.org", message(f"m{i}")) for i in range(5)]
    assert all(o.accepted and o.code == 250 and o.enhanced_status == "2.0.0" for o in outcomes)
    server.recorder.wait(lambda: server.recorder.closed == 1)
    assert server.recorder.opened == 1
    assert [m.rcpt_tos for m in server.recorder.messages] == [[f"c{i}@example.org"] for i in range(5)]
    assert server.recorder.messages[3].content == message("m3")
    assert len({m.peer for m in server.recorder.messages}) == 1


@pytest.mark.parametrize("pipelining", [False, True], ids=["lockstep", "pipelined"])
def test_refused_recipient_is_permanent_and_the_connection_goes_on(
    start_server: Callable[..., Server], pipelining: bool
) -> None:
    server = start_server(pipelining=pipelining)
    server.recorder.rcpt_replies["gone@example.org"] = "550 5.1.1 <gone@example.org>: mailbox unavailable"
    with SmtpConnection(server.settings()) as conn:
        refused = conn.prepare(SENDER, "gone@example.org", message("refused"))
        assert isinstance(refused, SmtpOutcome)
        assert not conn.is_prepared
        delivered = send_message(conn, SENDER, "ok@example.org", message("after"))
    assert refused == SmtpOutcome(
        accepted=False,
        code=550,
        text="5.1.1 <gone@example.org>: mailbox unavailable",
        enhanced_status="5.1.1",
        permanent=True,
    )
    assert delivered.accepted
    assert [m.rcpt_tos for m in server.recorder.messages] == [["ok@example.org"]]
    assert server.recorder.opened == 1


@pytest.mark.parametrize("pipelining", [False, True], ids=["lockstep", "pipelined"])
def test_temporary_refusal_is_not_permanent(start_server: Callable[..., Server], pipelining: bool) -> None:
    server = start_server(pipelining=pipelining)
    server.recorder.rcpt_replies["busy@example.org"] = "451 4.3.0 Try again later"
    with SmtpConnection(server.settings()) as conn:
        outcome = send_message(conn, SENDER, "busy@example.org", message())
        assert send_message(conn, SENDER, "ok@example.org", message()).accepted
    assert (outcome.accepted, outcome.code, outcome.permanent, outcome.enhanced_status) == (False, 451, False, "4.3.0")


def test_abandoned_message_is_never_delivered_and_the_next_one_is(server: Server) -> None:
    conn = SmtpConnection(server.settings())
    prepared = conn.prepare(SENDER, "first@example.org", message("abandoned"))
    assert isinstance(prepared, Prepared)
    assert prepared.rcpt_to == "first@example.org"
    conn.abandon()
    server.recorder.wait(lambda: server.recorder.closed == 1)
    assert server.recorder.messages == []

    assert send_message(conn, SENDER, "second@example.org", message("second")).accepted
    conn.close()
    assert [m.content for m in server.recorder.messages] == [message("second")]
    assert server.recorder.opened == 2


def test_a_held_dot_is_dropped_by_abandon_and_delivered_by_release(server: Server) -> None:
    """The sender's commit protocol: a dot written held goes nowhere until released; abandoning drops it."""
    dropped = SmtpConnection(server.settings())
    assert isinstance(dropped.prepare(SENDER, "dropped@example.org", message("dropped")), Prepared)
    dropped.write_dot(held=True)
    dropped.abandon()  # the commit failed: the message must never arrive
    server.recorder.wait(lambda: server.recorder.closed == 1)
    assert server.recorder.messages == []

    kept = SmtpConnection(server.settings())
    assert isinstance(kept.prepare(SENDER, "kept@example.org", message("kept")), Prepared)
    kept.write_dot(held=True)
    kept.release_dot()
    assert kept.verdict().accepted
    kept.close()
    assert [m.content for m in server.recorder.messages] == [message("kept")]


def test_a_worker_killed_between_prepare_and_complete_sends_nothing(server: Server) -> None:
    """SIGKILL after the body but before the final dot: the kernel closes the socket, the server discards."""
    script = textwrap.dedent(
        f"""
        import sys, time
        from zgoda.delivery.transport import SmtpConnection, SmtpSettings, Prepared
        conn = SmtpConnection(SmtpSettings(host="127.0.0.1", port={server.port}))
        prepared = conn.prepare("{SENDER}", "victim@example.org", b"Subject: in doubt\\r\\n\\r\\nbody\\r\\n" * 1)
        print("prepared" if isinstance(prepared, Prepared) else "refused", flush=True)
        time.sleep(60)
        """
    )
    worker = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert worker.stdout is not None
        assert worker.stdout.readline().strip() == "prepared"
        worker.send_signal(signal.SIGKILL)
        assert worker.wait(timeout=10) == -signal.SIGKILL
    finally:
        worker.kill()
    server.recorder.wait(lambda: server.recorder.closed == 1)
    assert server.recorder.opened == 1
    assert server.recorder.messages == []


def test_pool_abandons_a_message_left_prepared_by_an_exception(server: Server) -> None:
    with SmtpPool(server.settings(), size=1) as pool:

        def prepare_then_fail() -> None:
            with pool.connection() as conn:
                assert isinstance(conn.prepare(SENDER, "x@example.org", message("never")), Prepared)
                raise RuntimeError("database commit failed")

        with pytest.raises(RuntimeError, match="database commit failed"):
            prepare_then_fail()
        server.recorder.wait(lambda: server.recorder.closed == 1)
        with pool.connection() as conn:
            assert send_message(conn, SENDER, "y@example.org", message("later")).accepted
    assert [m.rcpt_tos for m in server.recorder.messages] == [["y@example.org"]]


def test_leading_dots_and_bare_line_feeds_arrive_intact(server: Server) -> None:
    raw = b"From: a@zgoda.example\nTo: b@example.org\nSubject: dots\n\n.hidden line\n..two dots\n.\nlast\rline"
    with SmtpConnection(server.settings()) as conn:
        assert send_message(conn, SENDER, "b@example.org", raw).accepted
    expected = raw.replace(b"\r", b"\n").replace(b"\n", b"\r\n") + b"\r\n"
    assert server.recorder.messages[0].content == expected


def test_normalise_message_leaves_clean_messages_alone() -> None:
    clean = message()
    assert normalise_message(clean) is clean
    assert normalise_message(b".a\r\nb\r\n.\r\n") == b"..a\r\nb\r\n..\r\n"
    assert normalise_message(b"a\r\n\r\n.") == b"a\r\n\r\n..\r\n"


def test_connections_rotate_after_the_configured_number_of_messages(server: Server) -> None:
    with SmtpConnection(server.settings(max_messages_per_connection=2)) as conn:
        for i in range(5):
            assert send_message(conn, SENDER, f"r{i}@example.org", message()).accepted
        assert conn.connections_opened == 3
    server.recorder.wait(lambda: server.recorder.closed == 3)
    assert len({m.peer for m in server.recorder.messages}) == 3


def test_reconnects_when_the_server_dropped_an_idle_connection(start_server: Callable[..., Server]) -> None:
    server = start_server(timeout=0.3)  # aiosmtpd closes connections idle for 0.3 s
    conn = SmtpConnection(server.settings())
    assert send_message(conn, SENDER, "a@example.org", message("one")).accepted
    server.recorder.wait(lambda: server.recorder.closed == 1)  # the server hung up on us
    assert send_message(conn, SENDER, "b@example.org", message("two")).accepted
    conn.close()
    assert [m.rcpt_tos for m in server.recorder.messages] == [["a@example.org"], ["b@example.org"]]
    assert server.recorder.opened == 2


def test_pool_shares_connections_between_threads(start_server: Callable[..., Server]) -> None:
    server = start_server(pipelining=True)
    pool = SmtpPool(server.settings(), size=3)
    failures: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(10):
                with pool.connection() as conn:
                    assert send_message(conn, SENDER, f"t{n}-{i}@example.org", message()).accepted
        except BaseException as error:  # noqa: BLE001 - reported below
            failures.append(error)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    pool.close_all()
    assert failures == []
    assert len(server.recorder.messages) == 50
    assert server.recorder.opened <= 3
    server.recorder.wait(lambda: server.recorder.closed == server.recorder.opened)


def test_server_down_raises_a_retryable_error_naming_host_and_port() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    conn = SmtpConnection(SmtpSettings(host="127.0.0.1", port=port, timeout=5))
    with pytest.raises(SmtpConnectionError, match=rf"127\.0\.0\.1:{port}.*could not connect") as caught:
        conn.prepare(SENDER, "a@example.org", message())
    assert caught.value.retryable
    assert caught.value.address == f"127.0.0.1:{port}"
    assert not conn.is_open


def test_starttls_without_certificate_checks(start_server: Callable[..., Server], certificates: Certificates) -> None:
    server = start_server(tls_context=certificates.server_context())
    with SmtpConnection(server.settings(security="starttls", verify_certificate=False)) as conn:
        assert send_message(conn, SENDER, "a@example.org", message()).accepted
    assert len(server.recorder.messages) == 1


def test_starttls_verified_against_a_ca_file(start_server: Callable[..., Server], certificates: Certificates) -> None:
    server = start_server(tls_context=certificates.server_context())
    settings = server.settings(security="starttls", ca_file=str(certificates.ca_file))
    with SmtpConnection(settings) as conn:
        assert send_message(conn, SENDER, "a@example.org", message()).accepted


def test_untrusted_certificate_is_refused(start_server: Callable[..., Server], certificates: Certificates) -> None:
    server = start_server(tls_context=certificates.server_context())
    conn = SmtpConnection(server.settings(security="starttls"))  # system CAs only: our test CA is unknown
    with pytest.raises(SmtpTlsError, match=rf"127\.0\.0\.1:{server.port}: its TLS certificate is not trusted"):
        conn.open()
    assert not SmtpTlsError.retryable


def test_starttls_required_but_not_offered(server: Server) -> None:
    with pytest.raises(SmtpTlsError, match="STARTTLS is not offered"):
        SmtpConnection(server.settings(security="starttls", verify_certificate=False)).open()


@pytest.mark.parametrize("verify", [False, True])
def test_implicit_tls(start_server: Callable[..., Server], certificates: Certificates, verify: bool) -> None:
    server = start_server(ssl_context=certificates.server_context())
    settings = server.settings(security="tls", verify_certificate=verify, ca_file=str(certificates.ca_file))
    with SmtpConnection(settings) as conn:
        assert send_message(conn, SENDER, "a@example.org", message()).accepted
        assert send_message(conn, SENDER, "b@example.org", message()).accepted
    assert server.recorder.opened == 1
    assert len(server.recorder.messages) == 2


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_auth_over_starttls(start_server: Callable[..., Server], certificates: Certificates, mechanism: str) -> None:
    other = {"PLAIN": "LOGIN", "LOGIN": "PLAIN"}[mechanism]
    server = start_server(
        tls_context=certificates.server_context(), with_auth=True, auth_required=True, auth_exclude_mechanism=[other]
    )
    settings = server.settings(
        security="starttls", ca_file=str(certificates.ca_file), username="zgoda", password="s3cret pass"
    )
    with SmtpConnection(settings) as conn:
        assert send_message(conn, SENDER, "a@example.org", message()).accepted
    assert server.recorder.auth_mechanisms == [mechanism]


def test_wrong_password_is_an_authentication_error(
    start_server: Callable[..., Server], certificates: Certificates
) -> None:
    server = start_server(tls_context=certificates.server_context(), with_auth=True, auth_required=True)
    settings = server.settings(security="starttls", verify_certificate=False, username="zgoda", password="wrong")
    with pytest.raises(SmtpAuthenticationError, match=rf"127\.0\.0\.1:{server.port} refused the login for 'zgoda'"):
        SmtpConnection(settings).open()
    assert not SmtpAuthenticationError.retryable


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_auth_without_tls_needs_an_explicit_opt_in(start_server: Callable[..., Server]) -> None:
    with pytest.raises(ValueError, match="password in clear"):
        SmtpSettings(host="127.0.0.1", port=25, username="zgoda", password="s3cret pass")
    server = start_server(with_auth=True, auth_required=True, auth_require_tls=False)
    settings = server.settings(username="zgoda", password="s3cret pass", allow_insecure_auth=True)
    with SmtpConnection(settings) as conn:
        assert send_message(conn, SENDER, "a@example.org", message()).accepted
    assert server.recorder.auth_mechanisms == ["PLAIN"]


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_unauthenticated_mail_refused_by_the_server_is_an_outcome(start_server: Callable[..., Server]) -> None:
    server = start_server(with_auth=True, auth_required=True, auth_require_tls=False)
    with SmtpConnection(server.settings()) as conn:
        outcome = send_message(conn, SENDER, "a@example.org", message())
    assert (outcome.accepted, outcome.code, outcome.permanent) == (False, 530, True)


def test_non_ascii_addresses_use_smtputf8(server: Server) -> None:
    with SmtpConnection(server.settings()) as conn:
        assert send_message(conn, "nadawca@zgoda.example", "zażółć@przykład.pl", message()).accepted
    assert server.recorder.messages[0].rcpt_tos == ["zażółć@przykład.pl"]


def test_addresses_cannot_inject_commands(server: Server) -> None:
    with SmtpConnection(server.settings()) as conn, pytest.raises(ValueError, match="not allowed"):
        conn.prepare(SENDER, "a@example.org>\r\nRCPT TO:<b@example.org", message())


def test_prepare_twice_without_completing_is_a_programming_error(server: Server) -> None:
    with SmtpConnection(server.settings()) as conn:
        conn.prepare(SENDER, "a@example.org", message())
        with pytest.raises(RuntimeError, match="complete\\(\\) or abandon\\(\\)"):
            conn.prepare(SENDER, "b@example.org", message())
        assert conn.complete().accepted


def test_settings_come_from_the_installation_settings() -> None:
    from zgoda.core.settings import Settings

    config = Settings(
        smtp_host="relay.example", smtp_port=587, smtp_tls="starttls", smtp_username="u", smtp_password="p"
    )
    smtp = smtp_settings_from(config)
    assert (smtp.host, smtp.port, smtp.security, smtp.username, smtp.password) == (
        "relay.example",
        587,
        "starttls",
        "u",
        "p",
    )
    assert smtp.address == "relay.example:587"


def test_the_final_dot_can_go_out_without_a_thread_switch() -> None:
    """The group commit's dots: one non-blocking libc send() that keeps the interpreter lock."""
    import socket as sockets

    from zgoda.delivery import transport

    left, right = sockets.socketpair()
    with left, right:
        assert transport._send_holding_gil(left, transport.DOT, 5.0)
        assert right.recv(10) == b".\r\n"
