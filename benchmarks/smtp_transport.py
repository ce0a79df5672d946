"""Delivery benchmark: the SMTP sink, the transport against a plain smtplib loop, and DKIM signing.

Run: ``uv run python benchmarks/smtp_transport.py [--messages N] [--threads T] [--signatures S]``

The sink runs as its own process (``python -m zgoda.delivery.cli --port 0``), as it would beside a
worker, so client and server do not share a GIL. Every figure is measured in this run:

1. Sink: messages/s accepted from T plain ``smtplib`` clients (one connection per thread), with
   ``--discard`` and with a Maildir.
2. Transport, one connection: ``SmtpConnection`` prepare + complete (with and without PIPELINING)
   against the baseline ``smtplib.SMTP.sendmail`` loop on one connection.
3. Transport, T threads: ``SmtpPool`` against T threads each with its own ``smtplib`` connection.
4. DKIM: signatures/s with dkimpy's ``dkim.sign`` and with ``DkimSigner`` (same key, same message).
5. Campaign path: DKIM-sign then send through the pool, against the plain smtplib loop with no
   signing at all. Goal: at least 0.5x the baseline.
6. ``normalise_message`` on a clean message against smtplib's own helpers (regex line endings +
   ``_quote_periods``).
"""

from __future__ import annotations

import argparse
import email.policy
import re
import smtplib
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from email.message import EmailMessage
from pathlib import Path

import dkim as dkimpy

from zgoda.delivery.dkim import DkimSigner, generate_key
from zgoda.delivery.transport import SmtpConnection, SmtpPool, SmtpSettings, normalise_message, send_message

SENDER = "bounces@kawiarnia.example"
GOAL_RATIO = 0.5


def campaign_message(n: int = 0) -> bytes:
    """About 6 KB: text and HTML alternatives, quoted-printable Polish, RFC 8058 headers."""
    msg = EmailMessage(policy=email.policy.SMTP)
    msg["From"] = "Kawiarnia Zgoda <news@kawiarnia.example>"
    msg["To"] = f"Klient {n} <klient{n}@example.org>"
    msg["Subject"] = "Nowa karta jesienna: dynia, cynamon i kardamon"
    msg["Date"] = "Tue, 06 Jan 2026 09:00:00 +0100"
    msg["Message-ID"] = f"<c1.r{n}@kawiarnia.example>"
    msg["List-Unsubscribe"] = f"<https://zgoda.example/u/{n:08d}>, <mailto:unsub@zgoda.example?subject=u{n}>"
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg["List-Id"] = "Nowości <news.kawiarnia.example>"
    msg["Feedback-ID"] = "c1:demo:zgoda"
    text = "Dzień dobry!\n\nZapraszamy na kawę z cynamonem. Żółta dynia, gęsta śmietana.\n" * 25
    msg.set_content(text, cte="quoted-printable")
    msg.add_alternative(f"<html><body><p>{text}</p></body></html>", subtype="html", cte="quoted-printable")
    return msg.as_bytes()


@contextmanager
def sink_process(discard: bool, maildir: Path | None = None) -> Iterator[int]:
    command = [sys.executable, "-m", "zgoda.delivery.cli", "--port", "0"]
    command += ["--discard"] if discard else ["--maildir", str(maildir)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        match = re.search(r":(\d+), ", banner)
        if not match:
            raise RuntimeError(f"The sink did not start: {banner!r}")
        yield int(match.group(1))
    finally:
        process.terminate()
        process.wait(timeout=10)


def in_threads(threads: int, total: int, work: Callable[[int, int], None]) -> float:
    """Run ``work(thread_index, count)`` in ``threads`` threads sharing ``total``; seconds taken."""
    shares = [total // threads + (1 if i < total % threads else 0) for i in range(threads)]
    workers = [threading.Thread(target=work, args=(i, share)) for i, share in enumerate(shares)]
    start = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return time.perf_counter() - start


def smtplib_loop(port: int, messages: list[bytes]) -> Callable[[int, int], None]:
    def work(index: int, count: int) -> None:
        with smtplib.SMTP("127.0.0.1", port) as client:
            for i in range(count):
                client.sendmail(SENDER, [f"k{index}-{i}@example.org"], messages[i % len(messages)])

    return work


def pool_loop(
    pool: SmtpPool, messages: list[bytes], sign: Callable[[bytes], bytes] | None
) -> Callable[[int, int], None]:
    def work(index: int, count: int) -> None:
        for i in range(count):
            data = messages[i % len(messages)]
            if sign is not None:
                data = sign(data)
            with pool.connection() as conn:
                outcome = send_message(conn, SENDER, f"k{index}-{i}@example.org", data)
                assert outcome.accepted, outcome

    return work


def rate(count: int, seconds: float) -> str:
    return f"{count / seconds:8.0f}/s"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--signatures", type=int, default=300)
    args = parser.parse_args()
    n, t = args.messages, args.threads
    messages = [campaign_message(i) for i in range(50)]
    print(f"messages {n}, threads {t}, message size {len(messages[0])} bytes, Python {sys.version.split()[0]}")

    # 1. the sink
    with sink_process(discard=True) as port:
        seconds = in_threads(t, n, smtplib_loop(port, messages))
        print(f"sink --discard, smtplib x{t} threads:   {rate(n, seconds)}")
    with tempfile.TemporaryDirectory() as folder, sink_process(False, Path(folder) / "sink") as port:
        seconds = in_threads(t, n, smtplib_loop(port, messages))
        stored = len(list((Path(folder) / "sink" / "new").iterdir()))
        print(f"sink Maildir,   smtplib x{t} threads:   {rate(n, seconds)}  ({stored} files)")

    with sink_process(discard=True) as port:
        # 2. one connection
        base = in_threads(1, n, smtplib_loop(port, messages))
        print(f"baseline smtplib.sendmail, 1 conn:     {rate(n, base)}")
        for pipelining in (False, True):
            settings = SmtpSettings("127.0.0.1", port, pipelining=pipelining)
            with SmtpConnection(settings) as conn:
                start = time.perf_counter()
                for i in range(n):
                    assert send_message(conn, SENDER, f"k{i}@example.org", messages[i % len(messages)]).accepted
                seconds = time.perf_counter() - start
            label = "pipelined" if pipelining else "lockstep "
            print(f"SmtpConnection {label}, 1 conn:      {rate(n, seconds)}  ratio {base / seconds:.2f}")

        # 3. threads
        base_t = in_threads(t, n, smtplib_loop(port, messages))
        print(f"baseline smtplib x{t} threads:          {rate(n, base_t)}")
        with SmtpPool(SmtpSettings("127.0.0.1", port), size=t) as pool:
            seconds = in_threads(t, n, pool_loop(pool, messages, None))
        print(f"SmtpPool size {t}, {t} threads:          {rate(n, seconds)}  ratio {base_t / seconds:.2f}")

        # 4. DKIM
        key = generate_key()
        signer = DkimSigner("kawiarnia.example", "zgoda2026", key.private_key_pem)
        include = list(signer.signed_headers)
        s = args.signatures
        start = time.perf_counter()
        for i in range(s):
            signer.sign(messages[i % len(messages)])
        ours = time.perf_counter() - start
        few = max(s // 10, 10)
        start = time.perf_counter()
        for i in range(few):
            dkimpy.sign(
                messages[i % len(messages)],
                b"zgoda2026",
                b"kawiarnia.example",
                key.private_key_pem,
                canonicalize=(b"relaxed", b"relaxed"),
                include_headers=include,
            )
        theirs = time.perf_counter() - start
        print(f"DKIM dkimpy.sign (pure-Python RSA):    {rate(few, theirs)}")
        print(f"DKIM DkimSigner (cryptography RSA):    {rate(s, ours)}  ({(s / ours) / (few / theirs):.0f}x)")

        # 5. the campaign path: sign + send, against unsigned plain smtplib
        with SmtpPool(SmtpSettings("127.0.0.1", port), size=t) as pool:
            seconds = in_threads(t, n, pool_loop(pool, messages, signer.sign))
        ratio = base_t / seconds
        verdict = "meets" if ratio >= GOAL_RATIO else "MISSES"
        print(
            f"sign + SmtpPool, {t} threads:            {rate(n, seconds)}  ratio {ratio:.2f} "
            f"to unsigned smtplib x{t} ({verdict} the {GOAL_RATIO}x goal)"
        )

    # 6. normalising
    clean = messages[0]
    eol = re.compile(rb"\r\n|\r|\n")
    rounds = 20000
    start = time.perf_counter()
    for _ in range(rounds):
        smtplib._quote_periods(eol.sub(b"\r\n", clean))  # type: ignore[attr-defined]
    helpers = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(rounds):
        normalise_message(clean)
    mine = time.perf_counter() - start
    print(
        f"normalise a clean {len(clean)}-byte message: smtplib helpers {helpers / rounds * 1e6:.1f} µs, "
        f"normalise_message {mine / rounds * 1e6:.1f} µs"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
