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

import hashlib
import json
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import count, groupby
from json.encoder import encode_basestring
from operator import itemgetter
from typing import Any, ClassVar

from sqlalchemy import Boolean, DateTime, Integer, String, Table, literal, select, text, type_coerce
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


def link_rows(
    session: Session, model: type[ChainedEntry], rows: Sequence[MutableMapping[str, Any]], *, chain_key: int | None
) -> None:
    """Lock the chain, then give each row (a dict of column values) its ``seq``, ``prev_hash`` and ``hash``.

    The caller inserts the rows in the same transaction (bulk inserts use this directly).
    """
    if not rows:
        return
    lock_chain(session, model, chain_key)
    seq, previous = chain_head(session, model, chain_key)
    for row in rows:
        seq += 1
        row["seq"] = seq
    sha256 = hashlib.sha256
    for row, payload_text in zip(rows, _payload_texts(model, rows), strict=True):
        row["prev_hash"] = previous
        row["hash"] = previous = sha256((previous + "\n" + payload_text).encode()).hexdigest()


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
    session: Session, model: type[ChainedEntry], *, chain_key: int | None = None, all_chains: bool = True
) -> list[ChainReport]:
    """Walk one model's chains in order and report, per chain, the first entry that does not match."""
    session.flush()
    verifier = _Verifier(session, model)
    reports: list[ChainReport] = []
    report: ChainReport | None = None
    with unscoped(session):
        for key, columns in verifier.runs(verifier.chain_filter(chain_key) if not all_chains else None):
            if report is None or report.chain_key != key:
                report = ChainReport(chain=model.chain_name, chain_key=key)
                reports.append(report)
            if report.problem is None and not verifier.check_run(report, columns):
                verifier.find_problem(report)
    if not all_chains and not reports:
        reports.append(ChainReport(chain=model.chain_name, chain_key=chain_key))
    return reports


_VERIFY_BATCH = 5000
_CURSOR_NUMBERS = count(1)


class _Verifier:
    """Checks a model's chains column by column, a few thousand entries at a time.

    Entries are read with the driver's own cursor (no ORM or Row objects) and each payload column is
    turned into canonical JSON fragments with one list comprehension, so the per-entry work left in
    Python is one string format and one SHA-256. The fragments are those ``canonical_json`` writes;
    anything unusual (a ``None``, a year before 1000, a type the fast paths do not know) goes through
    ``canonical_json`` itself. When a batch does not check out, :meth:`find_problem` walks that chain
    entry by entry to name the first entry that is wrong and why.
    """

    def __init__(self, session: Session, model: type[ChainedEntry]) -> None:
        self.session = session
        self.model = model
        self.table: Table = model.__table__  # type: ignore[attr-defined]
        self.dialect = session.get_bind().dialect
        self.names, template, self.encoders = _payload_layout(model, naive_utc=True)
        self.template = "%s\n" + template  # "<previous hash>\n{canonical JSON}": what an entry's SHA-256 covers
        self.key_at = self.names.index(model.chain_key_field) if model.chain_key_field else None
        self.seq_at = self.names.index("seq")
        self.columns: list[Any] = []
        self.processors: list[Callable[[Any], Any] | None] = []
        for name in self.names:
            column: Any = self.table.c[name]
            if isinstance(column.type, UTCDateTime):  # read the naive UTC the database holds
                column = type_coerce(column, DateTime())
            self.columns.append(column)
            self.processors.append(column.type.dialect_impl(self.dialect).result_processor(self.dialect, None))

    def _sql(self, *extra: Any, where: Any = None, since_seq: int | None = None) -> str:
        table = self.table
        statement = select(*extra, table.c.prev_hash, table.c.hash, *self.columns)
        if where is not None:
            statement = statement.where(where)
        if since_seq is not None:
            statement = statement.where(table.c.seq >= since_seq)
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
        connection = self.session.connection().connection
        if self.dialect.name == "postgresql":
            cursor = connection.cursor(name=f"zgoda_verify_{next(_CURSOR_NUMBERS)}")
        else:
            cursor = connection.cursor()
        try:
            cursor.execute(sql)
            while batch := cursor.fetchmany(_VERIFY_BATCH):
                yield batch
        finally:
            cursor.close()

    def _decoded(self, rows: Sequence[Any], offset: int) -> list[list[Any]]:
        """The rows as columns, each value as SQLAlchemy would return it; payload columns from ``offset``."""
        columns = [list(column) for column in zip(*rows, strict=True)]
        for position, process in enumerate(self.processors):
            if process is not None:
                columns[offset + position] = [process(value) for value in columns[offset + position]]
        return columns

    def runs(self, where: Any) -> Iterator[tuple[Any, list[list[Any]]]]:
        """(chain key, columns: prev_hash, hash, payload...) for consecutive entries of one chain."""
        sql = self._sql(where=where)
        key_at = self.key_at
        for batch in self._rows(sql):
            if key_at is None:
                yield None, self._decoded(batch, 2)
                continue
            for key, group in groupby(batch, key=itemgetter(2 + key_at)):
                yield key, self._decoded(list(group), 2)

    def check_run(self, report: ChainReport, columns: list[list[Any]]) -> bool:
        """Fold a run of entries into ``report``; ``False`` (and ``report`` untouched) if one is wrong."""
        prevs, hashes, payload = columns[0], columns[1], columns[2:]
        count = len(hashes)
        first = report.entries + 1
        if payload[self.seq_at] != list(range(first, first + count)):
            return False
        expected_prevs = [report.head_hash, *hashes[:-1]]
        if prevs != expected_prevs:
            return False
        fragments = [encode(column) for encode, column in zip(self.encoders, payload, strict=True)]
        texts = map(self.template.__mod__, zip(prevs, *fragments, strict=True))
        sha256 = hashlib.sha256
        computed = [sha256(text.encode()).hexdigest() for text in texts]
        if computed != hashes:
            return False
        report.entries += count
        report.head_hash = hashes[-1]
        return True

    def find_problem(self, report: ChainReport) -> None:
        """Walk ``report``'s chain from its last good entry and record the first that is wrong."""
        sql = self._sql(self.table.c.id, where=self.chain_filter(report.chain_key), since_seq=report.entries + 1)
        for batch in self._rows(sql):
            columns = self._decoded(batch, 3)
            for index in range(len(batch)):
                one = [[column[index]] for column in columns[1:]]
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


def _json_strings(values: Sequence[Any]) -> list[str]:
    encode = encode_basestring
    return [
        encode(value) if type(value) is str else "null" if value is None else _CANONICAL.encode(_canonical_value(value))
        for value in values
    ]


def _json_ints(values: Sequence[Any]) -> list[str]:
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
