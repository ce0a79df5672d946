"""Hash chains: the shared mechanism behind the audit log and the consent ledger.

Every entry belongs to one chain (per workspace, or the single platform chain),
carries a gap-free sequence number, the hash of the entry before it and the
SHA-256 of its own canonical content. Appends take a per-chain lock (an advisory
transaction lock on PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` already serialises
writers), so concurrent writers queue instead of forking the chain. The database
refuses UPDATE and DELETE on chained tables with triggers, and :func:`verify_chain`
finds the first entry that was changed, removed or reordered.
"""

from __future__ import annotations

import gc
import hashlib
import json
import multiprocessing
import os
import re
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from itertools import count, groupby
from json.encoder import encode_basestring
from operator import itemgetter, methodcaller
from pathlib import Path
from typing import Any, ClassVar

from sqlalchemy import (
    Boolean,
    DateTime,
    Engine,
    Integer,
    String,
    Table,
    func,
    literal,
    literal_column,
    select,
    text,
    type_coerce,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Mapped, Session, mapped_column

from zgoda.core.clock import isoformat_z
from zgoda.core.crypto import canonical_json, sha256_hex
from zgoda.core.db import UTCDateTime
from zgoda.core.tenancy import unscoped

GENESIS_HASH = "0" * 64


class ChainedEntry:
    """Mixin for append-only, hash-chained tables.

    Subclasses name the columns their hash covers in ``chain_fields`` and the
    column that separates chains in ``chain_key_field`` (``None``: one chain).
    """

    chain_name: ClassVar[str]
    chain_lock_id: ClassVar[int]
    chain_fields: ClassVar[tuple[str, ...]]
    chain_key_field: ClassVar[str | None] = "workspace_id"

    seq: Mapped[int] = mapped_column()
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


def _canonical_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return _utc_text(value)
    return value


def chain_payload(model: type[ChainedEntry], values: Mapping[str, Any]) -> dict[str, Any]:
    """The dictionary whose canonical JSON an entry's hash covers."""
    payload = {name: _canonical_value(values[name]) for name in model.chain_fields}
    payload["seq"] = values["seq"]
    return payload


def entry_hash(prev_hash: str, payload: Mapping[str, Any]) -> str:
    """SHA-256 over the previous hash, a newline and the canonical JSON of the payload."""
    return sha256_hex(prev_hash + "\n" + canonical_json(payload))


# -- the same canonical JSON, fast ----------------------------------------------------------------------
#
# Appending and verifying hash every entry. Two things make that cheap without changing a byte:
# one prebuilt encoder with exactly the settings of ``canonical_json`` (``json.dumps`` builds a new
# encoder per call), and timestamps formatted by ``datetime.isoformat`` rather than ``strftime``.
# ``tests/consent/test_properties.py`` checks the equality on arbitrary values.

_CANONICAL = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def _utc_text(moment: datetime) -> str:
    """:func:`isoformat_z`, faster for the usual case (aware UTC, four-digit year)."""
    if moment.tzinfo is UTC and moment.year >= 1000:
        return moment.isoformat()[:-6] + ("Z" if moment.microsecond else ".000000Z")
    return isoformat_z(moment)


def _naive_utc_text(moment: datetime | None) -> str | None:
    """The same for a naive datetime that holds UTC (as the database stores it; see ``core.db``)."""
    if moment is None:
        return None
    if moment.tzinfo is None and moment.year >= 1000:
        return moment.isoformat() + ("Z" if moment.microsecond else ".000000Z")
    return isoformat_z(moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC))


def _payload_json(model: type[ChainedEntry], values: Mapping[str, Any]) -> str:
    """``canonical_json(chain_payload(model, values))``."""
    return _CANONICAL.encode(chain_payload(model, values))


def _hash_text(prev_hash: str, payload_json: str) -> str:
    return hashlib.sha256((prev_hash + "\n" + payload_json).encode()).hexdigest()


def lock_chain(session: Session, model: type[ChainedEntry], chain_key: int | None) -> None:
    """Serialise appends to one chain until the transaction ends."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(
            text("SELECT pg_advisory_xact_lock(:kind, :key)"),
            {"kind": model.chain_lock_id, "key": chain_key or 0},
        )


def chain_head(session: Session, model: type[ChainedEntry], chain_key: int | None) -> tuple[int, str]:
    """The last sequence number and hash of a chain, or ``(0, GENESIS_HASH)``."""
    statement = select(model.seq, model.hash).order_by(model.seq.desc()).limit(1)
    if model.chain_key_field is not None:
        statement = statement.where(getattr(model, model.chain_key_field) == chain_key)
    with unscoped(session):
        row = session.execute(statement).first()
    return (row[0], row[1]) if row else (0, GENESIS_HASH)


def hash_rows(
    model: type[ChainedEntry], rows: Sequence[MutableMapping[str, Any]], *, after: tuple[int, str]
) -> tuple[int, str]:
    """Give each row its ``seq``, ``prev_hash`` and ``hash``, continuing a chain whose head is ``after``
    (``(seq, hash)``, as :func:`chain_head` returns it; the caller holds the chain's lock). Returns the
    new head."""
    seq, previous = after
    for row in rows:
        seq += 1
        row["seq"] = seq
    sha256 = hashlib.sha256
    for row, payload_text in zip(rows, _payload_texts(model, rows), strict=True):
        row["prev_hash"] = previous
        row["hash"] = previous = sha256((previous + "\n" + payload_text).encode()).hexdigest()
    return seq, previous


def _payload_texts(model: type[ChainedEntry], rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """``canonical_json(chain_payload(model, row))`` of each row, built column by column."""
    names, template, encoders = _payload_layout(model, naive_utc=False)
    fragments = [encode([row[name] for row in rows]) for name, encode in zip(names, encoders, strict=True)]
    return list(map(template.__mod__, zip(*fragments, strict=True)))


_Encoder = Callable[[Sequence[Any]], list[str]]
_LAYOUTS: dict[tuple[type[ChainedEntry], bool], tuple[list[str], str, list[_Encoder]]] = {}


def _payload_layout(model: type[ChainedEntry], *, naive_utc: bool) -> tuple[list[str], str, list[_Encoder]]:
    """The payload's keys (sorted), a %-template of its JSON text and an encoder per key.

    ``naive_utc``: timestamps come as the naive UTC the database stores, not as aware datetimes.
    """
    layout = _LAYOUTS.get((model, naive_utc))
    if layout is None:
        table: Table = model.__table__  # type: ignore[attr-defined]
        names = sorted({*model.chain_fields, "seq"})
        template = "{" + ",".join(_CANONICAL.encode(name) + ":%s" for name in names) + "}"
        encoders: list[_Encoder] = []
        for name in names:
            column_type = table.c[name].type
            if isinstance(column_type, UTCDateTime):
                encoders.append(_json_naive_utc if naive_utc else _json_aware_utc)
            elif isinstance(column_type, Boolean):
                encoders.append(_json_bools)
            elif isinstance(column_type, Integer):
                encoders.append(_json_ints)
            elif isinstance(column_type, String):
                encoders.append(_json_strings)
            else:
                encoders.append(_json_any)
        layout = _LAYOUTS[(model, naive_utc)] = (names, template, encoders)
    return layout


def append_entries(session: Session, entries: Sequence[ChainedEntry], *, chain_key: int | None) -> None:
    """Number, link and hash ``entries`` (all of one model) and add them to the session."""
    if not entries:
        return
    model = type(entries[0])
    lock_chain(session, model, chain_key)
    seq, previous = chain_head(session, model, chain_key)
    for entry in entries:
        seq += 1
        entry.seq = seq
        entry.prev_hash = previous
        entry.hash = previous = _hash_text(previous, _payload_json(model, _EntryValues(entry)))
    session.add_all(entries)
    session.flush()


class _EntryValues(Mapping[str, Any]):
    """Reads an entry's attributes as a mapping, so rows and objects hash the same way."""

    def __init__(self, entry: ChainedEntry) -> None:
        self._entry = entry

    def __getitem__(self, key: str) -> Any:
        return getattr(self._entry, key)

    def __iter__(self) -> Iterator[str]:
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError


@dataclass(frozen=True)
class ChainProblem:
    seq: int
    entry_id: int
    reason: str


@dataclass
class ChainReport:
    chain: str
    chain_key: int | None
    entries: int = 0
    head_hash: str = GENESIS_HASH
    problem: ChainProblem | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


def verify_chain(
    session: Session,
    model: type[ChainedEntry],
    *,
    chain_key: int | None = None,
    all_chains: bool = True,
    workers: int | None = None,
    alongside: Callable[[], object] | None = None,
) -> list[ChainReport]:
    """Walk one model's chains in order and report, per chain, the first entry that does not match.

    Long chains are checked by ``workers`` processes (default: one per available CPU), each reading a
    range of entries through its own connection, when that is provably the session's own view of the
    data (see :func:`_parallel_view`); the result is the same as a walk in this process, which is
    what happens otherwise and, to name the first bad entry, for any chain that does not check out.
    ``alongside`` runs in this process meanwhile (or first, when there are no workers).
    """
    fresh = _fresh_session(session)
    session.flush()
    if alongside is not None:
        alongside = _once(alongside)
    verifier = _Verifier(session, model)
    reports: list[ChainReport] | None = None
    with unscoped(session):
        where = verifier.chain_filter(chain_key) if not all_chains else None
        if workers != 1:
            reports = verifier.in_parallel(where, workers or _available_cpus(), fresh, alongside)
        if reports is None:
            if alongside is not None:
                alongside()
            reports = verifier.walk(where)
    if not all_chains and not reports:
        reports.append(ChainReport(chain=model.chain_name, chain_key=chain_key))
    return reports


def _once(function: Callable[[], object]) -> Callable[[], object]:
    done: list[object] = []

    def run() -> object:
        if not done:
            done.append(function())
        return done[0]

    return run


PARALLEL_MIN_ENTRIES = 20_000
"""Below this many entries one process verifies (starting workers would cost more than it saves)."""
_VERIFY_BATCH = 5000
_CURSOR_NUMBERS = count(1)


def _available_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _fresh_session(session: Session) -> bool:
    """Whether the session has not begun a transaction of its own on an engine, with nothing to flush.

    Then nothing it could read is uncommitted, which is what other connections need to see the same data
    on SQLite (whose transactions start with ``BEGIN IMMEDIATE``, so no one else commits meanwhile).
    """
    return (
        isinstance(session.get_bind(), Engine)
        and not session.in_transaction()
        and not (session.new or session.dirty or session.deleted)
    )


@dataclass(frozen=True)
class _Segment:
    """Entries ``lo..hi`` of one chain (``None``: from the chain's first entry / to its last)."""

    key: Any
    lo: int | None
    hi: int | None
    sql: str


@dataclass(frozen=True)
class _SegmentResult:
    ok: bool
    count: int = 0
    first_seq: int = 0
    first_prev: str = ""
    last_seq: int = 0
    last_hash: str = ""


class _Verifier:
    """Checks a model's chains a few thousand entries at a time.

    Entries are read with the driver's own cursor (no ORM or Row objects). Where the database can write
    the text an entry's hash covers (:func:`_entry_text_sql`), each row brings that one text, and Python
    hashes it; a chain that does not check out that way is checked again the plain way (below), which
    then alone decides. The plain way reads the payload columns and turns each into canonical JSON
    fragments with one list comprehension, so the per-entry work left in Python is one string format
    and one SHA-256. The fragments are those ``canonical_json`` writes; anything unusual (a ``None``, a
    year before 1000, a type the fast paths do not know) goes through ``canonical_json`` itself. When a
    batch does not check out, :meth:`find_problem` walks that chain entry by entry to name the first
    entry that is wrong and why.
    """

    def __init__(self, session: Session, model: type[ChainedEntry]) -> None:
        self.session = session
        self.model = model
        self.table: Table = model.__table__  # type: ignore[attr-defined]
        self.dialect = session.get_bind().dialect
        self.names, template, encoders = _payload_layout(model, naive_utc=True)
        self.template = "%s\n" + template  # "<previous hash>\n{canonical JSON}": what an entry's SHA-256 covers
        self.key_at = self.names.index(model.chain_key_field) if model.chain_key_field else None
        self.seq_at = self.names.index("seq")
        self.columns: list[Any] = []
        self.encoders: list[_Encoder] = []  # raw driver values -> canonical JSON fragments
        sqlite = self.dialect.name == "sqlite"
        for name, encode in zip(self.names, encoders, strict=True):
            column: Any = self.table.c[name]
            if isinstance(column.type, UTCDateTime):  # read the naive UTC the database holds
                column = type_coerce(column, DateTime())
            self.columns.append(column)
            process = column.type.dialect_impl(self.dialect).result_processor(self.dialect, None)
            if process is None:
                self.encoders.append(encode)
            elif sqlite and encode is _json_naive_utc:
                self.encoders.append(partial(_json_sqlite_datetimes, process))
            elif sqlite and encode is _json_bools:
                self.encoders.append(partial(_json_sqlite_bools, process))
            else:
                self.encoders.append(partial(_json_processed, process, encode))
        self._entry_text: str | bool | None = False  # not decided yet

    def entry_text(self) -> str | None:
        """SQL for the text each entry's hash covers, written by the database; ``None``: read the columns."""
        if self._entry_text is False:
            sql = _entry_text_sql(self.dialect, self.table, self.names, self.template)
            if sql is not None and not _database_quotes_like_json(self.session.connection()):
                sql = None
            self._entry_text = sql
        assert self._entry_text is not True
        return self._entry_text

    def _sql(
        self,
        *extra: Any,
        where: Any = None,
        since_seq: int | None = None,
        until_seq: int | None = None,
        entry_text: str | None = None,
    ) -> str:
        """The query reading entries in order: (extra..., prev_hash, hash, payload...), or with ``entry_text``
        (prev_hash, hash, seq, [chain key,] text)."""
        table = self.table
        if entry_text is None:
            statement = select(*extra, table.c.prev_hash, table.c.hash, *self.columns)
        else:
            key = [table.c[self.model.chain_key_field]] if self.model.chain_key_field else []
            text_column: Any = literal_column(entry_text).label("entry_text")
            statement = select(*extra, table.c.prev_hash, table.c.hash, table.c.seq, *key, text_column)
        if where is not None:
            statement = statement.where(where)
        if since_seq is not None:
            statement = statement.where(table.c.seq >= literal(since_seq))
        if until_seq is not None:
            statement = statement.where(table.c.seq <= literal(until_seq))
        order = [table.c.seq]
        if self.model.chain_key_field:
            order.insert(0, table.c[self.model.chain_key_field])
        compiled = statement.order_by(*order).compile(dialect=self.dialect, compile_kwargs={"literal_binds": True})
        return str(compiled)

    def chain_filter(self, chain_key: int | None) -> Any:
        """The condition selecting one chain (``None`` for a model with a single chain)."""
        key_name = self.model.chain_key_field
        if key_name is None:
            return None
        column = self.table.c[key_name]
        return column.is_(None) if chain_key is None else column == literal(int(chain_key))

    def _rows(self, sql: str) -> Iterator[Sequence[Any]]:
        """Batches of raw rows from the driver (a server-side cursor on PostgreSQL)."""
        return _fetch(self.session.connection().connection, self.dialect.name, sql)

    def runs(self, where: Any, entry_text: str | None = None) -> Iterator[tuple[Any, list[Sequence[Any]]]]:
        """(chain key, raw columns) for consecutive entries of one chain: prev_hash, hash, payload...; or with
        ``entry_text``, prev_hash, hash, seq, [chain key,] text."""
        sql = self._sql(where=where, entry_text=entry_text)
        key_at = self.key_at
        for batch in self._rows(sql):
            if key_at is None:
                yield None, _transposed(batch)
                continue
            for key, group in groupby(batch, key=itemgetter(3 if entry_text else 2 + key_at)):
                yield key, _transposed(list(group))

    def walk(self, where: Any) -> list[ChainReport]:
        """Verify the chains ``where`` selects in this process, reading through the session.

        With the database's entry texts when it can write them; a chain that does not check out that way
        is walked again the plain way, whose report (its first bad entry, or none) is the one kept.
        """
        entry_text = self.entry_text()
        if entry_text is None:
            return self.walk_plainly(where)
        reports: list[ChainReport] = []
        report: ChainReport | None = None
        settled = False  # this chain's report came from the plain walk
        for key, columns in self.runs(where, entry_text):
            if report is None or report.chain_key != key:
                report = ChainReport(chain=self.model.chain_name, chain_key=key)
                reports.append(report)
                settled = False
            if not settled and not self.check_texts(report, columns):
                walked = self.walk_plainly(self.chain_filter(key))
                if walked:
                    reports[-1] = report = walked[0]
                settled = True
        return reports

    def walk_plainly(self, where: Any) -> list[ChainReport]:
        """:meth:`walk` from the payload columns, encoded here."""
        reports: list[ChainReport] = []
        report: ChainReport | None = None
        for key, columns in self.runs(where):
            if report is None or report.chain_key != key:
                report = ChainReport(chain=self.model.chain_name, chain_key=key)
                reports.append(report)
            if report.problem is None and not self.check_run(report, columns):
                self.find_problem(report)
        return reports

    def check_texts(self, report: ChainReport, columns: list[Sequence[Any]]) -> bool:
        """:meth:`check_run` for columns with the database's entry texts."""
        if not _texts_hold(columns, report.entries + 1, report.head_hash):
            return False
        report.entries += len(columns[1])
        report.head_hash = columns[1][-1]
        return True

    def check_run(self, report: ChainReport, columns: list[Sequence[Any]]) -> bool:
        """Fold a run of entries into ``report``; ``False`` (and ``report`` untouched) if one is wrong."""
        count = len(columns[0])
        if not _links_hold(self, columns, report.entries + 1, report.head_hash):
            return False
        report.entries += count
        report.head_hash = columns[1][-1]
        return True

    def find_problem(self, report: ChainReport) -> None:
        """Walk ``report``'s chain from its last good entry and record the first that is wrong."""
        sql = self._sql(self.table.c.id, where=self.chain_filter(report.chain_key), since_seq=report.entries + 1)
        for batch in self._rows(sql):
            columns = _transposed(batch)
            for index in range(len(batch)):
                one: list[Sequence[Any]] = [[column[index]] for column in columns[1:]]
                seq = one[2 + self.seq_at][0]
                if seq == report.entries + 1 and one[0][0] == report.head_hash and self.check_run(report, one):
                    continue
                report.problem = _problem(report.entries, report.head_hash, seq, columns[0][index], one[0][0])
                return
        # Only if rows changed between the two reads (PostgreSQL reads committed data per statement).
        report.problem = ChainProblem(
            seq=report.entries + 1,
            entry_id=0,
            reason=f"entries after #{report.entries} changed while they were being verified; verify again",
        )

    # -- in parallel ------------------------------------------------------------------------------------

    def in_parallel(
        self, where: Any, workers: int, fresh: bool, alongside: Callable[[], object] | None
    ) -> list[ChainReport] | None:
        """The reports, from ``workers`` processes verifying ranges of entries; ``None`` if not possible here.

        Each process checks its ranges exactly as :meth:`check_run` does (sequence numbers, links,
        hashes) and returns the first ``prev_hash`` and last ``hash`` it read; a chain is sound when
        every range is and each range's first ``prev_hash`` is the hash the range before it ends with.
        A chain that is not sound is walked again here, through the session, to name its first bad entry.
        """
        if workers < 2 or "fork" not in multiprocessing.get_all_start_methods():
            return None
        sizes = self._chain_sizes(where)
        total = sum(entries for _, entries, _ in sizes)
        if total < PARALLEL_MIN_ENTRIES:
            return None
        view = _parallel_view(self.session, fresh)
        if view is None:
            return None
        parts = self._segments(sizes, workers)
        global _JOB
        _JOB = _Job(self, view)
        gc.freeze()  # the workers must never collect (and so finalise) objects they inherit, connections above all
        try:
            with ProcessPoolExecutor(len(parts), mp_context=multiprocessing.get_context("fork")) as pool:
                futures = [pool.submit(_verify_segments, part) for part in parts]
                if alongside is not None:
                    alongside()
                results = [future.result() for future in futures]
        except Exception:  # noqa: BLE001 - a worker could not connect or died: verify here instead
            return None
        finally:
            _JOB = None
            gc.unfreeze()
        by_chain: dict[Any, list[_SegmentResult]] = {}
        for part, part_results in zip(parts, results, strict=True):
            for segment, result in zip(part, part_results, strict=True):
                by_chain.setdefault(segment.key, []).append(result)
        reports: list[ChainReport] = []
        for key, entries, last_seq in sizes:
            report = ChainReport(chain=self.model.chain_name, chain_key=key)
            if not _stitch(report, by_chain.get(key, []), entries, last_seq):
                walked = self.walk_plainly(self.chain_filter(key))
                report = walked[0] if walked else report
            reports.append(report)
        return reports

    def _chain_sizes(self, where: Any) -> list[tuple[Any, int, int]]:
        """(chain key, entries, last seq) of each chain, in the order :meth:`walk` visits them."""
        table = self.table
        key_name = self.model.chain_key_field
        key = table.c[key_name] if key_name else literal(None)
        statement = select(key, func.count(), func.max(table.c.seq))
        if where is not None:
            statement = statement.where(where)
        if key_name:
            statement = statement.group_by(key).order_by(key)
        return [(row[0], row[1], row[2]) for row in self.session.execute(statement) if row[1]]

    def _segments(self, sizes: list[tuple[Any, int, int]], workers: int) -> list[list[_Segment]]:
        """The chains cut into ``workers`` parts of about equal size, by sequence number.

        A part's first range of a chain starts at the chain's first entry or at a given seq; its last
        ends at a given seq or reads to the chain's end (so entries outside ``1..last seq`` are read too).
        """
        total = sum(last for _, _, last in sizes)
        share = -(-total // workers)
        parts: list[list[_Segment]] = [[] for _ in range(workers)]
        offset = 0  # entries of earlier chains
        entry_text = self.entry_text()
        for key, _, last in sizes:
            where = self.chain_filter(key)
            start = 1
            while start <= last:
                part = min((offset + start - 1) // share, workers - 1)
                end = min(last, (part + 1) * share - offset) if part < workers - 1 else last
                lo = None if start == 1 else start
                hi = None if end == last else end
                sql = self._sql(where=where, since_seq=lo, until_seq=hi, entry_text=entry_text)
                parts[part].append(_Segment(key, lo, hi, sql))
                start = end + 1
            offset += last
        return [part for part in parts if part]


def _links_hold(verifier: _Verifier | _Job, columns: list[Sequence[Any]], first: int, head: str) -> bool:
    """Whether raw columns (prev_hash, hash, payload...) are entries ``first, first + 1...`` after ``head``."""
    prevs, hashes, payload = columns[0], columns[1], columns[2:]
    count = len(hashes)
    if list(payload[verifier.seq_at]) != list(range(first, first + count)):
        return False
    if prevs[0] != head or prevs[1:] != hashes[:-1]:
        return False
    fragments = [encode(column) for encode, column in zip(verifier.encoders, payload, strict=True)]
    texts = map(verifier.template.__mod__, zip(prevs, *fragments, strict=True))
    return list(map(_HEXDIGEST, map(hashlib.sha256, map(str.encode, texts)))) == list(hashes)


_HEXDIGEST = methodcaller("hexdigest")


def _texts_hold(columns: list[Sequence[Any]], first: int, head: str) -> bool:
    """:func:`_links_hold` for raw columns prev_hash, hash, seq, [chain key,] text (the database's entry texts).

    ``True`` only if every entry has a text (the database wrote none as NULL) and each text's SHA-256 is
    its entry's hash.
    """
    prevs, hashes, seqs, texts = columns[0], columns[1], columns[2], columns[-1]
    count = len(hashes)
    if list(seqs) != list(range(first, first + count)):
        return False
    if prevs[0] != head or prevs[1:] != hashes[:-1]:
        return False
    if None in texts:
        return False
    return list(map(_HEXDIGEST, map(hashlib.sha256, map(str.encode, texts)))) == list(hashes)


def _stitch(report: ChainReport, results: list[_SegmentResult], entries: int, last_seq: int) -> bool:
    """Fill ``report`` from its ranges' results if they are all sound and join up; ``False`` if not."""
    head = GENESIS_HASH
    seq = 0
    for result in results:
        if not result.ok or result.first_seq != seq + 1 or result.first_prev != head:
            return False
        seq, head = result.last_seq, result.last_hash
    if seq != last_seq or seq != entries:
        return False  # not the rows counted through the session: let the session's walk decide
    report.entries, report.head_hash = seq, head
    return True


def _transposed(rows: Sequence[Any]) -> list[Sequence[Any]]:
    return list(zip(*rows, strict=True))


def _fetch(connection: Any, dialect: str, sql: str) -> Iterator[Sequence[Any]]:
    """Batches of raw rows from a DB-API connection (a server-side cursor on PostgreSQL)."""
    if dialect == "postgresql":
        cursor = connection.cursor(name=f"zgoda_verify_{os.getpid()}_{next(_CURSOR_NUMBERS)}")
    else:
        cursor = connection.cursor()
    try:
        cursor.execute(sql)
        while batch := cursor.fetchmany(_VERIFY_BATCH):
            yield batch
    finally:
        cursor.close()


def _parallel_view(session: Session, fresh: bool) -> dict[str, Any] | None:
    """How worker processes connect so they see exactly what the session sees; ``None`` if they cannot.

    PostgreSQL: the session's transaction must not have written anything (no transaction id assigned);
    its snapshot is exported and every worker reads in it. SQLite (a file): the session must have
    started no transaction before verifying; it now holds ``BEGIN IMMEDIATE`` (no one else can commit)
    and has written nothing, so the committed file is what it sees.
    """
    connection = session.connection()
    dialect = connection.dialect
    if dialect.name == "postgresql" and dialect.driver == "psycopg":
        if (dialect.server_version_info or (0,)) < (13,):
            return None
        if connection.exec_driver_sql("SELECT pg_current_xact_id_if_assigned()").scalar() is not None:
            return None
        snapshot = connection.exec_driver_sql("SELECT pg_export_snapshot()").scalar()
        args, kwargs = dialect.create_connect_args(connection.engine.url)
        return {"dialect": "postgresql", "args": list(args), "kwargs": dict(kwargs), "snapshot": snapshot}
    if dialect.name == "sqlite" and fresh:
        path = connection.engine.url.database
        if not path or path == ":memory:" or path.startswith("file:") or not Path(path).is_file():
            return None
        return {"dialect": "sqlite", "path": str(Path(path).resolve())}
    return None


class _Job:
    """What a forked worker needs: how to connect, and the verifier's layout (inherited, not pickled)."""

    def __init__(self, verifier: _Verifier, view: dict[str, Any]) -> None:
        self.view = view
        self.template = verifier.template
        self.encoders = verifier.encoders
        self.seq_at = verifier.seq_at
        self.entry_texts = verifier.entry_text() is not None  # the segments' SQL reads them

    def connect(self) -> Any:
        view = self.view
        if view["dialect"] == "sqlite":
            import sqlite3

            return sqlite3.connect(f"{Path(view['path']).as_uri()}?mode=ro", uri=True)
        import psycopg

        connection = psycopg.connect(*view["args"], **view["kwargs"])
        connection.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        connection.read_only = True
        connection.execute("SET TRANSACTION SNAPSHOT %s" % _quote_literal(view["snapshot"]))  # noqa: UP031
        return connection

    def check(self, connection: Any, segment: _Segment) -> _SegmentResult:
        first = segment.lo or 1
        expected_prev: str | None = GENESIS_HASH if segment.lo is None else None
        result: _SegmentResult | None = None
        for batch in _fetch(connection, self.view["dialect"], segment.sql):
            columns = _transposed(batch)
            head = expected_prev if expected_prev is not None else columns[0][0]
            if not (_texts_hold(columns, first, head) if self.entry_texts else _links_hold(self, columns, first, head)):
                return _SegmentResult(ok=False)
            if result is None:
                result = _SegmentResult(True, 0, first, head, 0, "")
            first += len(batch)
            expected_prev = columns[1][-1]
            result = _SegmentResult(
                True, result.count + len(batch), result.first_seq, result.first_prev, first - 1, expected_prev
            )
        if result is None or (segment.hi is not None and result.last_seq != segment.hi):
            return _SegmentResult(ok=False)
        return result


_JOB: _Job | None = None


def _verify_segments(segments: list[_Segment]) -> list[_SegmentResult]:
    """In a worker process: check each segment through a connection of its own."""
    job = _JOB
    assert job is not None
    connection = job.connect()
    try:
        return [job.check(connection, segment) for segment in segments]
    finally:
        connection.close()


def _quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _problem(entries: int, head: str, seq: int, entry_id: int, prev_hash: str) -> ChainProblem:
    """Why the entry after ``entries`` verified ones (the last with hash ``head``) does not match."""
    expected_seq = entries + 1
    if seq != expected_seq:
        reason = (
            f"entry #{expected_seq} is missing (the next entry found is #{seq})"
            if seq > expected_seq
            else f"entry #{seq} appears twice or out of order"
        )
        return ChainProblem(seq=seq, entry_id=entry_id, reason=reason)
    if prev_hash != head:
        return ChainProblem(
            seq=seq,
            entry_id=entry_id,
            reason=f"entry #{seq} does not follow the entry before it: an earlier entry was changed, removed or reordered",  # noqa: E501
        )
    return ChainProblem(seq=seq, entry_id=entry_id, reason=f"entry #{seq} was altered after it was written")


# -- the text an entry's hash covers, written by the database --------------------------------------------
#
# Verifying hashes "<prev_hash>\n<canonical JSON of the payload>" for every entry. Reading sixteen payload
# columns into Python objects and encoding them there costs several times the hashing itself, so the
# SELECT asks the database to write that text, and each row brings one text instead. The database writes
# exactly the text the plain path (the encoders below) makes of the same stored values, or NULL: a value
# of another type or shape (an unexpected type in one of SQLite's dynamic columns, a timestamp not in
# SQLAlchemy's stored form or outside years 1000-9999) makes the text NULL, and a batch with a NULL text
# does not check out. A chain that does not check out is verified again the plain way, which alone
# decides (and names the first bad entry). ``tests/core/test_chain_fast_paths.py`` compares the two on
# arbitrary stored values, on both databases. Strings are quoted by the database's JSON quoting
# (SQLite's ``json_object``, PostgreSQL's ``to_json``), which :func:`_database_quotes_like_json` checks
# against Python's on every character below 0x80 and some beyond before any of this is used.

# _SQLITE_DATETIME as a GLOB pattern ("." is no wildcard there)
_SQLITE_DATETIME_GLOB = (
    "[1-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9] [0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]"
)


def _column_kind(column: Any) -> str | None:
    column_type = column.type
    if isinstance(column_type, UTCDateTime):
        return "time"
    if isinstance(column_type, Boolean):
        return "bool"
    if isinstance(column_type, Integer):
        return "int"
    if isinstance(column_type, String):
        return "str"
    return None


def _entry_text_sql(dialect: Any, table: Table, names: Sequence[str], template: str) -> str | None:
    """A SQL expression for ``template % (prev_hash, *fragments)`` of a row, or a declined text.

    ``template`` is ``"%s\n{...}"`` (:class:`_Verifier`), one ``%s`` per key of ``names`` after the
    previous hash. ``None`` when this database or a column type has no such expression.
    """
    if dialect.name not in ("sqlite", "postgresql") or template.count("%") != len(names) + 1:
        return None
    quote = dialect.identifier_preparer.quote
    kinds = [_column_kind(table.c[name]) for name in names]
    if None in kinds:
        return None
    prev_hash = quote("prev_hash")
    if dialect.name == "sqlite":  # json_object() writes canonical JSON when given the keys sorted
        guards = [_sqlite_guard(quote(name), str(kind)) for name, kind in zip(names, kinds, strict=True)]
        members = [
            f"{_quote_literal(name)}, {_sqlite_member(quote(name), str(kind))}"
            for name, kind in zip(names, kinds, strict=True)
        ]
        if list(names) != sorted(names):
            return None
        text = f"{prev_hash} || {_quote_literal(chr(10))} || json_object({', '.join(members)})"
        return f"CASE WHEN {' AND '.join(guards)} THEN {text} END"
    guards = []
    fragments = []
    for name, kind in zip(names, kinds, strict=True):
        guard, fragment = _postgresql_fragment(quote(name), str(kind))
        if guard:
            guards.append(guard)
        fragments.append(fragment)
    literals = [_quote_literal(piece) for piece in template.split("%s")]
    pieces = [prev_hash] + [part for pair in zip(literals[1:], [*fragments, ""], strict=True) for part in pair]
    text = f"concat({', '.join(piece for piece in pieces if piece)})"  # not format(): SQLAlchemy doubles a %
    if "%" in text:
        return None
    return f"CASE WHEN {' AND '.join(guards)} THEN {text} END" if guards else text


def _sqlite_guard(column: str, kind: str) -> str:
    """When a column's value in SQLite gives, in ``json_object``, the plain path's fragment.

    SQLite keeps any type in any column: strings must be text (or NULL), integers integers, booleans
    the integers 0 and 1, timestamps texts of exactly SQLAlchemy's stored form (its 26 bytes, so no text
    with a NUL after them passes), which the plain path copies in the same way (``_json_sqlite_*``).
    """
    if kind == "str":
        return f"typeof({column}) IN ('text', 'null')"
    if kind == "int":
        return f"typeof({column}) IN ('integer', 'null')"
    if kind == "bool":
        return f"({column} IS NULL OR (typeof({column}) = 'integer' AND {column} IN (0, 1)))"
    return (
        f"({column} IS NULL OR (typeof({column}) = 'text' AND length(CAST({column} AS BLOB)) = 26"
        f" AND {column} GLOB '{_SQLITE_DATETIME_GLOB}'))"
    )


def _sqlite_member(column: str, kind: str) -> str:
    """A column's value as ``json_object`` takes it (once its guard holds)."""
    if kind == "bool":
        return f"CASE {column} WHEN 1 THEN json('true') WHEN 0 THEN json('false') END"
    if kind == "time":
        return f"replace({column}, ' ', 'T') || 'Z'"
    return column


def _postgresql_fragment(column: str, kind: str) -> tuple[str, str]:
    """(condition for the whole text, fragment) of a column in PostgreSQL, whose columns hold their type.

    Timestamps (``timestamp without time zone``, naive UTC) outside years 1000-9999 (and infinities) go
    the plain way; ``to_char`` writes the others digit for digit as ``datetime.isoformat`` does.
    """
    if kind == "str":
        return "", f"coalesce(pg_catalog.to_json({column})::text, 'null')"
    if kind == "int":
        return "", f"coalesce({column}::text, 'null')"
    if kind == "bool":
        return "", f"CASE WHEN {column} THEN 'true' WHEN NOT {column} THEN 'false' ELSE 'null' END"
    return (
        f"({column} IS NULL OR ({column} >= '1000-01-01' AND {column} < '10000-01-01'))",
        f"""coalesce('"' || to_char({column}, 'YYYY-MM-DD"T"HH24:MI:SS.US') || 'Z"', 'null')""",
    )


# Every character below 0x80 (NUL only where the database can hold it), and some beyond: what JSON
# escapes, what it may or may not, and characters outside the BMP.
_QUOTING_PROBE = "".join(map(chr, range(1, 0x80))) + "\u00e9\u0105\u017c\u20ac\u2028\u2029\ufeff\U0001f600"
_QUOTING_AGREES: dict[tuple[str, Any], bool] = {}


def _database_quotes_like_json(connection: Any) -> bool:
    """Whether the database writes JSON as ``canonical_json`` does, strings above all (asked once per server)."""
    dialect = connection.dialect
    known = (dialect.name, dialect.server_version_info)
    if known not in _QUOTING_AGREES:
        if dialect.name == "sqlite":
            probe = "\x00" + _QUOTING_PROBE
            sql = "SELECT json_object('k', ?, 'i', -5, 'n', NULL, 't', json('true'), 'f', json('false'))"
            try:
                written = connection.exec_driver_sql(sql, (probe,)).scalar()
            except DBAPIError:  # built without JSON functions
                written = None
            expected = '{"k":' + encode_basestring(probe) + ',"i":-5,"n":null,"t":true,"f":false}'
        else:
            probe = _QUOTING_PROBE
            written = connection.exec_driver_sql("SELECT pg_catalog.to_json(%s::text)::text", (probe,)).scalar()
            expected = encode_basestring(probe)
        _QUOTING_AGREES[known] = written == expected
    return _QUOTING_AGREES[known]


def _json_any(values: Sequence[Any]) -> list[str]:
    encode = encode_basestring
    return [
        encode(value)
        if type(value) is str
        else int.__repr__(value)
        if type(value) is int
        else "null"
        if value is None
        else _CANONICAL.encode(_canonical_value(value))
        for value in values
    ]


# Each encoder below first looks at the types in the column: when they are the expected ones (a str
# column of str and None, an int column of int and None) the fragments come from one C-level map, or a
# table of the column's distinct values; when anything else is there (a bool, a float, a subclass, an
# unhashable value: all equal to, or hashed like, some str or int) every value goes the general way.

_NONE = type(None)


def _json_strings(values: Sequence[Any]) -> list[str]:
    kinds = set(map(type, values))
    if kinds == {str}:
        return list(map(encode_basestring, values))
    if kinds == {str, _NONE} or kinds == {_NONE}:
        known = {value: encode_basestring(value) for value in set(values) if value is not None}
        known[None] = "null"
        return list(map(known.__getitem__, values))
    encode = encode_basestring
    return [
        encode(value) if type(value) is str else "null" if value is None else _CANONICAL.encode(_canonical_value(value))
        for value in values
    ]


def _json_ints(values: Sequence[Any]) -> list[str]:
    kinds = set(map(type, values))
    if kinds == {int}:
        return list(map(int.__repr__, values))
    if kinds == {int, _NONE} or kinds == {_NONE}:
        known = {value: int.__repr__(value) for value in set(values) if value is not None}
        known[None] = "null"
        return list(map(known.__getitem__, values))
    return [
        int.__repr__(value)
        if type(value) is int
        else "null"
        if value is None
        else _CANONICAL.encode(_canonical_value(value))
        for value in values
    ]


def _json_bools(values: Sequence[Any]) -> list[str]:
    return [
        "true" if value is True else "false" if value is False else _CANONICAL.encode(_canonical_value(value))
        for value in values
    ]


def _json_aware_utc(values: Sequence[Any]) -> list[str]:
    try:
        distinct = set(values)  # a batch's rows share their recorded-at time: each instant is written once
    except TypeError:  # an unhashable value (not a timestamp): every value the general way
        return _json_aware_utc_each(values)
    if len(distinct) < len(values) // 2:
        known = dict(zip(distinct, _json_aware_utc_each(list(distinct)), strict=True))
        return list(map(known.__getitem__, values))
    return _json_aware_utc_each(values)


def _json_aware_utc_each(values: Sequence[Any]) -> list[str]:
    # Equal instants in other time zones give the same text (UTC), so a table of distinct values is exact.
    return [
        '"' + value.isoformat()[:-6] + ('Z"' if value.microsecond else '.000000Z"')
        if type(value) is datetime and value.tzinfo is UTC and value.year >= 1000
        else _CANONICAL.encode(_canonical_value(value))
        for value in values
    ]


def _json_naive_utc(values: Sequence[Any]) -> list[str]:
    return [
        '"' + value.isoformat() + ('Z"' if value.microsecond else '.000000Z"')
        if type(value) is datetime and value.tzinfo is None and value.year >= 1000
        else "null"
        if value is None
        else _CANONICAL.encode(_naive_utc_text(value) if isinstance(value, datetime) else value)
        for value in values
    ]


def _json_processed(process: Callable[[Any], Any], encode: _Encoder, values: Sequence[Any]) -> list[str]:
    return encode([process(value) for value in values])


# How SQLAlchemy stores a timestamp in SQLite: always this shape, which :func:`_json_sqlite_datetimes` turns
# into canonical JSON as text. Anything else is parsed as SQLAlchemy would read it.
_SQLITE_DATETIME = re.compile(r"[1-9][0-9]{3}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}")


def _json_sqlite_datetimes(process: Callable[[Any], Any], values: Sequence[Any]) -> list[str]:
    """``_json_naive_utc`` of SQLite's stored timestamp texts, without making datetimes.

    ``"2025-01-06 09:00:00.000000"`` gives ``"2025-01-06T09:00:00.000000Z"``, which is what
    ``_naive_utc_text`` writes for the datetime SQLAlchemy parses from it (year 1000 or later, six digits
    of microseconds); the fragment copies the stored text, so different texts give different fragments.
    """
    if set(map(type, values)) == {str}:
        match = _SQLITE_DATETIME.fullmatch
        distinct = set(values)
        if all(map(match, distinct)):
            known = {value: '"' + value[:10] + "T" + value[11:] + 'Z"' for value in distinct}
            return list(map(known.__getitem__, values))
    return _json_naive_utc([process(value) for value in values])


_SQLITE_BOOLS = {0: "false", 1: "true"}


def _json_sqlite_bools(process: Callable[[Any], Any], values: Sequence[Any]) -> list[str]:
    """``_json_bools`` of SQLite's stored 0 and 1; anything else as SQLAlchemy would read it."""
    if set(map(type, values)) == {int} and set(values) <= {0, 1}:
        return list(map(_SQLITE_BOOLS.__getitem__, values))
    return [
        "true"
        if value == 1 and type(value) is int
        else "false"
        if value == 0 and type(value) is int
        else _json_bools([process(value)])[0]
        for value in values
    ]


def append_only_ddl(table: str, dialect: str) -> list[str]:
    """Statements that make the database itself refuse UPDATE, DELETE (and TRUNCATE) on ``table``."""
    if dialect == "postgresql":
        return [
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION zgoda_refuse_change()",
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION zgoda_refuse_change()",
        ]
    return [
        f"CREATE TRIGGER {table}_no_update BEFORE UPDATE ON {table} "
        f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END",
        f"CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table} "
        f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END",
    ]


def drop_append_only_ddl(table: str, dialect: str) -> list[str]:
    """The reverse of :func:`append_only_ddl` (for downgrades and tamper tests)."""
    if dialect == "postgresql":
        return [
            f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}",
            f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}",
        ]
    return [f"DROP TRIGGER IF EXISTS {table}_no_update", f"DROP TRIGGER IF EXISTS {table}_no_delete"]


REFUSE_CHANGE_FUNCTION = """
CREATE OR REPLACE FUNCTION zgoda_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'table % is append-only', TG_TABLE_NAME USING ERRCODE = 'insufficient_privilege';
END
$$
"""
