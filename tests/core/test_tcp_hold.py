"""What the kernel does with held writes when their process is killed (the sender's commit point relies on it).

Each case is a real process that writes to a real TCP listener and kills itself with SIGKILL
before it releases what it wrote.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap

import pytest

from zgoda.core import tcp_hold

pytestmark = pytest.mark.skipif(not hasattr(socket, "TCP_CORK"), reason="TCP_CORK is Linux only")

WRITER = textwrap.dedent(
    """
    import os, signal, socket, sys
    from zgoda.core import tcp_hold
    port, mode = int(sys.argv[1]), sys.argv[2]
    sock = socket.create_connection(("127.0.0.1", port))
    assert tcp_hold.hold(sock, drop_if_killed=mode != "plain")
    sock.sendall(b"COMMIT")
    if mode == "kept":
        tcp_hold.keep_if_killed(sock)
    if mode == "released":
        tcp_hold.release(sock)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def _received_after_kill(mode: str) -> bytes:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        writer = subprocess.run([sys.executable, "-c", WRITER, str(port), mode], timeout=60, check=False)
        assert writer.returncode == -9, "the writer was to kill itself"
        peer, _ = listener.accept()
        with peer:
            peer.settimeout(10)
            received = b""
            try:
                while chunk := peer.recv(100):
                    received += chunk
            except ConnectionResetError:
                pass
    return received


def test_held_bytes_a_killed_process_drops() -> None:
    assert _received_after_kill("dropped") == b""


def test_held_bytes_a_killed_process_sends_after_keep_if_killed() -> None:
    assert _received_after_kill("kept") == b"COMMIT"


def test_held_bytes_without_drop_go_out_when_the_process_dies() -> None:
    assert _received_after_kill("plain") == b"COMMIT"


def test_released_bytes_go_out_even_from_a_socket_that_drops() -> None:
    assert _received_after_kill("released") == b"COMMIT"


def test_borrow_socket_refuses_what_is_not_tcp() -> None:
    left, right = socket.socketpair()
    with left, right:
        assert tcp_hold.borrow_socket(left.fileno()) is None
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        with client:
            borrowed = tcp_hold.borrow_socket(client.fileno())
            assert borrowed is not None
            with borrowed:
                assert borrowed.fileno() != client.fileno()
                assert tcp_hold.hold(borrowed)
                assert client.getsockopt(socket.IPPROTO_TCP, socket.TCP_CORK) == 1  # the same socket underneath
                tcp_hold.release(borrowed)
            assert client.getsockopt(socket.IPPROTO_TCP, socket.TCP_CORK) == 0


def test_a_held_write_that_fills_whole_segments_goes_out_so_its_end_is_padded() -> None:
    """TCP_CORK holds only a partial segment: a held write of whole segments leaves at once (a held
    COMMIT would reach the database before its dots). ``padding_to_stay_held`` makes its end partial."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        writer = socket.create_connection(listener.getsockname())
        peer, _ = listener.accept()
        with writer, peer:
            segment = writer.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG)
            assert tcp_hold.hold(writer)
            writer.sendall(b"x" * (2 * segment))
            peer.settimeout(10)
            received = b""
            while len(received) < 2 * segment:  # arrives without a release
                received += peer.recv(65536)
            assert received == b"x" * (2 * segment)
            tcp_hold.release(writer)

            segment = writer.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG)  # (it may change with traffic)
            for length in (2 * segment, 2 * segment - 12, 3 * (segment - 20), 100, 1):
                padding = tcp_hold.padding_to_stay_held(writer, length)
                sizes = (segment, segment - 12, segment - 20, segment - 40)
                assert all((length + padding) % size for size in sizes)
                assert padding == 0 or any((length + padding - 1) % size == 0 for size in sizes)
            assert tcp_hold.padding_to_stay_held(writer, 2 * segment) > 0
