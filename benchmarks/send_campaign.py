"""Campaign sending benchmark: one campaign to N consenting contacts, end to end, against a plain smtplib loop.

Run: ``uv run python benchmarks/send_campaign.py [--contacts N] [--connections K] [--workers 1,2]
[--database sqlite|postgresql|both] [--repeat R]``

Setup (not timed): a fresh database (a SQLite file in a temporary directory, or ``CREATE DATABASE`` a
unique name on ``--pg-url``, dropped at the end), migrated with ``zgoda.core.migrate.upgrade``. A
workspace with its controller identity (the footer needs it), a source, N contacts (bulk-inserted
with Core, ``COPY`` on PostgreSQL, each with a first name and the keyed address hash), a grant of
``email_marketing`` for every contact recorded through ``consent.ledger.record_events`` (the real
ledger: hash chain, evidence, materialised state; so the gate finds real state rows and every send
records a real consent event), one list holding everyone, a template with a merge field
(``contact.first_name``) and a ``<style>`` block (inlined by the renderer), a sending domain with a
2048-bit DKIM key (every message is signed), and one campaign per configuration measured.

The SMTP sink runs in its own process (``python -m zgoda.delivery.cli --port 0 --discard``) on
loopback, counting messages and storing nothing. Configurations:

- ``inline`` (SQLite and PostgreSQL, for reference): ``sending.prepare`` + ``sending.run`` in this
  process, as ``zgoda campaign send --wait`` does without a broker;
- ``workers=W`` (PostgreSQL, each W of ``--workers``): W ``zgoda worker --concurrency 1`` processes over
  RabbitMQ (``ZGODA_BROKER_URL``), ``ZGODA_SEND_PARALLEL_TASKS=W``, ``ZGODA_SMTP_CONNECTIONS=K``. The
  workers are started and ready before the clock starts. They consume a queue of their own
  (``zgoda-bench-<random>``, deleted at the end) so that other workers on the same broker never take
  this run's tasks, and a node name of their own (two workers named ``celery@<host>`` on one machine
  collide on their exclusive remote-control queue); otherwise each is exactly ``zgoda worker`` (a
  short shim sets the queue and the name).

The clock runs from the ``send_campaign`` commit (which queues ``prepare_campaign``) until the campaign's
status is ``sent`` (its row read by primary key every 0.05 s; the counts by status are read once, at
the end): it covers freezing the audience into send rows, claiming, the consent gate, rendering,
composing, DKIM signing, the two-phase SMTP send and the bookkeeping.
Figures: messages/s = N / seconds. Every run is checked: N sends ``sent``, none refused or failed,
and the sink received exactly N more messages.

Baseline, measured in the same run against the same sink process: as many threads as the campaign
had SMTP connections (K inline, W x K with W workers), each with one ``smtplib.SMTP`` connection kept
open, sending N copies of one real message of this campaign (rendered, composed and signed once,
beforehand) with ``sendmail``, no database at all. Measured after every campaign run; each run is
compared with the faster of the baselines just after it and the one before it with as many
connections (the machine's speed drifts within minutes). Goal (the issue): at least 0.5x the
baseline's messages/s. With ``--repeat R`` each configuration runs R times (a campaign each, in turn
with the other configurations) and the median of its ratios is printed, judged against the goal.
"""

from __future__ import annotations

import argparse
import cProfile
import inspect
import io
import json
import os
import platform
import pstats
import re
import secrets
import selectors
import signal
import smtplib
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pg_databases import create_pg_database, drop_pg_database  # beside this script
from sqlalchemy import Integer, String, func, insert, literal, select, text

from zgoda.accounts import service as accounts
from zgoda.audiences import service as audiences
from zgoda.audiences.models import ListMember
from zgoda.campaigns import domains, sending
from zgoda.campaigns import service as campaigns
from zgoda.campaigns.models import Campaign, CampaignStatus, Send
from zgoda.consent import ledger, purposes, sources
from zgoda.consent.models import EventType, LegalBasis, Method, Source
from zgoda.contacts.models import Contact
from zgoda.core.db import Database
from zgoda.core.keys import address_hasher
from zgoda.core.migrate import upgrade
from zgoda.core.settings import Settings
from zgoda.core.tenancy import Actor, bind_scope, unscoped
from zgoda.delivery.channel import SmtpChannel

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/"
DEFAULT_BROKER = "amqp://guest:guest@127.0.0.1:5672//"
GOAL_RATIO = 0.5
SECRET = "send-benchmark-secret-0123456789abcdef"
BASE_URL = "https://zgoda.example.com"
FROM_DOMAIN = "kawiarnia.example.pl"
CONTROLLER = {
    "legal_name": "Kawiarnia Pod Zegarem sp. z o.o.",
    "postal_address": {"street": "ul. Długa 5", "postal_code": "00-238", "city": "Warszawa", "country": "PL"},
    "email": "biuro@kawiarnia.example.pl",
}
PARAGRAPH = (
    "<p>Zapraszamy na kawę z cynamonem i kardamonem. Żółta dynia, gęsta śmietana, "
    "świeże rogaliki prosto z pieca. Do zobaczenia przy ulicy Długiej!</p>\n"
)
HTML = (
    "<html><head><style>p { color: #333; font-family: Georgia, serif; } h1 { color: #7a3e00; }</style></head>\n"
    "<body><h1>Cześć {{ contact.first_name | default('') }}!</h1>\n"
    "<p>Nowa karta zimowa w {{ workspace.name }}.</p>\n" + PARAGRAPH * 12 + "</body></html>"
)
WORKER_SHIM = """
import functools, sys
from zgoda.core import tasks
_configure = tasks.configure
def configure(settings):
    app = _configure(settings)
    app.conf.task_default_queue = sys.argv[1]
    app.Worker = functools.partial(app.Worker, hostname=sys.argv[2])
    return app
tasks.configure = configure
from zgoda.cli import app
app(["worker", "--concurrency", "1", "--loglevel", "INFO"], prog_name="zgoda")
"""
LOAD_AT_START = os.getloadavg()[0]


@dataclass
class Measured:
    database: str
    mode: str  # "inline" or "workers=W"
    contacts: int
    seconds: float = 0.0
    sent: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    sink_delta: int = 0
    ok: bool = False
    cpu: str = ""
    repeat: int = 1
    connections: int = 0  # SMTP connections of the whole campaign (and of the baseline it is compared with)
    baseline_seconds: float = 0.0  # the faster of the baselines with as many connections just before and after it


@dataclass
class DatabaseRun:
    database: str
    contacts: int
    seed_seconds: float = 0.0
    consent_seconds: float = 0.0
    message_bytes: int = 0
    baselines: dict[int, list[float]] = field(default_factory=dict)  # by number of connections
    baseline_cpu: list[str] = field(default_factory=list)
    runs: list[Measured] = field(default_factory=list)


# --- the sink, in its own process ---------------------------------------------------------------


class Sink:
    """``python -m zgoda.delivery.cli --port 0 --discard``; its running count read from its output."""

    def __init__(self) -> None:
        command = [sys.executable, "-m", "zgoda.delivery.cli", "--port", "0", "--discard"]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, start_new_session=True)
        assert self.process.stdout is not None
        banner = self.process.stdout.readline()
        match = re.search(r":(\d+), ", banner)
        if not match:
            self.stop()
            raise RuntimeError(f"The sink did not start: {banner!r}")
        self.port = int(match.group(1))
        self.count = 0
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            match = re.match(r"(\d+) messages? received", line)
            if match:
                with self._changed:
                    self.count = int(match.group(1))
                    self._changed.notify_all()

    def wait_for(self, count: int, timeout: float = 10.0) -> int:
        """The count once it reaches ``count`` (the sink prints it every half second), or when time is up."""
        with self._changed:
            self._changed.wait_for(lambda: self.count >= count, timeout)
            return self.count

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


# --- the baseline -------------------------------------------------------------------------------


def smtplib_baseline(port: int, message: bytes, recipients: list[str], connections: int) -> float:
    """Seconds for ``connections`` threads, one kept-open smtplib connection each, to send ``message`` to all."""
    shares = [recipients[i::connections] for i in range(connections)]
    errors: list[BaseException] = []
    mail_from = f"bounces@{FROM_DOMAIN}"

    def work(share: list[str]) -> None:
        try:
            with smtplib.SMTP("127.0.0.1", port) as client:
                for rcpt in share:
                    client.sendmail(mail_from, [rcpt], message)
        except BaseException as error:  # noqa: BLE001 - re-raised in the main thread
            errors.append(error)

    threads = [threading.Thread(target=work, args=(share,)) for share in shares]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    if errors:
        raise errors[0]
    return seconds


# --- CPU accounting -----------------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _proc_cpu(stat: str) -> tuple[str, int, float]:
    """(command, process group, CPU seconds) from a /proc/PID/stat line."""
    command = stat[stat.index("(") + 1 : stat.rindex(")")]
    fields = stat[stat.rindex(")") + 2 :].split()
    return command, int(fields[2]), (int(fields[11]) + int(fields[12])) / _TICK


def cpu_snapshot(sink_pid: int, worker_groups: set[int]) -> dict[str, float]:
    """CPU seconds so far: this process, the sink, the worker processes (by process group), PostgreSQL."""
    figures = {"benchmark": time.process_time(), "sink": 0.0, "workers": 0.0, "postgres": 0.0}
    proc = Path("/proc")
    if not proc.is_dir():
        return figures
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command, group, seconds = _proc_cpu((entry / "stat").read_text())
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
        if int(entry.name) == sink_pid:
            figures["sink"] += seconds
        elif group in worker_groups:
            figures["workers"] += seconds
        elif command in ("postgres", "postmaster"):
            figures["postgres"] += seconds
    return figures


def cpu_note(before: dict[str, float], after: dict[str, float], messages: int) -> str:
    """CPU milliseconds per message by process kind, for what changed between two snapshots."""
    parts = []
    for key in ("benchmark", "workers", "sink", "postgres"):
        spent = after[key] - before[key]
        if spent > 0.005 * messages / 1000 or key in ("benchmark", "sink"):
            parts.append(f"{key} {spent * 1000 / messages:.2f}")
    return "CPU ms/msg: " + ", ".join(parts)


# --- setup --------------------------------------------------------------------------------------


@dataclass
class Seeded:
    workspace_id: int
    slug: str
    list_id: int
    template_id: int
    emails: list[str]


def seed(database: Database, count: int, run: DatabaseRun) -> Seeded:
    """Workspace, controller, source, contacts, one grant each (the ledger), list, template, DKIM key."""
    started = time.perf_counter()
    with database.transaction() as session:
        bind_scope(session, workspace_id=None, actor=Actor.system("benchmark"))
        workspace = accounts.create_workspace(session, slug="bench-send", name="Kawiarnia Pod Zegarem")
        workspace_id, slug = workspace.id, workspace.slug
        bind_scope(session, workspace_id=workspace_id, actor=Actor.system("benchmark"))
        accounts.update_workspace_settings(session, workspace=workspace, controller=CONTROLLER)
        source_id = sources.create_source(session, name="Sklep internetowy", kind="shop").id
        list_id = audiences.create_list(session, name="Newsletter").id
        template_id = campaigns.create_template(
            session, name="Zima", subject="Zima w {{ workspace.name }}, {{ contact.first_name }}", html=HTML
        ).id
        domains.add_sending_domain(session, domain=FROM_DOMAIN, secret=SECRET.encode())
        hash_address = address_hasher(session)
    emails = [f"klient{n}@example.pl" for n in range(count)]
    now = datetime.now(UTC)
    rows = [
        {
            "workspace_id": workspace_id,
            "ref": secrets.token_hex(16),
            "email": email,
            "email_hash": hash_address(email),
            "phone": None,
            "first_name": f"Anna{n}",
            "last_name": "Kowalska",
            "attributes": {},
            "source_id": source_id,
            "created_at": now,
            "updated_at": now,
        }
        for n, email in enumerate(emails)
    ]
    bulk_insert(database, Contact.__table__, rows)
    with database.transaction() as session:
        bind_scope(session, workspace_id=workspace_id, actor=Actor.system("benchmark"))
        session.execute(
            insert(ListMember).from_select(
                ["workspace_id", "list_id", "contact_id", "source_id", "added_by", "added_at"],
                select(
                    Contact.workspace_id,
                    literal(list_id, Integer),
                    Contact.id,
                    Contact.source_id,
                    literal("benchmark", String),
                    Contact.created_at,
                ).where(Contact.workspace_id == workspace_id),
            )
        )
    run.seed_seconds = time.perf_counter() - started

    started = time.perf_counter()
    with database.transaction() as session:
        bind_scope(session, workspace_id=workspace_id, actor=Actor.system("benchmark"))
        ids = list(session.scalars(select(Contact.id).order_by(Contact.id)))
    granted_at = now - timedelta(days=1)
    file_hash = "ab" * 32
    for start in range(0, len(ids), 1000):
        with database.transaction() as session:
            bind_scope(session, workspace_id=workspace_id, actor=Actor.system("benchmark"))
            purpose = purposes.purpose_by_key(session, "email_marketing")
            source = session.get(Source, source_id)
            people = session.scalars(select(Contact).where(Contact.id.in_(ids[start : start + 1000]))).all()
            ledger.record_events(
                session,
                [
                    ledger.NewEvent(
                        contact=person,
                        purpose=purpose,
                        event_type=EventType.GRANT.value,
                        method=Method.IMPORT.value,
                        legal_basis=LegalBasis.CONSENT.value,
                        source=source,
                        occurred_at=granted_at,
                        evidence=ledger.Evidence(file_sha256=file_hash, file_row=index + 2),
                    )
                    for index, person in enumerate(people, start=start)
                ],
            )
    run.consent_seconds = time.perf_counter() - started
    analyze(database)
    return Seeded(workspace_id, slug, list_id, template_id, emails)


def analyze(database: Database) -> None:
    """Statistics for the freshly loaded tables, as autovacuum (PostgreSQL) would gather within a minute.

    Without them PostgreSQL takes the never-analysed tables for a few pages each and the gate's query
    for a batch of 200 scans the whole list and every consent state once per batch (0.4 s per batch at
    20,000 contacts, 100x slower; it grows with the audience).
    """
    with database.engine.begin() as connection:
        connection.execute(text("ANALYZE"))


def bulk_insert(database: Database, table: Any, rows: list[dict[str, Any]]) -> None:
    """``COPY`` on PostgreSQL (values through each column type's bind processing), else one executemany."""
    if not rows:
        return
    with database.engine.begin() as connection:
        if connection.dialect.name != "postgresql":
            connection.execute(insert(table), rows)
            return
        names = list(rows[0])
        processors = [table.c[name].type.bind_processor(connection.dialect) for name in names]
        cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
        with cursor.copy(f"COPY {table.name} ({', '.join(names)}) FROM STDIN") as stream:
            for row in rows:
                values = []
                for name, process in zip(names, processors, strict=True):
                    value = row[name]
                    if process is not None:
                        value = process(value)
                    if isinstance(value, datetime):
                        value = value.astimezone(UTC).replace(tzinfo=None)
                    elif isinstance(value, dict | list):
                        value = json.dumps(value)
                    values.append(value)
                stream.write_row(values)


def new_campaign(database: Database, seeded: Seeded, name: str) -> int:
    with database.transaction() as session:
        bind_scope(session, workspace_id=seeded.workspace_id, actor=Actor.system("benchmark"))
        campaign = campaigns.create_campaign(
            session,
            name=name,
            purpose_key="email_marketing",
            template_id=seeded.template_id,
            from_name="Kawiarnia",
            from_email=f"news@{FROM_DOMAIN}",
            list_id=seeded.list_id,
            language="pl",
        )
        return campaign.id


def start(database: Database, seeded: Seeded, campaign_id: int) -> None:
    with database.transaction() as session:
        bind_scope(session, workspace_id=seeded.workspace_id, actor=Actor.system("benchmark"))
        request = campaigns.send_campaign(session, campaign_id=campaign_id)
        assert request.action == "started", request.message


def outcome(database: Database, campaign_id: int) -> tuple[str, dict[str, int]]:
    with database.transaction() as session:
        bind_scope(session, workspace_id=None, actor=Actor.system("benchmark"))
        with unscoped(session):
            status = session.scalars(select(Campaign.status).where(Campaign.id == campaign_id)).one()
            statuses = dict(
                session.execute(
                    select(Send.status, func.count()).where(Send.campaign_id == campaign_id).group_by(Send.status)
                ).all()
            )
    return str(status), {str(k): int(v) for k, v in statuses.items()}


def campaign_status(database: Database, campaign_id: int) -> str:
    with database.engine.connect() as connection:
        return str(connection.scalar(select(Campaign.status).where(Campaign.id == campaign_id)))


def sample_message(database: Database, seeded: Seeded, campaign_id: int, settings: Settings) -> bytes:
    """One real message of the campaign: rendered, composed and DKIM-signed by the sending code itself."""
    with database.transaction() as session:
        bind_scope(session, workspace_id=None, actor=Actor.system("benchmark"))
        campaign = sending._load(session, campaign_id)
        assert campaign is not None
        ctx = sending.campaign_context(session, campaign, settings)
        contact = session.scalars(select(Contact).order_by(Contact.id).limit(1)).one()
        recipient = sending.recipient_for(contact, send_id=1, source_id=contact.source_id, consent_event_id=None)
        message = sending.build_message(ctx, recipient)
    assert b"DKIM-Signature:" in message.data
    return message.data


def settings_for(url: str, port: int, connections: int, data_dir: Path, parallel: int = 1) -> Settings:
    return Settings(  # type: ignore[call-arg]
        database_url=url,
        secret_key=SECRET,
        base_url=BASE_URL,
        data_dir=data_dir,
        smtp_host="127.0.0.1",
        smtp_port=port,
        smtp_connections=connections,
        send_parallel_tasks=parallel,
    )


# --- the measured runs --------------------------------------------------------------------------


# Where an inline run's time goes (--phases): the sender's own steps, timed by wrapping them. These are
# private names of zgoda.campaigns.sending and zgoda.delivery.transport; rename them here with the code.
PHASES: list[tuple[Any, str, str]] = [
    (SmtpChannel, "start", "SMTP: a message's envelope written"),
    (SmtpChannel, "on_readable", "SMTP: replies read and acted on"),
    (SmtpChannel, "on_writable", "SMTP: the rest of a message written"),
    (sending._Pipeline, "_commit_prepared", "a group commit with its dots"),
    (selectors.DefaultSelector, "select", "the sending thread waiting in its selector"),
    (sending._SentRows, "write", "a group's sent rows (every step below)"),
    (sending._SentRows, "_mark_group", "  PostgreSQL: its UPDATE"),
    (sending._SentRows, "_mark_rows", "  SQLite: its UPDATEs"),
    (sending._SentRows, "_commit_with_dots", "  PostgreSQL: COMMIT with the dots"),
    (sending._SentRows, "settle", "PostgreSQL: the last group's answers read"),
    (sending._SentRows, "_dots_then_commit", "  SQLite: dots held, COMMIT, dots kept"),
    (sending._Pipeline, "_build", "building a message (render, compose, sign)"),
    (sending, "_claim_and_decide", "claiming a batch and asking the gate"),
]


@contextmanager
def phase_timers() -> Iterator[dict[str, list[float]]]:
    """Wall seconds of each call of the steps in ``PHASES``, by description, while the block runs."""
    spent: dict[str, list[float]] = {label: [] for _, _, label in PHASES}
    originals = [(owner, name, inspect.getattr_static(owner, name)) for owner, name, _ in PHASES]
    lock = threading.Lock()

    def timed(function: Any, label: str) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                seconds = time.perf_counter() - started
                with lock:
                    spent[label].append(seconds)

        return wrapper

    for (owner, name, function), (_, _, label) in zip(originals, PHASES, strict=True):
        if isinstance(function, staticmethod):
            setattr(owner, name, staticmethod(timed(function.__func__, label)))
        else:
            setattr(owner, name, timed(function, label))
    try:
        yield spent
    finally:
        for owner, name, function in originals:
            setattr(owner, name, function)


def print_phases(spent: dict[str, list[float]], messages: int, seconds: float, connections: int) -> None:
    print(f"where the time went ({messages:,} messages in {seconds:.1f} s):")
    print(f"  {'step':<46} {'calls':>7} {'ms/call':>8} {'ms/message':>10}")
    for label, calls in spent.items():
        if calls:
            total = sum(calls)
            print(f"  {label:<46} {len(calls):>7,} {1000 * total / len(calls):>8.3f} {1000 * total / messages:>10.3f}")
    busy = sum(sum(spent[label]) for _, _, label in PHASES[:4]) / messages * 1000
    waiting = sum(spent[PHASES[4][2]]) / messages * 1000
    print(
        f"  the sending thread per message: {busy:.3f} ms in SMTP steps and group commits, {waiting:.3f} ms in "
        f"its selector, {1000 * seconds / messages:.3f} ms in all ({connections} connections)"
    )


def run_inline(database: Database, seeded: Seeded, campaign_id: int, settings: Settings) -> float:
    started = time.perf_counter()
    start(database, seeded, campaign_id)
    sending.prepare(database, campaign_id)
    sending.run(database, campaign_id, settings)
    seconds = time.perf_counter() - started
    status, _ = outcome(database, campaign_id)
    assert status == CampaignStatus.SENT, status
    return seconds


@contextmanager
def workers(count: int, url: str, port: int, connections: int, data_dir: Path, queue: str) -> Iterator[set[int]]:
    """``count`` worker processes on ``queue``, ready before this yields their process groups; stopped after."""
    env = {
        **os.environ,
        "ZGODA_DATABASE_URL": url,
        "ZGODA_BROKER_URL": DEFAULT_BROKER,
        "ZGODA_DATA_DIR": str(data_dir),
        "ZGODA_SECRET_KEY": SECRET,
        "ZGODA_BASE_URL": BASE_URL,
        "ZGODA_SMTP_HOST": "127.0.0.1",
        "ZGODA_SMTP_PORT": str(port),
        "ZGODA_SMTP_CONNECTIONS": str(connections),
        "ZGODA_SEND_PARALLEL_TASKS": str(count),
    }
    processes: list[tuple[subprocess.Popen[bytes], Path]] = []
    try:
        for number in range(count):
            log = data_dir / f"worker-{queue}-{number}.log"
            with log.open("wb") as out:
                process = subprocess.Popen(
                    [sys.executable, "-c", WORKER_SHIM, queue, f"{queue}-{number}@%h"],
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            processes.append((process, log))
        deadline = time.monotonic() + 90
        for process, log in processes:
            while b" ready." not in log.read_bytes():
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"a worker did not start:\n{log.read_text()[-3000:]}")
                time.sleep(0.1)
        yield {process.pid for process, _ in processes}  # each leads its own session, so its group
    finally:
        for process, _ in processes:
            if process.poll() is None:
                with suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
        for process, log in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            if process.returncode not in (0, -signal.SIGTERM):
                print(f"  (worker exited with {process.returncode}; log {log})", file=sys.stderr)


def run_with_workers(database: Database, seeded: Seeded, campaign_id: int, timeout: float) -> float:
    started = time.perf_counter()
    start(database, seeded, campaign_id)
    deadline = time.monotonic() + timeout
    while True:
        status = campaign_status(database, campaign_id)  # a primary-key read: polling costs next to nothing
        if status == CampaignStatus.SENT:
            return time.perf_counter() - started
        if status not in (CampaignStatus.SENDING,) or time.monotonic() > deadline:
            raise RuntimeError(f"campaign {campaign_id} is {status} after {time.perf_counter() - started:.0f} s")
        time.sleep(0.05)


def configure_broker(queue: str) -> Any:
    from zgoda.core.tasks import configure

    celery = configure(Settings(broker_url=DEFAULT_BROKER, secret_key=SECRET))  # type: ignore[call-arg]
    celery.conf.task_default_queue = queue
    return celery


def purge_queue(queue: str) -> None:
    from zgoda.core.tasks import celery_app

    with suppress(Exception), celery_app.connection_for_write(DEFAULT_BROKER) as connection:
        connection.default_channel.queue_purge(queue)


def forget_queue(queue: str) -> None:
    from zgoda.core.tasks import celery_app

    with suppress(Exception), celery_app.connection_for_write(DEFAULT_BROKER) as connection:
        channel = connection.default_channel
        channel.queue_delete(queue)
        channel.exchange_delete(queue)


def measure(name: str, url: str, args: argparse.Namespace, sink: Sink, data_dir: Path, queue: str) -> DatabaseRun:
    run = DatabaseRun(database=name, contacts=args.contacts)
    upgrade(url)
    database = Database.from_url(url)
    try:
        print(f"[{name}] seeding {args.contacts:,} contacts ...", flush=True)
        seeded = seed(database, args.contacts, run)
        print(
            f"[{name}] contacts and list {run.seed_seconds:.1f} s, grants via record_events "
            f"{run.consent_seconds:.1f} s",
            flush=True,
        )
        configs: list[tuple[str, int]] = [("inline", 0)]
        if name == "postgresql":
            configs = [(f"workers={w}", w) for w in args.workers] + (configs if args.inline_pg else [])
        base_settings = settings_for(url, sink.port, args.connections, data_dir)
        sequence = [(repeat, mode, count) for repeat in range(1, args.repeat + 1) for mode, count in configs]
        campaign_ids = {
            (repeat, mode): new_campaign(database, seeded, f"Karta zimowa ({mode}, {repeat})")
            for repeat, mode, _ in sequence
        }
        message: bytes | None = None

        def baseline(connections: int) -> float:
            assert message is not None
            before = sink.count
            cpu_before = cpu_snapshot(sink.process.pid, set())
            seconds = smtplib_baseline(sink.port, message, seeded.emails, connections)
            run.baselines.setdefault(connections, []).append(seconds)
            got = sink.wait_for(before + len(seeded.emails)) - before
            assert got == len(seeded.emails), f"the sink got {got} of {len(seeded.emails)} baseline messages"
            run.baseline_cpu.append(cpu_note(cpu_before, cpu_snapshot(sink.process.pid, set()), got))
            print(
                f"[{name}] baseline smtplib x{connections}: {len(seeded.emails) / seconds:,.0f}/s; "
                f"{run.baseline_cpu[-1]}",
                flush=True,
            )
            return seconds

        for repeat, mode, count in sequence:
            campaign_id = campaign_ids[(repeat, mode)]
            connections = args.connections * max(count, 1)
            measured = Measured(
                database=name, mode=mode, contacts=args.contacts, repeat=repeat, connections=connections
            )
            before = sink.count
            groups: set[int] = set()
            cpu_before = cpu_snapshot(sink.process.pid, groups)
            if count == 0 and args.profile:
                profiler = cProfile.Profile()
                measured.seconds = profiler.runcall(run_inline, database, seeded, campaign_id, base_settings)
                out = io.StringIO()
                pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(60)
                pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(30)
                print(out.getvalue())
                purge_queue(queue)
            elif count == 0 and args.phases:
                with phase_timers() as spent:
                    measured.seconds = run_inline(database, seeded, campaign_id, base_settings)
                print_phases(spent, args.contacts, measured.seconds, args.connections)
                purge_queue(queue)
            elif count == 0:
                measured.seconds = run_inline(database, seeded, campaign_id, base_settings)
                purge_queue(queue)  # the start queued prepare_campaign: nobody is to run it
            else:
                with workers(count, url, sink.port, args.connections, data_dir, queue) as groups:
                    cpu_before = cpu_snapshot(sink.process.pid, groups)
                    measured.seconds = run_with_workers(database, seeded, campaign_id, args.timeout)
                    measured.cpu = cpu_note(cpu_before, cpu_snapshot(sink.process.pid, groups), args.contacts)
            if not measured.cpu:
                measured.cpu = cpu_note(cpu_before, cpu_snapshot(sink.process.pid, groups), args.contacts)
            _, measured.statuses = outcome(database, campaign_id)
            measured.sent = measured.statuses.get("sent", 0)
            measured.sink_delta = sink.wait_for(before + args.contacts) - before
            measured.ok = measured.sent == args.contacts == measured.sink_delta and set(measured.statuses) == {"sent"}
            run.runs.append(measured)
            print(
                f"[{name}] {mode}: {args.contacts / measured.seconds:,.0f}/s in {measured.seconds:.1f} s "
                f"({measured.statuses}; sink +{measured.sink_delta}){'' if measured.ok else '  CHECK FAILED'}; "
                f"{measured.cpu}",
                flush=True,
            )
            if message is None:
                message = sample_message(database, seeded, campaign_id, base_settings)
                run.message_bytes = len(message)
            earlier = run.baselines.get(connections, [])[-1:]
            measured.baseline_seconds = min([baseline(connections), *earlier])
    finally:
        database.engine.dispose()
    return run


# --- databases and the report -------------------------------------------------------------------


def report(runs: list[DatabaseRun], args: argparse.Namespace) -> bool:
    print()
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(
        f"Python {platform.python_version()}, {cpus} CPUs, load average {LOAD_AT_START:.1f} at start and "
        f"{os.getloadavg()[0]:.1f} at the end; {args.contacts:,} contacts, {args.connections} SMTP connections a "
        "sender (each baseline as many as the campaign it is compared with)"
    )
    header = f"{'database':<11} {'configuration':<28} {'seconds':>8} {'msgs/s':>8}  note"
    print(header)
    print("-" * (len(header) + 30))
    all_ok = True
    ratios: dict[tuple[str, str], list[float]] = {}
    for run in runs:
        for connections, baselines in sorted(run.baselines.items()):
            base = min(baselines)
            figures = ", ".join(f"{run.contacts / s:,.0f}/s" for s in baselines)
            print(
                f"{run.database:<11} {'baseline: smtplib x' + str(connections):<28} {base:>8.1f} "
                f"{run.contacts / base:>8,.0f}  the fastest of {figures}; one signed {run.message_bytes:,}-byte message"
            )
        for m in run.runs:
            rate = m.contacts / m.seconds
            ratio = m.baseline_seconds / m.seconds
            ratios.setdefault((run.database, m.mode), []).append(ratio)
            met = "MET" if ratio >= GOAL_RATIO else "NOT MET"
            check = "ok" if m.ok else f"CHECK FAILED {m.statuses} sink +{m.sink_delta}"
            all_ok &= m.ok
            configuration = f"campaign, {m.mode}" + (f" #{m.repeat}" if args.repeat > 1 else "")
            print(
                f"{run.database:<11} {configuration:<28} {m.seconds:>8.1f} {rate:>8,.0f}  "
                f"{ratio:.2f}x its baseline (x{m.connections}), {m.contacts / m.baseline_seconds:,.0f}/s "
                f"(goal >= {GOAL_RATIO}x: {met}); "
                f"{check}"
            )
            print(f"{'':<11} {'':<28} {'':>8} {'':>8}  {m.cpu}")
        print(f"{'':<11} (setup, not timed: contacts {run.seed_seconds:.1f} s, grants {run.consent_seconds:.1f} s)")
    if args.repeat > 1:
        print()
        for (database, mode), found in ratios.items():
            median = statistics.median(found)
            met = "MET" if median >= GOAL_RATIO else "NOT MET"
            print(
                f"{database} {mode}: {len(found)} runs, {', '.join(f'{r:.2f}x' for r in found)} their baselines; "
                f"median {median:.2f}x (goal >= {GOAL_RATIO}x: {met})"
            )
    if args.json:
        print(json.dumps([run.__dict__ | {"runs": [m.__dict__ for m in run.runs]} for run in runs], default=str))
    return all_ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument(
        "--connections",
        type=int,
        default=4,
        help="SMTP connections per worker (the baseline: as many as the campaign has)",
    )
    parser.add_argument("--workers", default="1,2", help="worker process counts to measure on PostgreSQL")
    parser.add_argument("--database", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL, help="a PostgreSQL server where CREATE DATABASE works")
    parser.add_argument("--inline-pg", action="store_true", help="also measure the inline mode on PostgreSQL")
    parser.add_argument("--timeout", type=float, default=900.0, help="give up on a run after this many seconds")
    parser.add_argument("--profile", action="store_true", help="cProfile the inline runs (print the top functions)")
    parser.add_argument(
        "--phases", action="store_true", help="time the sender's steps in the inline runs (where a message waits)"
    )
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run each configuration R times (a campaign each) and print the median ratio",
    )
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    args.workers = [int(w) for w in str(args.workers).split(",") if w.strip()]
    # SIGTERM ends the run like Ctrl-C, so every finally below runs (workers, sink, databases)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    runs: list[DatabaseRun] = []
    # one queue of this run's own for every start (Celery caches its routes once it has published)
    queue = f"zgoda-bench-{uuid.uuid4().hex[:8]}"
    configure_broker(queue)
    with tempfile.TemporaryDirectory(prefix="zgoda-send-bench-") as folder:
        sink = Sink()
        try:
            if args.database in ("sqlite", "both"):
                url = f"sqlite:///{Path(folder) / 'send-bench.db'}"
                runs.append(measure("sqlite", url, args, sink, Path(folder), queue))
            if args.database in ("postgresql", "both"):
                name, url = create_pg_database(args.pg_url)
                try:
                    runs.append(measure("postgresql", url, args, sink, Path(folder), queue))
                finally:
                    drop_pg_database(args.pg_url, name)
        finally:
            sink.stop()
            forget_queue(queue)
    return 0 if report(runs, args) else 1


if __name__ == "__main__":
    sys.exit(main())
