"""Audience benchmark: the eligible audience of a list and of a segment, counted and streamed, against hand-written SQL.

Run: ``uv run python benchmarks/audience.py [--contacts N] [--database sqlite|postgresql|both] [--repeat R]``

Setup (not timed): a fresh database (a SQLite file in a temporary directory, or ``CREATE DATABASE`` a
unique name on ``--pg-url``, dropped at the end), migrated with ``zgoda.core.migrate.upgrade``; a
workspace, a source, and two user-defined email purposes next to ``email_marketing`` (made with
``consent.purposes.create_purpose``). Then, in bulk (Core ``executemany`` on SQLite, ``COPY`` on
PostgreSQL, and ``INSERT ... SELECT`` inside the database):

- N contacts (default 1,000,000) with an address, its keyed hash (``core.keys.address_hasher``), a
  first name and the attribute ``city``: "Kraków" for every other contact, else one of four others;
- one list holding every contact;
- a consent state for each contact and each of the three purposes, written **directly** into
  ``consent_states`` (3N rows; recording 3N events through ``consent.ledger.record_events`` would take
  most of an hour here). Every state names a real ledger event (one grant per purpose, recorded through
  the ledger), so the foreign keys hold; the gate reads only the state row. For ``email_marketing``,
  every tenth contact is withdrawn, the rest granted (a 730-day validity from a grant a month ago);
  the other two purposes get their own mix (granted, withdrawn, pending);
- 2% of the contacts suppressed: ``Suppression`` rows with their address hash (and one address on the
  platform-wide list);
- one segment: ``city = Kraków`` AND consent to ``email_marketing`` granted (``audiences.service.create_segment``).

On PostgreSQL the tables are then analysed (``ANALYZE``), as autovacuum would do within a minute of
such a load; on SQLite they are not (nothing in Zgoda runs ``ANALYZE`` there, so that is how production
runs).

Measured, for the list and for the segment, each against ``email_marketing``:

- (a) counting: ``eligibility.preview()`` (one grouped query giving the count for every reason) against
  a hand-written ``SELECT count(*)`` over the same tables with the same conditions;
- (b) streaming: every row of ``eligibility.stream_eligible()`` against the same hand-written query
  returning ``(id, email)`` in id order, fetched through the same driver in batches of 5,000.

The numbers must agree exactly (the count, and the very list of rows); the benchmark fails loudly if
not. Each query runs ``--repeat`` times (default 3), alternating with its baseline; the fastest run of
each counts. Goal (the issue): each within 2x of its baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pg_databases import create_pg_database, drop_pg_database  # beside this script
from sqlalchemy import Connection, insert, select, text

from zgoda.accounts import service as accounts
from zgoda.audiences import eligibility
from zgoda.audiences import service as audiences
from zgoda.consent import ledger, purposes, sources
from zgoda.consent.models import ConsentState, EventType, Method, Purpose, Source
from zgoda.contacts.models import Contact
from zgoda.core.db import Database
from zgoda.core.keys import address_hasher
from zgoda.core.migrate import upgrade
from zgoda.core.tenancy import Actor, bind_scope
from zgoda.feedback.models import PlatformSuppression

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/"
GOAL_RATIO = 2.0
CITIES = ("Kraków", "Gdańsk", "Poznań", "Wrocław", "Łódź")
CHUNK = 50_000
LOAD_AT_START = os.getloadavg()[0]


class Mismatch(Exception):
    """Zgoda's answer and the hand-written query's differ."""


@dataclass
class Timing:
    audience: str  # "list" or "segment"
    step: str  # "count" or "stream"
    rows: int = 0
    seconds: list[float] = field(default_factory=list)
    baseline: list[float] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return min(self.seconds) / min(self.baseline)


@dataclass
class DatabaseRun:
    database: str
    contacts: int
    seed_seconds: float = 0.0
    breakdown: dict[str, dict[str, int]] = field(default_factory=dict)
    timings: list[Timing] = field(default_factory=list)


# --- setup --------------------------------------------------------------------------------------


@dataclass
class Seeded:
    workspace_id: int
    list_id: int
    segment_id: int
    purpose_id: int


def seed(database: Database, count: int) -> Seeded:
    now = datetime.now(UTC)
    with database.transaction() as session:
        bind_scope(session, workspace_id=None, actor=Actor.system("benchmark"))
        workspace_id = accounts.create_workspace(session, slug="bench-audience", name="Księgarnia").id
        bind_scope(session, workspace_id=workspace_id, actor=Actor.system("benchmark"))
        source_id = sources.create_source(session, name="Sklep", kind="shop").id
        email = purposes.purpose_by_key(session, "email_marketing")
        purposes.update_purpose(session, purpose_id=email.id, validity_days=730)
        extra = [
            purposes.create_purpose(session, key="email_premiery", name="Zapowiedzi premier", channel="email"),
            purposes.create_purpose(session, key="email_spotkania", name="Spotkania autorskie", channel="email"),
        ]
        purpose_ids = [email.id, *(p.id for p in extra)]
        list_id = audiences.create_list(session, name="Wszyscy").id
        hash_address = address_hasher(session)
        first = Contact(email="pierwszy@example.pl", first_name="Pierwszy", attributes={"city": "Kraków"})
        first.source_id = source_id
        first.ref = secrets.token_hex(16)
        session.add(first)
        session.flush()
        # one real grant per purpose through the ledger: the event every bulk-written state names
        event_ids = ledger.record_events(
            session,
            [
                ledger.NewEvent(
                    contact=first,
                    purpose=purpose,
                    event_type=EventType.GRANT.value,
                    method=Method.IMPORT.value,
                    source=session.get(Source, source_id),
                    occurred_at=now - timedelta(days=30),
                )
                for purpose in session.scalars(select(Purpose).where(Purpose.id.in_(purpose_ids)))
            ],
        )
        purpose_event = dict(
            session.execute(
                select(ConsentState.purpose_id, ConsentState.event_id).where(ConsentState.contact_id == first.id)
            ).all()
        )
        assert len(purpose_event) == 3
        assert set(purpose_event.values()) <= set(event_ids)
        first_id = first.id
        session.add(PlatformSuppression(address_hash=hash_address("nikt@example.org"), reason="operator"))

    for start in range(1, count, CHUNK):
        rows = []
        for number in range(start, min(count, start + CHUNK)):
            address = f"czytelnik{number}@example.pl"
            rows.append(
                {
                    "workspace_id": workspace_id,
                    "ref": secrets.token_hex(16),
                    "email": address,
                    "email_hash": hash_address(address),
                    "phone": None,
                    "first_name": f"Czytelnik{number}",
                    "last_name": None,
                    "attributes": {"city": CITIES[0] if number % 2 == 0 else CITIES[1 + (number // 2) % 4]},
                    "source_id": source_id,
                    "created_at": now,
                    "updated_at": now,
                }
            )
        bulk_insert(database, Contact.__table__, rows)

    granted = now - timedelta(days=30)
    expires = granted + timedelta(days=730)
    with database.engine.begin() as connection:
        # every contact on the one list
        connection.execute(
            text(
                "INSERT INTO list_members (workspace_id, list_id, contact_id, source_id, added_by, added_at) "
                "SELECT workspace_id, :list_id, id, source_id, 'benchmark', created_at FROM contacts "
                "WHERE workspace_id = :w"
            ),
            {"list_id": list_id, "w": workspace_id},
        )
        # the states, all three purposes, written directly (see the docstring)
        mixes = {
            purpose_ids[0]: "CASE WHEN id % 10 = 0 THEN 'withdrawn' ELSE 'granted' END",
            purpose_ids[1]: "CASE WHEN id % 3 = 0 THEN 'granted' WHEN id % 3 = 1 THEN 'withdrawn' ELSE 'pending' END",
            purpose_ids[2]: "CASE WHEN id % 4 = 0 THEN 'granted' ELSE 'withdrawn' END",
        }
        for purpose_id, status in mixes.items():
            connection.execute(
                text(
                    "INSERT INTO consent_states (workspace_id, contact_id, purpose_id, status, legal_basis, event_id, "
                    "decided_at, last_occurred_at, expires_at, updated_at) "
                    f"SELECT workspace_id, id, :purpose_id, {status}, 'consent', :event_id, :granted, :granted, "
                    ":expires, :now "
                    "FROM contacts WHERE workspace_id = :w AND id <> :first"
                ),
                {
                    "purpose_id": purpose_id,
                    "event_id": purpose_event[purpose_id],
                    "granted": _plain(connection, granted),
                    "expires": _plain(connection, expires) if purpose_id == purpose_ids[0] else None,
                    "now": _plain(connection, now),
                    "w": workspace_id,
                    "first": first_id,
                },
            )
        # 2% suppressed in the workspace
        connection.execute(
            text(
                "INSERT INTO suppressions (workspace_id, address_hash, reason, detail, hint, created_by, created_at) "
                "SELECT workspace_id, email_hash, 'hard_bounce', '', NULL, 'benchmark', :now FROM contacts "
                "WHERE workspace_id = :w AND id % 50 = 7"
            ),
            {"w": workspace_id, "now": _plain(connection, now)},
        )
    with database.transaction() as session:
        bind_scope(session, workspace_id=workspace_id, actor=Actor.system("benchmark"))
        segment_id = audiences.create_segment(
            session,
            name="Kraków, z zgodą",
            definition={
                "match": "all",
                "rules": [
                    {"field": "attribute", "key": "city", "op": "eq", "value": "Kraków"},
                    {"field": "consent", "purpose": "email_marketing", "op": "is", "value": "granted"},
                ],
            },
        ).id
    if database.engine.dialect.name == "postgresql":
        with database.engine.begin() as connection:
            connection.execute(text("ANALYZE"))
    return Seeded(workspace_id, list_id, segment_id, purpose_ids[0])


def _plain(connection: Connection, moment: datetime) -> Any:
    """A timestamp as the ``UTCDateTime`` columns store it (naive UTC on both databases)."""
    value = moment.astimezone(UTC).replace(tzinfo=None)
    return value.isoformat(sep=" ") if connection.dialect.name == "sqlite" else value


def bulk_insert(database: Database, table: Any, rows: list[dict[str, Any]]) -> None:
    """``COPY`` on PostgreSQL (values through each column type's bind processing), else one executemany."""
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


# --- the hand-written baseline ------------------------------------------------------------------


def baseline_sql(dialect: str, *, segment: bool, count: bool) -> str:
    """The eligible audience as one would write it by hand: joins and anti-joins, no CASE."""
    city = "c.attributes ->> 'city'" if dialect == "postgresql" else "json_extract(c.attributes, '$.city')"
    source = (
        "FROM contacts c"
        if segment
        else "FROM list_members m JOIN contacts c ON c.id = m.contact_id AND m.list_id = :list_id"
    )
    where = [
        "c.workspace_id = :w",
        "c.email IS NOT NULL",
        "c.erased_at IS NULL",
        "c.restricted_at IS NULL",
        "s.status = 'granted'",
        "(s.expires_at IS NULL OR s.expires_at > :now)",
        "s.legal_basis NOT IN ('legitimate_interest', 'contract')",
        "NOT EXISTS (SELECT 1 FROM suppressions x WHERE x.workspace_id = :w AND x.address_hash = c.email_hash)",
        "NOT EXISTS (SELECT 1 FROM platform_suppressions p WHERE p.address_hash = c.email_hash)",
    ]
    if segment:
        where.append(f"lower({city}) = 'kraków'")  # the segment's consent rule is the gate's own condition
    columns = "count(*)" if count else "c.id, c.email"
    return (
        f"SELECT {columns} {source} "
        "JOIN consent_states s ON s.contact_id = c.id AND s.purpose_id = :purpose_id "
        f"WHERE {' AND '.join(where)}" + ("" if count else " ORDER BY c.id")
    )


# --- the measurements ---------------------------------------------------------------------------


def timed(function: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = function()
    return time.perf_counter() - started, result


def measure(name: str, url: str, args: argparse.Namespace) -> DatabaseRun:
    run = DatabaseRun(database=name, contacts=args.contacts)
    upgrade(url)
    database = Database.from_url(url)
    try:
        print(f"[{name}] seeding {args.contacts:,} contacts ...", flush=True)
        started = time.perf_counter()
        seeded = seed(database, args.contacts)
        run.seed_seconds = time.perf_counter() - started
        print(f"[{name}] seeded in {run.seed_seconds:.0f} s", flush=True)
        dialect = database.engine.dialect.name

        for kind in ("list", "segment"):
            with database.transaction() as session:
                bind_scope(session, workspace_id=seeded.workspace_id, actor=Actor.system("benchmark"))
                audience = eligibility.audience_for(
                    session,
                    purpose_id=seeded.purpose_id,
                    list_id=seeded.list_id if kind == "list" else None,
                    segment_id=seeded.segment_id if kind == "segment" else None,
                )
            now = datetime.now(UTC)
            params = {
                "w": seeded.workspace_id,
                "list_id": seeded.list_id,
                "purpose_id": seeded.purpose_id,
                "now": now.astimezone(UTC).replace(tzinfo=None)
                if dialect == "postgresql"
                else now.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" "),
            }
            count_sql = text(baseline_sql(dialect, segment=kind == "segment", count=True))
            rows_sql = text(baseline_sql(dialect, segment=kind == "segment", count=False))

            def zgoda_count(audience: eligibility.Audience = audience) -> eligibility.Preview:
                with database.transaction() as session:
                    bind_scope(session, workspace_id=seeded.workspace_id, actor=Actor.system("benchmark"))
                    return eligibility.preview(session, audience)

            def zgoda_stream(audience: eligibility.Audience = audience) -> list[tuple[int, str]]:
                with database.transaction() as session:
                    bind_scope(session, workspace_id=seeded.workspace_id, actor=Actor.system("benchmark"))
                    return list(eligibility.stream_eligible(session, audience))

            def hand_count(sql: Any = count_sql, params: dict[str, Any] = params) -> int:
                with database.engine.connect() as connection:
                    return int(connection.execute(sql, params).scalar_one())

            def hand_stream(sql: Any = rows_sql, params: dict[str, Any] = params) -> list[tuple[int, str]]:
                with database.engine.connect() as connection:
                    result = connection.execution_options(yield_per=5000).execute(sql, params)
                    return [(contact_id, str(email)) for contact_id, email in result]

            counting = Timing(kind, "count")
            streaming = Timing(kind, "stream")
            for _ in range(args.repeat):
                seconds, expected = timed(hand_count)
                counting.baseline.append(seconds)
                seconds, preview = timed(zgoda_count)
                counting.seconds.append(seconds)
                if preview.eligible != expected:
                    raise Mismatch(f"{kind}: preview() says {preview.eligible:,} eligible, the SQL {expected:,}")
                counting.rows = expected
                run.breakdown[kind] = {"total": preview.total, "eligible": preview.eligible} | {
                    reason: n for reason, n in preview.excluded.items() if n
                }
                print(
                    f"[{name}] {kind} count: preview {counting.seconds[-1]:.2f} s, "
                    f"SQL {counting.baseline[-1]:.2f} s ({expected:,})",
                    flush=True,
                )

                seconds, hand_rows = timed(hand_stream)
                streaming.baseline.append(seconds)
                seconds, zgoda_rows = timed(zgoda_stream)
                streaming.seconds.append(seconds)
                if zgoda_rows != hand_rows:
                    missing = set(hand_rows) - set(zgoda_rows)
                    extra = set(zgoda_rows) - set(hand_rows)
                    raise Mismatch(
                        f"{kind}: stream_eligible() gave {len(zgoda_rows):,} rows, the SQL {len(hand_rows):,} "
                        f"({len(missing)} missing, {len(extra)} extra, or a different order)"
                    )
                if len(hand_rows) != expected:
                    raise Mismatch(f"{kind}: {len(hand_rows):,} rows streamed but {expected:,} counted")
                streaming.rows = len(hand_rows)
                print(
                    f"[{name}] {kind} stream: stream_eligible {streaming.seconds[-1]:.2f} s, "
                    f"SQL {streaming.baseline[-1]:.2f} s",
                    flush=True,
                )
                del hand_rows, zgoda_rows
            run.timings += [counting, streaming]
    finally:
        database.engine.dispose()
    return run


# --- databases and the report -------------------------------------------------------------------


def report(runs: list[DatabaseRun], args: argparse.Namespace) -> None:
    print()
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(
        f"Python {platform.python_version()}, {cpus} CPUs, load average {LOAD_AT_START:.1f} at start and "
        f"{os.getloadavg()[0]:.1f} at the end; {args.contacts:,} contacts; fastest of {args.repeat} runs"
    )
    header = f"{'database':<11} {'audience':<9} {'step':<26} {'rows':>9} {'zgoda s':>8} {'SQL s':>7}  ratio"
    print(header)
    print("-" * (len(header) + 30))
    for run in runs:
        for t in run.timings:
            step = "count: preview()" if t.step == "count" else "stream: stream_eligible()"
            met = "MET" if t.ratio <= GOAL_RATIO else "NOT MET"
            print(
                f"{run.database:<11} {t.audience:<9} {step:<26} {t.rows:>9,} {min(t.seconds):>8.2f} "
                f"{min(t.baseline):>7.2f}  {t.ratio:.2f}x (goal <= {GOAL_RATIO:.0f}x: {met})"
            )
        for kind, figures in run.breakdown.items():
            print(f"{'':<11} {kind}: {figures}")
        print(f"{'':<11} (setup, not timed: {run.seed_seconds:.0f} s)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--database", choices=["sqlite", "postgresql", "both"], default="postgresql")
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL, help="a PostgreSQL server where CREATE DATABASE works")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each query (the fastest counts)")
    args = parser.parse_args(argv)
    runs: list[DatabaseRun] = []
    try:
        if args.database in ("postgresql", "both"):
            name, url = create_pg_database(args.pg_url)
            try:
                runs.append(measure("postgresql", url, args))
            finally:
                drop_pg_database(args.pg_url, name)
        if args.database in ("sqlite", "both"):
            with tempfile.TemporaryDirectory(prefix="zgoda-audience-bench-") as folder:
                runs.append(measure("sqlite", f"sqlite:///{Path(folder) / 'audience.db'}", args))
    except Mismatch as error:
        print(f"\nMISMATCH: {error}", file=sys.stderr)
        report(runs, args)
        return 1
    report(runs, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
