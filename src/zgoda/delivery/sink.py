"""A local SMTP sink: an aiosmtpd server that keeps every message it receives in a Maildir.

For the demo, the tests and benchmarks: point the SMTP transport at it and look at what a campaign
would have sent. Each message is stored as received (CRLF line endings, so DKIM signatures still
verify), with ``Return-Path`` and ``Delivered-To`` lines on top naming the SMTP envelope. Files are
written to ``tmp/`` and renamed into ``new/`` (atomic, the Maildir way) without an fsync: a crash
of the machine may lose the last messages, which a test sink can afford (see docs/delivery.md).
"""

from __future__ import annotations

import asyncio
import email.message
import email.policy
import heapq
import itertools
import os
import re
import signal
import socket
import ssl
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.parser import BytesParser
from pathlib import Path
from types import FrameType
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

__all__ = [
    "CaughtMessage",
    "SmtpServerThread",
    "SmtpSink",
    "find_caught",
    "read_maildir",
    "sink_command",
]


class SmtpServerThread:
    """An aiosmtpd server on its own event loop in a background thread, listening on ``host:port``.

    Port 0 picks a free port (read ``.port`` after ``start()``): the socket is bound here, in the
    caller's thread, so a busy port fails at once with a clear error. ``ssl_context`` makes it an
    implicit-TLS server (SMTPS, port 465 style); ``smtp_kwargs`` go to ``aiosmtpd.smtp.SMTP`` (for
    instance ``tls_context`` for STARTTLS or ``authenticator``).
    """

    def __init__(
        self,
        handler: Any,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
        smtp_class: type[SMTP] = SMTP,
        **smtp_kwargs: Any,
    ) -> None:
        self.handler = handler
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.smtp_class = smtp_class
        self.smtp_kwargs = {"hostname": socket.gethostname(), "enable_SMTPUTF8": True, **smtp_kwargs}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._protocols: weakref.WeakSet[SMTP] = weakref.WeakSet()

    def start(self) -> None:
        """Bind, then serve in a daemon thread; returns once the server accepts connections."""
        if self._thread is not None:
            raise RuntimeError("The SMTP server is already running.")
        sock = _listening_socket(self.host, self.port)
        self.port = sock.getsockname()[1]
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        failure: list[BaseException] = []

        def factory() -> SMTP:
            protocol = self.smtp_class(self.handler, loop=loop, **self.smtp_kwargs)
            self._protocols.add(protocol)
            return protocol

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                server = loop.run_until_complete(loop.create_server(factory, sock=sock, ssl=self.ssl_context))
            except BaseException as error:  # noqa: BLE001 - handed to the starting thread
                failure.append(error)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                server.close()
                for protocol in list(self._protocols):
                    if protocol.transport is not None:
                        protocol.transport.close()
                tasks = asyncio.all_tasks(loop)
                for task in tasks:
                    task.cancel()
                loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
                loop.run_until_complete(server.wait_closed())
                loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, name=f"smtp-server-{self.port}", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            self._thread.join()
            self._thread = None
            sock.close()
            raise failure[0]

    def stop(self) -> None:
        """Stop listening, drop open connections, and wait for the thread to end."""
        if self._thread is None or self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._thread = None
        self._loop = None

    def __enter__(self) -> SmtpServerThread:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _listening_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto IPPROTO_TCP (not 0) so asyncio sets TCP_NODELAY on accepted sockets: otherwise Nagle's algorithm
    # holds the second of several pipelined replies until the client's delayed ACK, 40 ms later.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(256)
    except OSError as error:
        sock.close()
        raise OSError(error.errno, f"Cannot listen on {host}:{port}: {error.strerror}") from error
    sock.setblocking(False)
    return sock


class _SinkHandler:
    """Stores (or only counts) each message; advertises PIPELINING, which aiosmtpd handles but does not announce."""

    def __init__(self, maildir: Path | None) -> None:
        self.maildir = maildir
        self.received = 0
        self.condition = threading.Condition()
        self._counter = itertools.count(1)
        self._pid = os.getpid()
        self._host = socket.gethostname().replace("/", r"\057").replace(":", r"\072")

    async def handle_EHLO(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        return [*responses[:-1], "250-PIPELINING", responses[-1]]

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        key = ""
        if self.maildir is not None:
            try:
                key = self.store(envelope.mail_from or "", list(envelope.rcpt_tos), envelope.original_content or b"")
            except OSError as error:  # disk full, folder removed: temporary, the client may retry
                return f"451 4.3.0 The sink could not store the message: {error.strerror or error}"
        with self.condition:
            self.received += 1
            self.condition.notify_all()
        return f"250 2.0.0 Ok: queued as {key}" if key else "250 2.0.0 Ok: discarded"

    def store(self, mail_from: str, rcpt_tos: list[str], content: bytes) -> str:
        """Write one message into ``new/`` through ``tmp/``; returns its Maildir key."""
        assert self.maildir is not None
        now = time.time()
        seconds = int(now)
        key = f"{seconds}.M{int((now - seconds) * 1_000_000):06d}P{self._pid}Q{next(self._counter)}.{self._host}"
        envelope = f"Return-Path: <{mail_from}>\r\n" + "".join(f"Delivered-To: {rcpt}\r\n" for rcpt in rcpt_tos)
        tmp = self.maildir / "tmp" / key
        with tmp.open("xb") as file:
            file.write(envelope.encode("utf-8") + content)
        tmp.rename(self.maildir / "new" / key)
        return key


def make_maildir(path: Path) -> None:
    """Create ``path`` with its ``tmp``, ``new`` and ``cur`` folders if missing."""
    for sub in ("tmp", "new", "cur"):
        (path / sub).mkdir(parents=True, exist_ok=True)


class SmtpSink:
    """The local SMTP sink: ``with SmtpSink(maildir) as sink: ... sink.port ... sink.received``.

    ``discard=True`` counts messages and stores nothing (for benchmarks); ``maildir`` may then be None.
    """

    def __init__(self, maildir: Path | None, *, host: str = "127.0.0.1", port: int = 0, discard: bool = False) -> None:
        if maildir is None and not discard:
            raise ValueError("The SMTP sink needs a Maildir folder unless it discards messages.")
        self.maildir = None if discard else maildir
        self._handler = _SinkHandler(self.maildir)
        self._server = SmtpServerThread(self._handler, host=host, port=port)

    @property
    def host(self) -> str:
        return self._server.host

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def received(self) -> int:
        """Messages accepted since start (stored, or counted when discarding)."""
        return self._handler.received

    def start(self) -> None:
        """Create the Maildir if needed and start listening."""
        if self.maildir is not None:
            make_maildir(self.maildir)
        self._server.start()

    def stop(self) -> None:
        self._server.stop()

    def wait_for(self, count: int, timeout: float = 10.0) -> bool:
        """Block until at least ``count`` messages have arrived; False if ``timeout`` passed first."""
        with self._handler.condition:
            return self._handler.condition.wait_for(lambda: self._handler.received >= count, timeout)

    def __enter__(self) -> SmtpSink:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def sink_command(
    port: int,
    maildir: Path,
    host: str,
    discard: bool,
    *,
    stop: threading.Event | None = None,
    echo: Callable[[str], None] | None = None,
) -> None:
    """Run the sink in the foreground until Ctrl-C or SIGTERM, printing the count as messages arrive."""
    say = echo or _stdout
    done = stop or threading.Event()
    sink = SmtpSink(None if discard else maildir, host=host, port=port, discard=discard)
    previous: dict[signal.Signals, Any] = {}

    def on_signal(signum: int, frame: FrameType | None) -> None:
        done.set()

    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, on_signal)
    try:
        sink.start()
        where = "discarding every message" if discard else f"storing into the Maildir {maildir}"
        say(f"Zgoda SMTP sink listening on {sink.host}:{sink.port}, {where}. Ctrl-C stops it.")
        shown = 0
        while not done.wait(0.5):
            if sink.received != shown:
                shown = sink.received
                say(f"{_messages(shown)} received")
        sink.stop()
        say(f"Stopped; {_messages(sink.received)} received in all.")
    finally:
        sink.stop()
        for number, handler in previous.items():
            signal.signal(number, handler)


def _messages(count: int) -> str:
    return f"{count} message" if count == 1 else f"{count} messages"


def _stdout(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


# -- reading what the sink caught ---------------------------------------------------------------

_KEY_TIME = re.compile(r"^(\d+)\.M(\d+)P\d+Q(\d+)\.")
_ENVELOPE_HEADERS = ("return-path", "delivered-to")


@dataclass(frozen=True)
class CaughtMessage:
    """One message in the sink's Maildir, as the UI lists it; ``load()`` or ``raw()`` for the whole message."""

    key: str
    path: Path
    received_at: datetime
    envelope_from: str
    envelope_to: tuple[str, ...]
    subject: str
    from_: str
    to: str
    size: int
    message_id: str

    def raw(self) -> bytes:
        """The file as stored: the envelope lines, then the message as received."""
        return self.path.read_bytes()

    def load(self) -> email.message.EmailMessage:
        """The whole message, parsed (``email.policy.default``: headers decoded, parts walkable)."""
        with self.path.open("rb") as file:
            message = BytesParser(policy=email.policy.default).parse(file)
        assert isinstance(message, email.message.EmailMessage)
        return message


def read_maildir(path: Path, limit: int = 50) -> list[CaughtMessage]:
    """The newest ``limit`` messages in the Maildir at ``path`` (``new/`` and ``cur/``), newest first."""
    entries = list(_entries(path))
    newest = heapq.nlargest(limit, entries, key=lambda entry: entry[0])
    return [message for _, file in newest if (message := _caught(file)) is not None]


def find_caught(path: Path, key: str) -> CaughtMessage | None:
    """The message with Maildir ``key`` (as listed by ``read_maildir``), or None; never leaves ``path``."""
    if not key or "/" in key or "\\" in key or key.startswith("."):
        return None
    for sub in ("new", "cur"):
        folder = path / sub
        candidate = folder / key
        if candidate.is_file():
            return _caught(candidate)
        if folder.is_dir():
            for entry in os.scandir(folder):
                if entry.name.startswith(key + ":"):
                    return _caught(Path(entry.path))
    return None


def _entries(path: Path) -> Iterator[tuple[tuple[float, int, int], Path]]:
    for sub in ("new", "cur"):
        folder = path / sub
        if not folder.is_dir():
            continue
        for entry in os.scandir(folder):
            if entry.name.startswith(".") or not entry.is_file():
                continue
            match = _KEY_TIME.match(entry.name)
            if match:
                order = (float(match.group(1)), int(match.group(2)), int(match.group(3)))
            else:
                try:
                    order = (entry.stat().st_mtime, 0, 0)
                except OSError:
                    continue
            yield order, Path(entry.path)


def _caught(file: Path) -> CaughtMessage | None:
    try:
        with file.open("rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            head = bytearray()
            for line in handle:
                if line in (b"\r\n", b"\n"):
                    break
                head += line
    except FileNotFoundError:  # moved or deleted while we listed
        return None
    headers = BytesParser(policy=email.policy.default).parsebytes(bytes(head) + b"\r\n", headersonly=True)
    envelope_from = ""
    envelope_to: list[str] = []
    for name, value in headers.raw_items():
        lowered = name.lower()
        if lowered not in _ENVELOPE_HEADERS:
            break
        if lowered == "return-path":
            envelope_from = value.strip().removeprefix("<").removesuffix(">")
        else:
            envelope_to.append(value.strip())
    key = file.name.split(":", 1)[0]
    match = _KEY_TIME.match(key)
    if match:
        received_at = datetime.fromtimestamp(int(match.group(1)) + int(match.group(2)) / 1_000_000, tz=UTC)
    else:
        received_at = datetime.fromtimestamp(file.stat().st_mtime, tz=UTC)
    return CaughtMessage(
        key=key,
        path=file,
        received_at=received_at,
        envelope_from=envelope_from,
        envelope_to=tuple(envelope_to),
        subject=_header(headers, "subject"),
        from_=_header(headers, "from"),
        to=_header(headers, "to"),
        size=size,
        message_id=_header(headers, "message-id"),
    )


def _header(headers: email.message.Message, name: str) -> str:
    try:
        value = headers.get(name)
    except (ValueError, IndexError, TypeError):  # a malformed header the parser cannot decode
        raw = [v for k, v in headers.raw_items() if k.lower() == name]
        return raw[0].strip() if raw else ""
    return "" if value is None else str(value).strip()
