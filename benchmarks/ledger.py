"""Consent ledger benchmark: record events through the service layer, then verify every chain.

Run: ``uv run python benchmarks/ledger.py [--events N] [--batch B] [--database sqlite|postgresql|both]
[--repeat R]``

For each database: a fresh SQLite file in a temporary directory, or a fresh PostgreSQL database
(``CREATE DATABASE`` a unique name on ``--pg-url``, dropped at the end), migrated with Alembic. A
workspace and its contacts are made through the services (timed separately, not part of the figures).
Then ``consent.ledger.record_events`` records the events in batches, one transaction per batch,
and ``verify_ledger_chains`` and ``verify_states`` check the result.

The baseline, measured in the same run: the very rows the ledger wrote (every column but ``id``), read
back and inserted again into a plain table with the same columns and no index, key, constraint or
trigger, with no hashing: one ``executemany`` through SQLAlchemy Core in one transaction (on
PostgreSQL also ``COPY``, printed for reference). Goals: recording within 3x of the executemany
baseline; verifying the chains at 200,000 events/s or more.

On SQLite a further reference line replays every statement recording sent to the driver (captured as it
ran, with its parameters) on a copy of the database as it was before recording: SQLite's own share of
recording, with no Python of the service layer.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import hashlib
import io
import platform
import pstats
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Self, TypeVar

from pg_databases import create_pg_database, drop_pg_database  # beside this script
from sqlalchemy import Column, MetaData, Table, event, insert, select

from zgoda.accounts import service as accounts
from zgoda.consent import ledger, purposes
from zgoda.consent.models import ConsentEvent, EventType, LegalBasis, Method, Purpose
from zgoda.consent.verify import verify_ledger_chains, verify_states
from zgoda.contacts import service as contacts
from zgoda.contacts.models import Contact
from zgoda.core.db import Database
from zgoda.core.migrate import upgrade
from zgoda.core.tenancy import Actor, bind_scope

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/"
RECORD_GOAL_RATIO = 3.0
VERIFY_GOAL_RATE = 200_000
PURPOSES_PER_CONTACT = 5  # the workspace's default purposes
START = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)
T = TypeVar("T")


@dataclass
class Figures:
    database: str
    events: int = 0
    batch: int = 0
    pairs: int = 0
    with_evidence: int = 0
    late: int = 0
    contacts_seconds: float = 0.0
    contacts: int = 0
    record_seconds: float = 0.0
    baseline_seconds: float = 0.0
    copy_seconds: float | None = None
    indexed_seconds: float = 0.0
    verify_seconds: float = 0.0
    verify_serial_seconds: float = 0.0
    record_cpu: float = 0.0  # CPU seconds of this process (and its finished children) during the step
    baseline_cpu: float = 0.0
    record_server_cpu: float | None = None  # PostgreSQL: CPU seconds of the database's server processes
    verify_cpu: float = 0.0
    states_seconds: float = 0.0
    replay_seconds: float | None = None  # SQLite: recording's statements replayed without the service layer
    chain_ok: bool = False
    states_ok: bool = False
    profiles: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Spec:
    """One event to record, before it meets the service: indexes into the contacts and purposes."""

    contact: int
    purpose: int
    event_type: str
    method: str
    legal_basis: str
    occurred_at: datetime
    requires_confirmation: bool
    evidence: ledger.Evidence


def event_specs(events: int, contact_count: int, seed: int = 20260601) -> list[Spec]:
    """A realistic mix, in the order it arrives.

    Round 0 grants every (contact, purpose) pair: imports with the file's hash and row, or web forms
    (with IP and user agent) awaiting double opt-in; some imported grants have no known legal basis.
    Later rounds confirm, refresh, withdraw (unsubscribe links) and expire. About 1% of events arrive
    late (they occurred before the pair's latest event), which makes the ledger replay that pair.
    """
    rng = random.Random(seed)
    pairs = [(c, p) for c in range(contact_count) for p in range(PURPOSES_PER_CONTACT)]
    specs: list[Spec] = []
    pending: set[tuple[int, int]] = set()
    file_hash = "ab" * 32
    round_number = 0
    while len(specs) < events:
        order = pairs[:]
        rng.shuffle(order)
        base = START + timedelta(days=30 * round_number)
        for position, (contact, purpose) in enumerate(order):
            if len(specs) >= events:
                break
            occurred = base + timedelta(seconds=position)
            late = round_number > 0 and rng.random() < 0.01
            if late:
                occurred -= timedelta(days=45)
            evidence = ledger.Evidence()
            requires_confirmation = False
            basis = LegalBasis.CONSENT.value
            if round_number == 0 or ((contact, purpose) not in pending and rng.random() < 0.1):
                kind = EventType.GRANT.value
                if rng.random() < 0.3:
                    method = Method.WEB_FORM.value
                    requires_confirmation = True
                    pending.add((contact, purpose))
                    evidence = ledger.Evidence(ip=f"203.0.113.{position % 250}", user_agent="Mozilla/5.0 (X11)")
                else:
                    method = Method.IMPORT.value
                    basis = LegalBasis.UNKNOWN.value if rng.random() < 0.05 else basis
                    evidence = ledger.Evidence(file_sha256=file_hash, file_row=position + 2)
            elif (contact, purpose) in pending:
                kind, method = EventType.CONFIRM.value, Method.DOUBLE_OPT_IN.value
                pending.discard((contact, purpose))
                evidence = ledger.Evidence(ip=f"198.51.100.{position % 250}", user_agent="Mozilla/5.0 (Android)")
            else:
                roll = rng.random()
                if roll < 0.15:
                    kind, method = EventType.WITHDRAW.value, Method.UNSUBSCRIBE_LINK.value
                elif roll < 0.2:
                    kind, method = EventType.EXPIRE.value, Method.OPERATOR.value
                else:
                    kind, method = EventType.REFRESH.value, Method.PREFERENCE_CENTRE.value
            specs.append(Spec(contact, purpose, kind, method, basis, occurred, requires_confirmation, evidence))
        round_number += 1
    return specs


@contextmanager
def timed(into: list[float]) -> Iterator[None]:
    started = time.perf_counter()
    yield
    into.append(time.perf_counter() - started)


@contextmanager
def inputs_frozen() -> Iterator[None]:
    """Time a step without the cyclic collector rescanning what was built before it.

    The benchmark builds every input first (200,000 events and their specs; for the baselines, the rows
    read back), which a real import never holds at once: it builds a batch, records it and lets it go.
    Kept alive, those objects made each full collection during a step scan them all again (four during
    recording cost 1.0 s of 12.5). Frozen (``gc.freeze``), they stay alive but are not scanned; what the
    step itself allocates is collected as usual. Both the recording and the baselines are timed this way.
    """
    assert gc.get_freeze_count() == 0, "inputs_frozen does not nest (gc.unfreeze thaws everything)"
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def profiled(name: str, figures: Figures, enabled: bool, function: Callable[[], T]) -> T:
    if not enabled:
        return function()
    profiler = cProfile.Profile()
    result = profiler.runcall(function)
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(25)
    figures.profiles[name] = out.getvalue()
    return result


def make_contacts(database: Database, workspace_id: int, count: int) -> list[Contact]:
    made: list[Contact] = []
    for start in range(0, count, 2000):
        with database.transaction() as session:
            bind_scope(session, workspace_id=workspace_id, actor=Actor.system("benchmark"))
            for number in range(start, min(count, start + 2000)):
                data = contacts.ContactData(email=f"person{number}@example.com", first_name=f"P{number}")
                made.append(contacts.upsert_contact(session, data, audit_changes=False).contact)
    return made


def baseline_table(metadata: MetaData) -> Table:
    """The ledger's columns (same types), and nothing else: no key, index, constraint or trigger."""
    columns = [Column(c.name, c.type, nullable=True) for c in ConsentEvent.__table__.columns if c.name != "id"]
    return Table("baseline_events", metadata, *columns)


def run(database_name: str, url: str, args: argparse.Namespace) -> Figures:
    figures = Figures(database=database_name, events=args.events, batch=args.batch)
    upgrade(url)
    database = Database.from_url(url)
    if database.engine.dialect.name == "sqlite":
        event.listen(database.engine, "do_connect", _capturing_connections)
    if args.sqlite_cache_mb and database.engine.dialect.name == "sqlite":
        pragma = f"PRAGMA cache_size=-{args.sqlite_cache_mb * 1024}"
        event.listen(database.engine, "connect", lambda dbapi_connection, _record: dbapi_connection.execute(pragma))
    try:
        with database.transaction() as session:
            bind_scope(session, workspace_id=None, actor=Actor.system("benchmark"))
            workspace_id = accounts.create_workspace(session, slug="bench", name="Benchmark").id
        with database.transaction() as session:
            bind_scope(session, workspace_id=workspace_id, actor=Actor.system("benchmark"))
            email = purposes.purpose_by_key(session, "email_marketing")
            purposes.update_purpose(session, purpose_id=email.id, validity_days=730)
            purpose_list: list[Purpose] = list(purposes.list_purposes(session))[:PURPOSES_PER_CONTACT]
        contact_count = max(1, args.events // (PURPOSES_PER_CONTACT * 4))
        started = time.perf_counter()
        people = make_contacts(database, workspace_id, contact_count)
        figures.contacts_seconds = time.perf_counter() - started
        figures.contacts = contact_count

        specs = event_specs(args.events, contact_count)
        figures.pairs = len({(s.contact, s.purpose) for s in specs})
        figures.with_evidence = sum(1 for s in specs if not s.evidence.is_empty())
        batches = [
            [
                ledger.NewEvent(
                    contact=people[s.contact],
                    purpose=purpose_list[s.purpose],
                    event_type=s.event_type,
                    method=s.method,
                    legal_basis=s.legal_basis,
                    occurred_at=s.occurred_at,
                    requires_confirmation=s.requires_confirmation,
                    evidence=s.evidence,
                )
                for s in specs[start : start + args.batch]
            ]
            for start in range(0, len(specs), args.batch)
        ]
        last_seen: dict[tuple[int, int], datetime] = {}
        for s in specs:
            key = (s.contact, s.purpose)
            if key in last_seen and s.occurred_at < last_seen[key]:
                figures.late += 1
            last_seen[key] = max(s.occurred_at, last_seen.get(key, s.occurred_at))

        def record_all() -> None:
            for batch in batches:
                with database.transaction() as session:
                    bind_scope(session, workspace_id=workspace_id, actor=Actor.system("benchmark"))
                    ledger.record_events(session, batch)

        server = _server_cpu(database)
        before_recording = _sqlite_copy(database, "before-recording.db")
        with inputs_frozen(), _captured_statements() as statements:
            started, cpu = time.perf_counter(), _cpu_seconds()
            profiled("record_events", figures, args.profile, record_all)
            figures.record_seconds = time.perf_counter() - started
            figures.record_cpu = _cpu_seconds() - cpu
        after = _server_cpu(database)
        if server is not None and after is not None:  # processes started meanwhile count from zero
            figures.record_server_cpu = sum(seconds - server.get(pid, 0.0) for pid, seconds in after.items())

        def verify_all() -> None:
            with database.transaction() as session:
                reports = verify_ledger_chains(session)
            figures.chain_ok = all(r.ok for r in reports) and sum(r.entries for r in reports) == args.events

        started, cpu = time.perf_counter(), _cpu_seconds()
        profiled("verify_ledger_chains", figures, args.profile, verify_all)
        figures.verify_seconds = time.perf_counter() - started
        figures.verify_cpu = _cpu_seconds() - cpu

        # Reference: the same check in this process alone (no worker processes).
        started = time.perf_counter()
        with database.transaction() as session:
            serial_ok = all(r.ok for r in verify_ledger_chains(session, workers=1))
        figures.verify_serial_seconds = time.perf_counter() - started
        figures.chain_ok = figures.chain_ok and serial_ok

        def verify_state_table() -> None:
            with database.transaction() as session:
                results = verify_states(session)
            figures.states_ok = all(problem is None for _, problem in results.values())

        started = time.perf_counter()
        profiled("verify_states", figures, args.profile, verify_state_table)
        figures.states_seconds = time.perf_counter() - started

        recorded = _ledger_summary(database)
        measure_baseline(database, figures)
        if before_recording is not None:
            figures.replay_seconds = replay_statements(before_recording, statements)
            replayed = Database.from_url(f"sqlite:///{before_recording}")
            try:
                if _ledger_summary(replayed) != recorded:  # a statement missed: the reference would flatter
                    raise RuntimeError("the replay did not leave the ledger recording left")
            finally:
                replayed.engine.dispose()
    finally:
        database.engine.dispose()
    return figures


# -- SQLite: recording's statements replayed without Python ----------------------------------------------
#
# What recording costs SQLite itself (inserting, updating states at random places, committing their pages):
# every statement the ledger sent to the driver during recording, with its parameters, is kept as it runs
# and sent again, in order, to a copy of the database taken just before recording. The difference between
# recording and the replay is the service layer's Python (validation, hashing, the fold, binding values).

_capturing: list[tuple[str, Any, bool]] | None = None  # (sql, parameters, executemany); None: not capturing
_COMMIT = "-- commit"


class _CapturingCursor(sqlite3.Cursor):
    def execute(self, sql: str, parameters: Any = (), /) -> Self:
        if _capturing is not None:
            _capturing.append((sql, parameters, False))
        return super().execute(sql, parameters)

    def executemany(self, sql: str, parameters: Any, /) -> Self:
        if _capturing is not None:
            parameters = list(parameters)
            _capturing.append((sql, parameters, True))
        return super().executemany(sql, parameters)


class _CapturingConnection(sqlite3.Connection):
    """A sqlite3 connection that keeps what it is asked to run while :data:`_capturing` is a list
    (``Connection.execute`` runs its cursor's C code directly, so it is kept here, not by the cursor)."""

    def cursor(self, factory: Any = _CapturingCursor) -> Any:
        return super().cursor(factory)

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        if _capturing is not None:
            _capturing.append((sql, parameters, False))
        return super().execute(sql, parameters)

    def commit(self) -> None:
        if _capturing is not None:
            _capturing.append((_COMMIT, (), False))
        super().commit()


def _capturing_connections(_dialect: Any, _record: Any, _arguments: Any, parameters: dict[str, Any]) -> None:
    parameters["factory"] = _CapturingConnection


@contextmanager
def _captured_statements() -> Iterator[list[tuple[str, Any, bool]]]:
    """The statements SQLite connections run inside the block (nothing is kept on PostgreSQL)."""
    global _capturing
    statements: list[tuple[str, Any, bool]] = []
    _capturing = statements
    try:
        yield statements
    finally:
        _capturing = None


def _sqlite_copy(database: Database, name: str) -> Path | None:
    """A copy of the SQLite database file beside it (``None`` on PostgreSQL), made with SQLite's backup."""
    if database.engine.dialect.name != "sqlite" or not database.engine.url.database:
        return None
    original = Path(database.engine.url.database)
    target = original.with_name(name)
    with closing(sqlite3.connect(original)) as source, closing(sqlite3.connect(target)) as copy:
        source.backup(copy)
    return target


def _ledger_summary(database: Database) -> tuple[Any, ...]:
    """What tells two databases' ledgers apart: the events' and evidence rows' counts, the chain's last
    hash, and a digest of every state row."""
    with database.engine.connect() as connection:
        counts = connection.exec_driver_sql(
            "SELECT (SELECT count(*) FROM consent_events), (SELECT count(*) FROM consent_evidence), "
            "(SELECT hash FROM consent_events ORDER BY seq DESC LIMIT 1)"
        ).one()
        states = hashlib.sha256()
        for row in connection.exec_driver_sql("SELECT * FROM consent_states ORDER BY id"):
            states.update(repr(tuple(row)).encode())
    return (*counts, states.hexdigest())


def replay_statements(path: Path, statements: list[tuple[str, Any, bool]]) -> float:
    """Seconds to run ``statements`` again, in order, on the database at ``path`` (a connection with the
    application's settings); the parameters are already the driver's values."""
    database = Database.from_url(f"sqlite:///{path}")
    try:
        with database.engine.connect() as connection, inputs_frozen():
            driver = connection.connection.driver_connection
            assert driver is not None
            started = time.perf_counter()
            for sql, parameters, many in statements:
                if sql is _COMMIT:
                    driver.commit()
                elif many:
                    driver.executemany(sql, parameters)
                else:
                    driver.execute(sql, parameters).fetchall()
            return time.perf_counter() - started
    finally:
        database.engine.dispose()


def measure_baseline(database: Database, figures: Figures) -> None:
    """Time plain bulk inserts of the rows the ledger wrote; each is run twice and the faster run counts."""
    source: Table = ConsentEvent.__table__  # type: ignore[assignment]
    names = [c.name for c in source.columns if c.name != "id"]
    with database.engine.connect() as connection:
        rows = [dict(r) for r in connection.execute(select(*[source.c[n] for n in names])).mappings()]

    def fresh_table() -> Table:
        metadata = MetaData()
        table = baseline_table(metadata)
        metadata.drop_all(database.engine)
        metadata.create_all(database.engine)
        return table

    def executemany() -> tuple[float, float]:
        table = fresh_table()
        with inputs_frozen():
            started, cpu = time.perf_counter(), _cpu_seconds()
            with database.engine.begin() as connection:
                connection.execute(insert(table), rows)
            return time.perf_counter() - started, _cpu_seconds() - cpu

    figures.baseline_seconds, figures.baseline_cpu = min(executemany(), executemany())

    # Reference: the same rows into the ledger's own table (its indexes and foreign keys), numbered after
    # the chain's end so the sequence numbers do not clash (the rows must stay in their workspace: the
    # ledger's keys refuse a contact of another one); still one executemany, no hashing, no state. It runs
    # after verification: the chain it leaves behind does not verify.
    offset = max(row["seq"] for row in rows)
    reference_rows = [{**row, "seq": row["seq"] + offset} for row in rows]
    with inputs_frozen():
        started = time.perf_counter()
        with database.engine.begin() as connection:
            connection.execute(insert(source), reference_rows)
        figures.indexed_seconds = time.perf_counter() - started

    if database.engine.dialect.name == "postgresql":
        plain = [
            tuple(v.astimezone(UTC).replace(tzinfo=None) if isinstance(v, datetime) else v for v in row.values())
            for row in rows
        ]

        def copy() -> float:
            fresh_table()
            with inputs_frozen():
                started = time.perf_counter()
                with database.engine.begin() as connection:
                    cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
                    with cursor.copy(f"COPY baseline_events ({', '.join(names)}) FROM STDIN") as stream:
                        for values in plain:
                            stream.write_row(values)
                return time.perf_counter() - started

        figures.copy_seconds = min(copy(), copy())


def sqlite_url(directory: Path) -> str:
    return f"sqlite:///{directory / 'ledger-bench.db'}"


def rate(count: int, seconds: float) -> str:
    return f"{count / seconds:,.0f}" if seconds > 0 else "-"


def report(all_figures: list[Figures]) -> None:
    print()
    print(f"Python {platform.python_version()} on {platform.machine()}, {_cpus()} CPUs")
    header = f"{'database':<11} {'step':<40} {'events':>9} {'seconds':>9} {'events/s':>11}  note"
    print(header)
    print("-" * (len(header) + 40))
    for f in all_figures:
        ratio = f.record_seconds / f.baseline_seconds if f.baseline_seconds else float("inf")
        verify_rate = f.events / f.verify_seconds if f.verify_seconds else 0.0
        lines = [
            ("contacts via upsert_contact (setup)", f.contacts, f.contacts_seconds, "contacts, not in the figures"),
            (
                "baseline: executemany, plain table",
                f.events,
                f.baseline_seconds,
                f"one transaction, no index/hash; {f.baseline_cpu:.2f} s CPU here",
            ),
            (
                "reference: executemany, consent_events",
                f.events,
                f.indexed_seconds,
                f"its indexes and keys; recording is {f.record_seconds / f.indexed_seconds:.2f}x this",
            ),
        ]
        if f.replay_seconds is not None:
            lines.append(
                (
                    "reference: recording's SQL replayed",
                    f.events,
                    f.replay_seconds,
                    f"{f.replay_seconds / f.baseline_seconds:.2f}x baseline: SQLite's own work; the service "
                    f"layer's Python adds {(f.record_seconds - f.replay_seconds) / f.baseline_seconds:.2f}x",
                )
            )
        if f.copy_seconds is not None:
            copy_ratio = f.record_seconds / f.copy_seconds
            lines.append(("baseline: COPY, plain table", f.events, f.copy_seconds, f"reference: {copy_ratio:.2f}x"))
        met = "MET" if ratio <= RECORD_GOAL_RATIO else "NOT MET"
        lines += [
            (
                f"record_events, batches of {f.batch}",
                f.events,
                f.record_seconds,
                f"{ratio:.2f}x baseline (goal <= {RECORD_GOAL_RATIO:.0f}x: {met}); {f.record_cpu:.2f} s CPU here",
            ),
            (
                "verify_ledger_chains",
                f.events,
                f.verify_seconds,
                f"goal >= {VERIFY_GOAL_RATE:,}/s: {'MET' if verify_rate >= VERIFY_GOAL_RATE else 'NOT MET'}"
                f"; {'ok' if f.chain_ok else 'FAILED'}; {f.verify_cpu:.2f} s CPU here and in workers",
            ),
            (
                "reference: verify chains, 1 process",
                f.events,
                f.verify_serial_seconds,
                f"the default uses up to {_cpus()} processes",
            ),
            (
                "verify_states (replay every pair)",
                f.events,
                f.states_seconds,
                f"{f.pairs:,} pairs; {'ok' if f.states_ok else 'FAILED'}",
            ),
        ]
        if f.record_server_cpu is not None:
            lines.append(
                (
                    "  record_events: server CPU",
                    f.events,
                    f.record_server_cpu,
                    "CPU seconds of PostgreSQL's processes for this database (not a wall time)",
                )
            )
        for step, count, seconds, note in lines:
            print(f"{f.database:<11} {step:<40} {count:>9,} {seconds:>9.2f} {rate(count, seconds):>11}  {note}")
        print(
            f"{'':<11} ({f.with_evidence:,} events carry evidence, {f.late:,} arrive late; "
            f"recording is {f.events / f.record_seconds:,.0f} events/s)"
        )
    for f in all_figures:
        for name, text_ in f.profiles.items():
            print(f"\n=== profile: {f.database} {name} ===\n{text_}")


def _cpu_seconds() -> float:
    """User and system CPU time of this process and of its children that have finished (worker processes)."""
    import os

    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def _server_cpu(database: Database) -> dict[int, float] | None:
    """CPU seconds so far of each PostgreSQL process serving this database (``None`` unless PostgreSQL on
    this machine). A process that ends between two readings is missed; the pooled connection does not."""
    import os

    if database.engine.dialect.name != "postgresql":
        return None
    with database.engine.connect() as connection:
        pids = (
            connection.exec_driver_sql("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
            .scalars()
            .all()
        )
    seconds: dict[int, float] = {}
    ticks = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        seconds[pid] = (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return seconds


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--database", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL, help="a PostgreSQL server where CREATE DATABASE works")
    parser.add_argument("--profile", action="store_true", help="print cProfile's top functions for each step")
    parser.add_argument(
        "--sqlite-cache-mb", type=int, default=0, help="SQLite page cache per connection (default: SQLite's 2 MB)"
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="measure each database this many times, each on a fresh database (the report adds every run's "
        "ratio and their median: one run's ratio moves with the machine's speed)",
    )
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be 1 or more")
    results: list[Figures] = []
    for _ in range(args.repeat):
        if args.database in ("sqlite", "both"):
            with tempfile.TemporaryDirectory(prefix="zgoda-bench-") as directory:
                results.append(run("sqlite", sqlite_url(Path(directory)), args))
        if args.database in ("postgresql", "both"):
            name, url = create_pg_database(args.pg_url)
            try:
                results.append(run("postgresql", url, args))
            finally:
                drop_pg_database(args.pg_url, name)
    report(results)
    if args.repeat > 1:
        report_repeats(results)
    ok = all(f.chain_ok and f.states_ok for f in results)
    return 0 if ok else 1


def report_repeats(all_figures: list[Figures]) -> None:
    """Each run's recording ratio and verifying rate, and their medians, per database."""
    print()
    for database in dict.fromkeys(f.database for f in all_figures):
        runs = [f for f in all_figures if f.database == database]
        ratios = [f.record_seconds / f.baseline_seconds for f in runs]
        cpu_ratios = [f.record_cpu / f.baseline_cpu for f in runs if f.baseline_cpu]
        rates = [f.events / f.verify_seconds for f in runs]
        ratio, rate_ = statistics.median(ratios), statistics.median(rates)
        print(
            f"{database}: {len(runs)} runs; recording {', '.join(f'{r:.2f}x' for r in ratios)} the baseline, "
            f"median {ratio:.2f}x (goal <= {RECORD_GOAL_RATIO:.0f}x: "
            f"{'MET' if ratio <= RECORD_GOAL_RATIO else 'NOT MET'}); in CPU seconds of this process "
            f"{', '.join(f'{r:.2f}x' for r in cpu_ratios)}"
        )
        replays = [f.replay_seconds / f.baseline_seconds for f in runs if f.replay_seconds is not None]
        if replays:
            print(
                f"{'':<{len(database)}}  recording's SQL replayed without Python: "
                f"{', '.join(f'{r:.2f}x' for r in replays)} the baseline, median {statistics.median(replays):.2f}x"
            )
        print(
            f"{'':<{len(database)}}  verifying {', '.join(f'{r:,.0f}' for r in rates)} events/s, median {rate_:,.0f} "
            f"(goal >= {VERIFY_GOAL_RATE:,}/s: {'MET' if rate_ >= VERIFY_GOAL_RATE else 'NOT MET'})"
        )


if __name__ == "__main__":
    sys.exit(main())
