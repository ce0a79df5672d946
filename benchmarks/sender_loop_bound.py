"""A bound, not the product: how fast one thread can drive K SMTP connections and the group commit.

Run: ``uv run python benchmarks/sender_loop_bound.py [--messages N] [--connections K] [--sign] [--pg-url URL]``

The sender (``zgoda.campaigns.sending``) runs K connection threads, a builder thread and a claiming thread
that hand messages and group commits to each other; ``send_campaign.py --phases`` shows each message
waiting for the interpreter lock at every step (docs/benchmarks.md, sending, fifth round). This script
measures the design proposed there, stripped to its skeleton: one thread, K non-blocking connections to
the real sink (``python -m zgoda.delivery.cli --discard``) on one selector, MAIL/RCPT/DATA pipelined, the
body written on 354, every message that reached its dot marked sent in one PostgreSQL UPDATE + COMMIT (a
group commit), and only then its final dot. With ``--sign`` each message is DKIM-signed on the same thread
first (``DkimSigner``, RSA-2048), the largest part of building one. No claims, no gate, no rendering, no
kernel holds (core/tcp_hold.py), no error handling: what is left is the cost of the skeleton itself.

Printed: messages/s and this process's CPU per message, then the smtplib baseline of send_campaign.py
(K threads, the same message, the same sink) and the ratio. A fresh table in a fresh database, dropped at
the end.
"""

from __future__ import annotations

import argparse
import selectors
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import psycopg
from pg_databases import create_pg_database, drop_pg_database
from send_campaign import DEFAULT_PG_URL, Sink, smtplib_baseline

from zgoda.delivery.dkim import DkimSigner, generate_key

BODY = b"".join(
    b"Linia %05d: tresc newslettera, tyle by wiadomosc miala okolo dziesieciu kilobajtow.\r\n" % i for i in range(120)
)
MESSAGE = b"From: Kawiarnia <news@kawiarnia.example>\r\nTo: <klient@example.com>\r\nSubject: Zima\r\n\r\n" + BODY


class Connection:
    """One SMTP session on a non-blocking socket: where its message is, and the replies read so far."""

    def __init__(self, port: int) -> None:
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with sock.makefile("rb") as replies:
            replies.readline()  # the greeting
            sock.sendall(b"EHLO bound.example\r\n")
            while replies.readline()[3:4] != b" ":
                pass
        sock.setblocking(False)
        self.sock = sock
        self.buffer = b""
        self.state = "idle"
        self.codes: list[int] = []
        self.send_id = 0
        self.data = b""

    def replies(self) -> list[int]:
        """The codes of the complete replies received so far (multi-line replies count once)."""
        codes = []
        while b"\r\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\r\n", 1)
            if line[3:4] == b" ":
                codes.append(int(line[:3]))
        return codes


def run(url: str, messages: int, connections: int, sign: bool) -> tuple[float, float, int]:
    """Seconds, CPU seconds and group commits for sending ``messages`` messages."""
    signer = None
    if sign:
        key = generate_key()
        signer = DkimSigner("kawiarnia.example", "bound", key.private_key_pem)
    database = psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"))
    with database.cursor() as cursor:
        cursor.execute("CREATE TABLE bound_sends (id serial PRIMARY KEY, status text NOT NULL)")
        cursor.execute("INSERT INTO bound_sends (status) SELECT 'sending' FROM generate_series(1, %s)", (messages,))
    database.commit()
    sink = Sink()
    try:
        pool = [Connection(sink.port) for _ in range(connections)]
        selector = selectors.DefaultSelector()
        for connection in pool:
            selector.register(connection.sock, selectors.EVENT_READ, connection)
        next_id, done, commits = 1, 0, 0
        prepared: list[Connection] = []

        def begin(connection: Connection) -> None:
            nonlocal next_id
            if next_id > messages:
                connection.state = "finished"
                return
            connection.send_id, next_id = next_id, next_id + 1
            connection.data = signer.sign(MESSAGE) if signer is not None else MESSAGE
            connection.sock.sendall(
                b"MAIL FROM:<bounces@kawiarnia.example>\r\nRCPT TO:<klient%d@example.com>\r\nDATA\r\n"
                % connection.send_id
            )
            connection.state, connection.codes = "envelope", []

        started, cpu = time.perf_counter(), time.process_time()
        for connection in pool:
            begin(connection)
        while done < messages:
            for key, _ in selector.select(timeout=5):
                connection = key.data
                chunk = connection.sock.recv(65536)
                if not chunk:
                    raise RuntimeError("the sink closed a connection")
                connection.buffer += chunk
                for code in connection.replies():
                    connection.codes.append(code)
                    if connection.state == "envelope" and len(connection.codes) == 3:
                        if connection.codes != [250, 250, 354]:
                            raise RuntimeError(f"the sink refused: {connection.codes}")
                        connection.sock.setblocking(True)
                        connection.sock.sendall(connection.data)
                        connection.sock.setblocking(False)
                        connection.state = "prepared"
                        prepared.append(connection)
                    elif connection.state == "dot":
                        if code != 250:
                            raise RuntimeError(f"the sink refused a message: {code}")
                        done += 1
                        begin(connection)
            if prepared:  # the group commit, then the final dots of the messages it marked sent
                group, prepared = prepared, []
                with database.cursor() as cursor:
                    cursor.execute(
                        "UPDATE bound_sends SET status = 'sent' WHERE id = ANY(%s) AND status = 'sending'",
                        ([connection.send_id for connection in group],),
                        prepare=True,
                    )
                database.commit()
                commits += 1
                for connection in group:
                    connection.sock.send(b".\r\n")
                    connection.state, connection.codes = "dot", []
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        with database.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM bound_sends WHERE status = 'sent'")
            row = cursor.fetchone()
        if row is None or row[0] != messages:
            raise RuntimeError(f"{row} rows marked sent, not {messages}")
        return seconds, cpu, commits
    finally:
        sink.stop()
        database.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--sign", action="store_true", help="DKIM-sign every message on the sending thread")
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL, help="a PostgreSQL server where CREATE DATABASE works")
    args = parser.parse_args()
    name, url = create_pg_database(args.pg_url)
    try:
        seconds, cpu, commits = run(url, args.messages, args.connections, args.sign)
    finally:
        drop_pg_database(args.pg_url, name)
    rate = args.messages / seconds
    print(
        f"one thread, {args.connections} connections{', signing' if args.sign else ''}: {rate:,.0f} messages/s, "
        f"{1000 * cpu / args.messages:.3f} ms of CPU a message, {args.messages / commits:.2f} messages a group commit"
    )
    sink = Sink()
    try:
        recipients = [f"klient{i}@example.com" for i in range(args.messages)]
        baseline = args.messages / smtplib_baseline(sink.port, MESSAGE, recipients, args.connections)
    finally:
        sink.stop()
    print(f"baseline smtplib x{args.connections}: {baseline:,.0f} messages/s; ratio {rate / baseline:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
