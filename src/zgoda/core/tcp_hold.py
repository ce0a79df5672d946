"""Holding small writes in this process's kernel buffer, and choosing what a killed process leaves behind.

The sender must make two writes on two sockets count as one: the COMMIT that records messages as
sent (to the database) and the final dots that deliver them (to the SMTP server). A process can be
killed between any two system calls, and each write on loopback wakes its reader, which may take the
CPU from the writer right there. So the sender holds both writes back (``TCP_CORK``: nothing goes out,
nobody wakes) and chooses, per socket, what the kernel does with held bytes if the process dies:

* ``hold(sock, drop_if_killed=True)``: the socket is reset on close (``SO_LINGER`` 0), its held bytes
  dropped; ``keep_if_killed(sock)`` turns that back, so a dying process's close sends them;
* ``hold(sock)``: a dying process's close sends the held bytes, as any close does;
* ``release(sock)``: they go out now.

Each is one system call that does not release the interpreter lock. Linux only (``TCP_CORK``); where
it is missing ``hold`` says False and the caller writes the usual way.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct

_CORK: int | None = getattr(socket, "TCP_CORK", None)
_RESET_ON_CLOSE = struct.pack("ii", 1, 0)
_GRACEFUL_CLOSE = struct.pack("ii", 0, 0)


def borrow_socket(fd: int) -> socket.socket | None:
    """A socket object on a duplicate of ``fd`` (a driver's own socket), if it is TCP and holding works.

    Options set through it apply to the driver's socket; closing it closes only the duplicate.
    """
    if _CORK is None:
        return None
    try:
        sock = socket.socket(fileno=os.dup(fd))
    except OSError:
        return None
    if sock.family not in (socket.AF_INET, socket.AF_INET6) or sock.type != socket.SOCK_STREAM:
        sock.close()
        return None
    return sock


def hold(sock: socket.socket, *, drop_if_killed: bool = False) -> bool:
    """Keep what is written next in the kernel until ``release``; False if this socket cannot."""
    if _CORK is None:
        return False
    try:
        if drop_if_killed:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET_ON_CLOSE)
        sock.setsockopt(socket.IPPROTO_TCP, _CORK, 1)
    except OSError:
        return False
    return True


def padding_to_stay_held(sock: socket.socket, length: int) -> int:
    """Bytes to add to a write of ``length`` (onto a socket with nothing else unsent) so that its end stays
    held: ``TCP_CORK`` holds only a partial segment, and full ones go out at once. Checked against the
    segment size and the sizes it has with TCP options (timestamps, SACK) taken off."""
    try:
        segment = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG)
    except (OSError, AttributeError):
        return 0
    sizes = [size for size in (segment, segment - 12, segment - 20, segment - 40) if size > 0]
    padding = 0
    while any((length + padding) % size == 0 for size in sizes):
        padding += 1
    return padding


def keep_if_killed(sock: socket.socket) -> None:
    """From now on a close, even a killed process's, sends the held bytes."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _GRACEFUL_CLOSE)


def release(sock: socket.socket) -> None:
    """Send the held bytes now (and stop holding)."""
    if _CORK is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, _CORK, 0)
