"""SES webhook ingest benchmark: signed SNS notifications posted to a running server, against its ``/health``.

Run: ``uv run python benchmarks/webhook_ingest.py [--events N] [--concurrency C] [--workers W] [--profile]``

What is measured: ``POST /hooks/ses`` (zgoda.feedback.hooks) on a real uvicorn server on loopback, with
PostgreSQL behind it: per request the SNS envelope is parsed and verified (topic, age, certificate URL,
RSA signature over the string to sign, SignatureVersion 2 = SHA256withRSA, 2048-bit key as Amazon's),
the SES notification mapped to events, and each event applied (``zgoda.feedback.service.apply``: the send
found by its ref, the contact checked, the ``send_events`` row stored under its dedupe key in a savepoint,
then the rules: a hard bounce or a complaint suppresses the address, a complaint also withdraws the
consent in the ledger, a soft bounce counts the contact's recent soft bounces).

Setup (not timed): a fresh PostgreSQL database (``CREATE DATABASE zgoda_bench_hooks_<random>`` on
``--pg-url``, dropped at the end, also on failure or Ctrl-C), migrated with ``zgoda.core.migrate.upgrade``
(what ``zgoda db upgrade`` runs); a workspace with its controller identity, a list, a template and one
campaign through the services; one contact per send, bulk-inserted, each with an ``email_marketing`` grant
in the consent ledger; one SENT ``campaign_sends`` row with a unique ref per contact; then ``ANALYZE``.

The load: ``--events`` (default 5,000) SNS Notification envelopes, one SES notification and one recipient
each (Zgoda sends one message per contact), each with its own SNS MessageId, all signed before any timing
with a self-signed certificate standing in for Amazon's: 90% deliveries, 4% hard bounces (Permanent,
5.1.1), 3% soft bounces (Transient MailboxFull) and 3% complaints (abuse) about sends that were delivered.
Each carries its send's ref as SES reports original headers (``mail.headers`` X-Zgoda-Ref and Message-ID,
``mail.commonHeaders.messageId``). A further ``--warmup`` envelopes (default 200) go first, untimed.

The server: this file run with ``--serve`` in a child process (its own process group, stopped at the end).
The SNS certificate cannot be fetched here (no network, and the URL must be an Amazon SNS host), so the
launcher puts the self-signed one into ``zgoda.feedback.hooks._certificates`` under the SigningCertURL
the envelopes name, exactly as if it had been fetched before, then serves ``zgoda.web.app.create_app``
with uvicorn (asyncio loop and h11, as installed; access log off; ``--workers`` processes, default 1).
Nothing in the production code is bypassed: every signature is verified.

The client: ``--concurrency`` (default 16) keep-alive HTTP/1.1 connections from one asyncio loop in this
process, with pre-built request bytes (``--client raw``, the default: the cheapest client, so that on a
small machine it takes as little CPU from the server as possible) or ``httpx.AsyncClient`` (``--client
httpx``). Latency is per request, from writing it to reading the whole answer. CPU seconds of the server
processes, of the PostgreSQL backends of the benchmark database and of the client are read from /proc
before and after each step and shown per request: they tell what limits the figures.

Baseline, same run, same server, client and concurrency: ``GET /health`` (a request that checks out a
database connection and runs ``SELECT 1`` in a transaction), the same number of requests, once before
and once after the webhooks; the faster counts. Goal: webhook events/s at least **0.3x** the baseline's
requests/s.

Verified afterwards (exit status 1 if not): every post answered 200 ``{"recorded": 1}``; ``send_events``
holds exactly one row per distinct event posted (none lost), by kind as planned; suppressions and
withdrawals as the rules say; then a random 5% of the envelopes are posted again and must answer
``{"duplicate": 1}`` with the row count unchanged (none duplicated).

``--profile`` (one worker only) runs cProfile in the server's main thread, which is where the async
``ses_webhook`` handler (verification and ``apply``) runs, during the webhook step only (switched on and
off with SIGUSR1/SIGUSR2), and prints the top functions.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import cProfile
import io
import json
import os
import platform
import pstats
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pg_databases import create_pg_database, drop_pg_database  # beside this script

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
CERT_URL = "https://sns.eu-central-1.amazonaws.com/SimpleNotificationService-zgodabench.pem"
TOPIC = "arn:aws:sns:eu-central-1:123456789012:zgoda-ses-feedback"
GOAL_RATIO = 0.3
SEED = 20260702
CERT_ENV = "ZGODA_BENCH_SNS_CERT"
FROM_DOMAIN = "kawiarnia.example.pl"
CONTROLLER = {
    "legal_name": "Kawiarnia Pod Zegarem sp. z o.o.",
    "postal_address": {"street": "ul. Długa 5", "postal_code": "00-238", "city": "Warszawa", "country": "PL"},
    "email": "biuro@kawiarnia.example.pl",
}
HTML = "<html><body><h1>Cześć {{ contact.first_name | default('') }}!</h1><p>Nowa karta zimowa.</p></body></html>"
# The rest of each mix: deliveries. "light" leaves out the events whose rules append to a hash chain.
MIXES = {
    "full": {"hard_bounce": 0.04, "soft_bounce": 0.03, "complaint": 0.03},
    "light": {"hard_bounce": 0.0, "soft_bounce": 0.03, "complaint": 0.0},
}
STUCK_SQL = """SELECT pid, state, coalesce(wait_event_type || ':' || wait_event, ''), left(query, 70)
FROM pg_stat_activity WHERE datname = :name AND pid <> pg_backend_pid() AND state <> 'idle' ORDER BY pid"""


class Stuck(Exception):
    """The server answered nothing within the timeout."""


# --- the server (run as a child: ``webhook_ingest.py --serve``) ----------------------------------------------


def bench_app() -> Any:
    """``create_app()`` with the benchmark's SNS certificate already in the webhook's certificate cache."""
    from zgoda.feedback.hooks import _certificates
    from zgoda.web.app import create_app

    pem = Path(os.environ[CERT_ENV]).read_bytes()
    _certificates.get(CERT_URL, lambda url: pem)  # as if fetched from the Amazon host earlier
    return create_app()


def serve(port: int, workers: int, profile_to: str | None) -> None:
    import uvicorn

    options: dict[str, Any] = {"host": "127.0.0.1", "port": port, "log_level": "warning", "access_log": False}
    if workers > 1:
        uvicorn.run("benchmarks.webhook_ingest:bench_app", factory=True, workers=workers, app_dir=str(ROOT), **options)
        return
    application = bench_app()
    if profile_to:
        profiler = cProfile.Profile()
        signal.signal(signal.SIGUSR1, lambda *_: profiler.enable())

        def stop(*_: object) -> None:
            profiler.disable()
            profiler.dump_stats(profile_to)

        signal.signal(signal.SIGUSR2, stop)
    uvicorn.run(application, **options)


# --- envelopes ----------------------------------------------------------------------------------------------


def make_signer() -> tuple[Any, bytes]:
    """A 2048-bit RSA key and a self-signed certificate for it, valid from yesterday to tomorrow."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return key, certificate.public_bytes(serialization.Encoding.PEM)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass(frozen=True)
class Planned:
    kind: str  # delivery, hard_bounce, soft_bounce, complaint
    send: int  # index into the seeded sends


def plan_events(total: int, rng: random.Random, shares: dict[str, float]) -> tuple[list[Planned], int]:
    """``total`` events in random order, and the number of sends (one per contact) they need."""
    complaints = round(total * shares["complaint"])
    hard = round(total * shares["hard_bounce"])
    soft = round(total * shares["soft_bounce"])
    sends = total - complaints
    kinds = ["hard_bounce"] * hard + ["soft_bounce"] * soft
    kinds += ["delivery"] * (sends - len(kinds))
    rng.shuffle(kinds)
    events = [Planned(kind, index) for index, kind in enumerate(kinds)]
    delivered = [index for index, kind in enumerate(kinds) if kind == "delivery"]
    events += [Planned("complaint", index) for index in rng.sample(delivered, complaints)]
    rng.shuffle(events)
    return events, sends


def ses_notification(planned: Planned, ref: str, email: str, now: datetime) -> dict[str, Any]:
    """An SES notification as "Amazon SNS notification contents for Amazon SES" shows, original headers on."""
    message_id = f"<{ref}@mail.{FROM_DOMAIN}>"
    mail = {
        "timestamp": _iso(now - timedelta(minutes=2)),
        "source": f"news@{FROM_DOMAIN}",
        "sourceArn": f"arn:aws:ses:eu-central-1:123456789012:identity/{FROM_DOMAIN}",
        "sourceIp": "192.0.2.10",
        "sendingAccountId": "123456789012",
        "messageId": f"0102018e{planned.send:08x}-8c4f5a1b-6a1e-4d3c-9f0e-1b2c3d4e5f60-000000",
        "destination": [email],
        "headersTruncated": False,
        "headers": [
            {"name": "From", "value": f"Kawiarnia <news@{FROM_DOMAIN}>"},
            {"name": "To", "value": email},
            {"name": "Message-ID", "value": message_id},
            {"name": "X-Zgoda-Ref", "value": ref},
            {"name": "Subject", "value": "Zima w Kawiarni"},
            {"name": "MIME-Version", "value": "1.0"},
        ],
        "commonHeaders": {
            "from": [f"Kawiarnia <news@{FROM_DOMAIN}>"],
            "to": [email],
            "messageId": message_id,
            "subject": "Zima w Kawiarni",
        },
    }
    when = _iso(now - timedelta(seconds=30))
    if planned.kind == "delivery":
        return {
            "notificationType": "Delivery",
            "mail": mail,
            "delivery": {
                "timestamp": when,
                "processingTimeMillis": 546,
                "recipients": [email],
                "smtpResponse": "250 2.0.0 OK 1709380685 x4si123456wrb.12 - gsmtp",
                "reportingMTA": "a8-70.smtp-out.amazonses.com",
                "remoteMtaIp": "203.0.113.5",
            },
        }
    if planned.kind in ("hard_bounce", "soft_bounce"):
        hard = planned.kind == "hard_bounce"
        status = "5.1.1" if hard else "4.2.2"
        return {
            "notificationType": "Bounce",
            "mail": mail,
            "bounce": {
                "bounceType": "Permanent" if hard else "Transient",
                "bounceSubType": "General" if hard else "MailboxFull",
                "bouncedRecipients": [
                    {
                        "emailAddress": email,
                        "action": "failed",
                        "status": status,
                        "diagnosticCode": f"smtp; {'550' if hard else '452'} {status} <{email}>... "
                        + ("User unknown" if hard else "Mailbox full"),
                    }
                ],
                "timestamp": when,
                "feedbackId": f"0102018e{planned.send:08x}-bounce-000000",
                "reportingMTA": "dns; a8-70.smtp-out.amazonses.com",
                "remoteMtaIp": "198.51.100.7",
            },
        }
    return {
        "notificationType": "Complaint",
        "mail": mail,
        "complaint": {
            "userAgent": "ExampleCorp Feedback Loop (V0.01)",
            "complainedRecipients": [{"emailAddress": email}],
            "complaintFeedbackType": "abuse",
            "arrivalDate": when,
            "timestamp": when,
            "feedbackId": f"0102018e{planned.send:08x}-complaint-000000",
        },
    }


def sns_body(notification: dict[str, Any], message_id: str, key: Any, now: datetime) -> bytes:
    """A signed SNS HTTP(S) delivery body (SignatureVersion 2), as "HTTP/HTTPS notification JSON format"."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    from zgoda.feedback.providers.sns import string_to_sign

    envelope: dict[str, Any] = {
        "Type": "Notification",
        "MessageId": message_id,
        "TopicArn": TOPIC,
        "Message": json.dumps(notification),
        "Timestamp": _iso(now),
        "SignatureVersion": "2",
        "SigningCertURL": CERT_URL,
        "UnsubscribeURL": f"https://sns.eu-central-1.amazonaws.com/?Action=Unsubscribe&SubscriptionArn={TOPIC}:c9135db0",
    }
    signature = key.sign(string_to_sign(envelope), padding.PKCS1v15(), hashes.SHA256())
    envelope["Signature"] = base64.b64encode(signature).decode()
    return json.dumps(envelope).encode()


def http_request(method: str, path: str, port: int, body: bytes = b"", headers: dict[str, str] | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "User-Agent: zgoda-bench"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@dataclass
class Envelope:
    message_id: str
    kind: str
    body: bytes
    headers: dict[str, str]


# --- the database ---------------------------------------------------------------------------------------------


@dataclass
class Seeded:
    workspace_id: int
    refs: list[str]
    emails: list[str]


def seed(url: str, sends: int) -> Seeded:
    """Workspace, controller, list, template and campaign (services); contacts, grants and SENT sends (bulk)."""
    from sqlalchemy import insert, select, text

    from zgoda.accounts import service as accounts
    from zgoda.audiences import service as audiences
    from zgoda.campaigns import service as campaigns
    from zgoda.campaigns.links import new_send_ref
    from zgoda.campaigns.models import Send, SendStatus
    from zgoda.consent import ledger, purposes
    from zgoda.consent.models import EventType, LegalBasis, Method
    from zgoda.contacts.models import Contact
    from zgoda.core.db import Database
    from zgoda.core.keys import address_hasher
    from zgoda.core.tenancy import Actor, bind_scope

    database = Database.from_url(url)
    try:
        with database.transaction() as session:
            bind_scope(session, workspace_id=None, actor=Actor.system("benchmark"))
            workspace = accounts.create_workspace(session, slug="bench-hooks", name="Kawiarnia Pod Zegarem")
            workspace_id = workspace.id
            bind_scope(session, workspace_id=workspace_id, actor=Actor.system("benchmark"))
            accounts.update_workspace_settings(session, workspace=workspace, controller=CONTROLLER)
            list_id = audiences.create_list(session, name="Newsletter").id
            template = campaigns.create_template(session, name="Zima", subject="Zima", html=HTML)
            campaign_id = campaigns.create_campaign(
                session,
                name="Karta zimowa",
                purpose_key="email_marketing",
                template_id=template.id,
                from_name="Kawiarnia",
                from_email=f"news@{FROM_DOMAIN}",
                list_id=list_id,
                language="pl",
            ).id
            hash_address = address_hasher(session)
        now = datetime.now(UTC)
        emails = [f"klient{n}@example.pl" for n in range(sends)]
        contact_rows: list[dict[str, Any]] = [
            {
                "workspace_id": workspace_id,
                "ref": secrets.token_hex(16),
                "email": email,
                "email_hash": hash_address(email),
                "phone": None,
                "first_name": f"Anna{n}",
                "last_name": "Kowalska",
                "attributes": {},
                "source_id": None,
                "created_at": now - timedelta(days=3),
                "updated_at": now - timedelta(days=3),
            }
            for n, email in enumerate(emails)
        ]
        with database.engine.begin() as connection:
            connection.execute(insert(Contact), contact_rows)
            ids = list(
                connection.scalars(select(Contact.id).where(Contact.workspace_id == workspace_id).order_by(Contact.id))
            )
        granted_at = now - timedelta(days=2)
        for start in range(0, len(ids), 1000):
            with database.transaction() as session:
                bind_scope(session, workspace_id=workspace_id, actor=Actor.system("benchmark"))
                purpose = purposes.purpose_by_key(session, "email_marketing")
                people = session.scalars(
                    select(Contact).where(Contact.id.in_(ids[start : start + 1000])).order_by(Contact.id)
                ).all()
                ledger.record_events(
                    session,
                    [
                        ledger.NewEvent(
                            contact=person,
                            purpose=purpose,
                            event_type=EventType.GRANT.value,
                            method=Method.API.value,
                            legal_basis=LegalBasis.CONSENT.value,
                            occurred_at=granted_at,
                        )
                        for person in people
                    ],
                )
        refs = [new_send_ref() for _ in ids]
        sent_at = now - timedelta(minutes=2)
        send_rows = [
            {
                "workspace_id": workspace_id,
                "campaign_id": campaign_id,
                "contact_id": contact_id,
                "list_id": list_id,
                "ref": ref,
                "status": SendStatus.SENT.value,
                "attempts": 1,
                "smtp_reply": "250 Ok",
                "decided_at": sent_at,
                "sent_at": sent_at,
                "created_at": sent_at,
            }
            for contact_id, ref in zip(ids, refs, strict=True)
        ]
        with database.engine.begin() as connection:
            connection.execute(insert(Send), send_rows)
        with database.engine.begin() as connection:
            connection.execute(text("ANALYZE"))  # as autovacuum would within a minute of such a load
        return Seeded(workspace_id, refs, emails)
    finally:
        database.engine.dispose()


@dataclass
class Stored:
    events: Counter[str]
    suppressions: int
    withdrawals: int

    @property
    def total(self) -> int:
        return sum(self.events.values())


def stored(url: str) -> Stored:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                text("SELECT kind, coalesce(bounce_class, ''), count(*) FROM send_events GROUP BY 1, 2")
            ).all()
            suppressions = connection.scalar(text("SELECT count(*) FROM suppressions"))
            withdrawals = connection.scalar(text("SELECT count(*) FROM consent_events WHERE event_type = 'withdraw'"))
    finally:
        engine.dispose()
    kinds = Counter({_kind_name(kind, bounce_class): count for kind, bounce_class, count in rows})
    return Stored(kinds, int(suppressions or 0), int(withdrawals or 0))


def _kind_name(kind: str, bounce_class: str) -> str:
    return f"{bounce_class}_bounce" if kind == "bounce" else kind


def stuck_sessions(url: str, name: str) -> list[Any]:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return list(connection.execute(text(STUCK_SQL), {"name": name}).all())
    finally:
        engine.dispose()


def backend_pids(url: str, name: str) -> list[int]:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return list(
                connection.scalars(
                    text("SELECT pid FROM pg_stat_activity WHERE datname = :name AND pid <> pg_backend_pid()"),
                    {"name": name},
                )
            )
    finally:
        engine.dispose()


# --- CPU accounting from /proc ---------------------------------------------------------------------------------

TICKS = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rpartition(")")[2].split()


def process_tree(root: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields:
                parents[int(entry.name)] = int(fields[1])
    tree, frontier = [root], [root]
    while frontier:
        frontier = [pid for pid, parent in parents.items() if parent in frontier]
        tree += frontier
    return tree


def cpu_of(pids: list[int]) -> dict[int, float]:
    found = {}
    for pid in pids:
        fields = _stat(pid)
        if fields:
            found[pid] = (int(fields[11]) + int(fields[12])) / TICKS
    return found


def cpu_spent(before: dict[int, float], after: dict[int, float]) -> float:
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())


# --- the client -------------------------------------------------------------------------------------------------


@dataclass
class Step:
    name: str
    requests: int
    seconds: float
    latencies: list[float]
    status_list: list[int]
    bodies: list[bytes]
    server_cpu: float = 0.0
    postgres_cpu: float = 0.0
    client_cpu: float = 0.0

    @property
    def statuses(self) -> Counter[int]:
        return Counter(self.status_list)

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    def percentile(self, share: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    raise RuntimeError(f"an answer without Content-Length: {head[:200]!r}")


async def _raw_drive(port: int, requests: list[bytes], concurrency: int, results: list[Any], timeout: float) -> float:
    connections = [await asyncio.open_connection("127.0.0.1", port) for _ in range(concurrency)]
    indexes: Iterator[int] = iter(range(len(requests)))

    async def exchange(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
    ) -> tuple[bytes, bytes]:
        writer.write(request)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        return head, await reader.readexactly(_content_length(head))

    async def worker(slot: int) -> None:
        reader, writer = connections[slot]
        for index in indexes:
            started = time.perf_counter()
            try:
                head, body = await asyncio.wait_for(exchange(reader, writer, requests[index]), timeout)
            except TimeoutError:
                raise Stuck(f"no answer within {timeout:.0f} s") from None
            results[index] = (int(head[9:12]), time.perf_counter() - started, body)
            if b"\r\nconnection: close" in head.lower():  # uvicorn closes after a 500
                writer.close()
                reader, writer = connections[slot] = await asyncio.open_connection("127.0.0.1", port)

    started = time.perf_counter()
    try:
        await asyncio.gather(*(worker(slot) for slot in range(concurrency)))
    finally:
        seconds = time.perf_counter() - started
        for _, writer in connections:
            writer.close()
    return seconds


async def _httpx_drive(port: int, requests: list[Any], concurrency: int, results: list[Any], timeout: float) -> float:
    import httpx

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    base = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=timeout) as client:
        await asyncio.gather(*(client.get("/health") for _ in range(concurrency)))  # open the connections
        indexes: Iterator[int] = iter(range(len(requests)))

        async def worker() -> None:
            for index in indexes:
                method, path, body, headers = requests[index]
                started = time.perf_counter()
                try:
                    response = await client.request(method, path, content=body or None, headers=headers)
                except httpx.TimeoutException:
                    raise Stuck(f"no answer within {timeout:.0f} s") from None
                results[index] = (response.status_code, time.perf_counter() - started, response.content)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started


class Load:
    """Drives requests at a server with a fixed number of keep-alive connections."""

    def __init__(self, args: argparse.Namespace, port: int, server_pid: int, pg_url: str, db_name: str) -> None:
        self.kind, self.port, self.concurrency, self.timeout = args.client, port, args.concurrency, args.timeout
        self.server_pid, self.pg_url, self.db_name = server_pid, pg_url, db_name

    def prepare(self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> Any:
        if self.kind == "raw":
            return http_request(method, path, self.port, body, headers)
        return (method, path, body, headers or {})

    def run(self, name: str, requests: list[Any]) -> Step:
        results: list[Any] = [None] * len(requests)
        server = process_tree(self.server_pid)
        postgres = backend_pids(self.pg_url, self.db_name)
        server_before, postgres_before = cpu_of(server), cpu_of(postgres)
        client_before = time.process_time()
        drive = _raw_drive if self.kind == "raw" else _httpx_drive
        seconds = asyncio.run(drive(self.port, requests, self.concurrency, results, self.timeout))
        client_cpu = time.process_time() - client_before
        server_after = cpu_of(server)
        postgres_after = cpu_of(sorted(set(postgres) | set(backend_pids(self.pg_url, self.db_name))))
        return Step(
            name=name,
            requests=len(requests),
            seconds=seconds,
            latencies=[result[1] for result in results],
            status_list=[result[0] for result in results],
            bodies=[result[2] for result in results],
            server_cpu=cpu_spent(server_before, server_after),
            postgres_cpu=cpu_spent(postgres_before, postgres_after),
            client_cpu=client_cpu,
        )


# --- the run ----------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_server(args: argparse.Namespace, env: dict[str, str], port: int, log: Path, profile_to: Path | None) -> Any:
    command = [sys.executable, str(Path(__file__).resolve()), "--serve", "--port", str(port)]
    command += ["--workers", str(args.workers)]
    if profile_to:
        command += ["--profile-to", str(profile_to)]
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, env=env, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    import httpx

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited ({process.returncode}):\n{log.read_text()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                if args.workers > 1:
                    time.sleep(2)  # the other workers finish starting
                return process
        time.sleep(0.2)
    raise RuntimeError(f"the server did not answer /health within 60 s:\n{log.read_text()[-3000:]}")


def stop_server(process: Any) -> None:
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGINT)  # uvicorn's graceful shutdown
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)


def line(step: Step, baseline: Step | None = None) -> str:
    per = 1000 / step.requests
    note = f"  {step.rate / baseline.rate:5.2f}x" if baseline else ""
    return (
        f"{step.name:<28} {step.requests:>7,} {step.seconds:>7.2f} {step.rate:>9,.0f} "
        f"{step.percentile(0.5) * 1000:>7.1f} {step.percentile(0.99) * 1000:>7.1f} "
        f"{step.server_cpu * per:>7.2f} {step.postgres_cpu * per:>7.2f} {step.client_cpu * per:>7.2f}{note}"
    )


def run(args: argparse.Namespace) -> int:
    rng = random.Random(args.seed)
    total = args.events + args.warmup
    planned, sends = plan_events(total, rng, MIXES[args.mix])
    temp = Path(tempfile.mkdtemp(prefix="zgoda-bench-hooks-"))
    db_name: str | None = None
    url = ""
    server = None
    ok = True
    try:
        started = time.perf_counter()
        db_name, url = create_pg_database(args.pg_url, prefix="zgoda_bench_hooks_")
        from zgoda.core.migrate import upgrade

        upgrade(url)
        seeded = seed(url, sends)
        seconds = time.perf_counter() - started
        print(f"setup: database {db_name}, {sends:,} contacts with consent and SENT sends, {seconds:.1f} s")

        started = time.perf_counter()
        key, pem = make_signer()
        cert_file = temp / "sns.pem"
        cert_file.write_bytes(pem)
        now = datetime.now(UTC)
        envelopes = []
        for event in planned:
            message_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            notification = ses_notification(event, seeded.refs[event.send], seeded.emails[event.send], now)
            headers = {
                "Content-Type": "text/plain; charset=UTF-8",
                "x-amz-sns-message-type": "Notification",
                "x-amz-sns-message-id": message_id,
                "x-amz-sns-topic-arn": TOPIC,
                "x-amz-sns-subscription-arn": f"{TOPIC}:c9135db0-26c4-47ec-8998-413945fb5a96",
            }
            envelopes.append(Envelope(message_id, event.kind, sns_body(notification, message_id, key, now), headers))
        size = sum(len(envelope.body) for envelope in envelopes) / len(envelopes)
        seconds = time.perf_counter() - started
        print(f"signed {len(envelopes):,} SNS envelopes ({size:,.0f} bytes each on average) in {seconds:.1f} s")

        port = free_port()
        env = {
            **os.environ,
            "ZGODA_DATABASE_URL": url,
            "ZGODA_SES_TOPIC_ARNS": json.dumps([TOPIC]),
            "ZGODA_SECRET_KEY": secrets.token_urlsafe(32),
            "ZGODA_DATA_DIR": str(temp / "data"),
            "ZGODA_BASE_URL": f"http://127.0.0.1:{port}",
            CERT_ENV: str(cert_file),
        }
        profile_to = temp / "server.prof" if args.profile else None
        server = start_server(args, env, port, temp / "server.log", profile_to)
        load = Load(args, port, server.pid, url, db_name)

        health = [load.prepare("GET", "/health") for _ in range(args.events)]
        posts = [load.prepare("POST", "/hooks/ses", e.body, e.headers) for e in envelopes]
        warm_health = load.run("warm-up /health", health[: args.warmup])
        warm_hooks = load.run("warm-up /hooks/ses", posts[: args.warmup])
        steps = [load.run("GET /health (before)", health)]
        if profile_to:
            os.kill(server.pid, signal.SIGUSR1)
        hooks = load.run("POST /hooks/ses", posts[args.warmup :])
        if profile_to:
            os.kill(server.pid, signal.SIGUSR2)
        steps.append(load.run("GET /health (after)", health))
        baseline = min(steps, key=lambda step: step.seconds)

        # --- checks
        after_posts = stored(url)
        outcomes = _outcomes(warm_hooks) + _outcomes(hooks)
        expected = Counter(e.kind for e in envelopes)
        distinct = len({e.message_id for e in envelopes})
        lost_ok = (
            after_posts.total == distinct
            and after_posts.events == expected
            and outcomes == Counter({"recorded": distinct})
        )
        sample = sorted(rng.sample(range(len(envelopes)), max(1, round(len(envelopes) * args.repost_share))))
        repost = load.run("re-post sample", [posts[index] for index in sample])
        after_repost = stored(url)
        dup_ok = after_repost.total == after_posts.total and _outcomes(repost) == Counter({"duplicate": len(sample)})
        rules_expected = (expected["hard_bounce"] + expected["complaint"], expected["complaint"])
        rules_ok = (after_repost.suppressions, after_repost.withdrawals) == rules_expected
        unhealthy = [s.name for s in [warm_health, *steps] if set(s.statuses) != {200}]

        # --- report
        cpus = len(os.sched_getaffinity(0))
        print()
        print(
            f"Python {platform.python_version()}, {cpus} CPUs, load average {os.getloadavg()[0]:.1f}; uvicorn "
            f"{args.workers} worker(s), client {args.client}, concurrency {args.concurrency}; "
            f"{args.events:,} timed requests per step after {args.warmup:,} warm-up"
        )
        header = (
            f"{'step':<28} {'requests':>7} {'seconds':>7} {'per s':>9} {'p50 ms':>7} {'p99 ms':>7} "
            f"{'srv ms':>7} {'pg ms':>7} {'cli ms':>7}"
        )
        print(header)
        print("-" * (len(header) + 8))
        for step in steps:
            print(line(step))
        print(line(hooks, baseline) + " of the faster /health")
        print(line(repost))
        print("(srv/pg/cli ms: CPU milliseconds per request of the server processes, the database's PostgreSQL")
        print(" backends and this client; on this machine 2 CPUs give 2 ms of CPU per ms of wall time)")
        ratio = hooks.rate / baseline.rate
        verdict = "met" if ratio >= GOAL_RATIO else "NOT met"
        print(
            f"ratio: {hooks.rate:,.0f} events/s / {baseline.rate:,.0f} health requests/s = {ratio:.2f}x "
            f"(goal >= {GOAL_RATIO}x: {verdict})"
        )
        print()
        print(f"events posted (distinct, incl. warm-up): {distinct:,}  by kind: {dict(sorted(expected.items()))}")
        print(
            f"check none lost: send_events rows {after_posts.total:,}, "
            f"by kind {dict(sorted(after_posts.events.items()))}, answers {dict(outcomes)}: "
            f"{'ok' if lost_ok else 'FAILED'}"
        )
        print(
            f"check none duplicated: re-posted {len(sample):,} (5%), answers {dict(_outcomes(repost))}, rows "
            f"{after_posts.total:,} -> {after_repost.total:,}: {'ok' if dup_ok else 'FAILED'}"
        )
        print(
            f"check rules: suppressions {after_repost.suppressions:,} (expected {rules_expected[0]:,}), "
            f"withdrawals {after_repost.withdrawals:,} (expected {rules_expected[1]:,}): "
            f"{'ok' if rules_ok else 'FAILED'}"
        )
        if unhealthy:
            print(f"/health did not always answer 200 in: {', '.join(unhealthy)}")
        ok = lost_ok and dup_ok and rules_ok and not unhealthy

        if profile_to:
            stop_server(server)
            server = None
            if profile_to.exists():
                out = io.StringIO()
                stats = pstats.Stats(str(profile_to), stream=out)
                stats.sort_stats("cumulative").print_stats(30)
                stats.sort_stats("tottime").print_stats(20)
                print(out.getvalue())
    except Stuck as error:
        ok = False
        print(f"\nTHE SERVER IS STUCK: {error} (concurrency {args.concurrency}, mix {args.mix}).")
        print("Its database sessions now (pid, state, waiting for, query):")
        for row in stuck_sessions(url, db_name or ""):
            print("  " + " | ".join(str(value) for value in row))
        print("No figures: see 'What limits the figures' in docs/benchmarks.md. The server is killed.")
    except Exception:
        ok = False
        if (temp / "server.log").exists():
            print("server log (tail):\n" + (temp / "server.log").read_text()[-3000:], file=sys.stderr)
        raise
    finally:
        if server is not None:
            stop_server(server)
        if db_name is not None:
            drop_pg_database(args.pg_url, db_name)
        shutil.rmtree(temp, ignore_errors=True)
    return 0 if ok else 1


def _outcomes(step: Step) -> Counter[str]:
    outcomes: Counter[str] = Counter()
    for status, body in zip(step.status_list, step.bodies, strict=True):
        if status != 200:
            outcomes[f"HTTP {status}"] += 1
            continue
        for outcome, count in json.loads(body).items():
            outcomes[outcome] += count
    return outcomes


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=5000, help="timed webhook posts, one event each (default 5,000)")
    parser.add_argument("--warmup", type=int, default=200, help="untimed posts first (default 200)")
    parser.add_argument("--concurrency", type=int, default=16, help="client connections (default 16)")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes (default 1)")
    parser.add_argument("--client", choices=["raw", "httpx"], default="raw", help="raw asyncio HTTP/1.1 or httpx")
    parser.add_argument("--mix", choices=sorted(MIXES), default="full", help="full (default) or light; see above")
    parser.add_argument("--timeout", type=float, default=60, help="seconds without an answer: stuck (60)")
    parser.add_argument("--repost-share", type=float, default=0.05, help="share re-posted to check dedupe (0.05)")
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL, help="a PostgreSQL server where CREATE DATABASE works")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--profile", action="store_true", help="cProfile the server's main thread (1 worker)")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--profile-to", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.port, args.workers, args.profile_to)
        return 0
    if args.profile and args.workers != 1:
        parser.error("--profile needs --workers 1")
    signal.signal(signal.SIGTERM, _interrupt)  # cleaned up as on Ctrl-C
    try:
        return run(args)
    except KeyboardInterrupt:
        print("interrupted; server stopped and database dropped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
