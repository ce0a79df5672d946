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

from collections.abc import Iterable, Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import String, select, text
from sqlalchemy.orm import Mapped, Session, mapped_column

from zgoda.core.clock import isoformat_z
from zgoda.core.crypto import canonical_json, sha256_hex
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
        return isoformat_z(value)
    return value


def chain_payload(model: type[ChainedEntry], values: Mapping[str, Any]) -> dict[str, Any]:
    """The dictionary whose canonical JSON an entry's hash covers."""
    payload = {name: _canonical_value(values[name]) for name in model.chain_fields}
    payload["seq"] = values["seq"]
    return payload


def entry_hash(prev_hash: str, payload: Mapping[str, Any]) -> str:
    """SHA-256 over the previous hash, a newline and the canonical JSON of the payload."""
    return sha256_hex(prev_hash + "\n" + canonical_json(payload))


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
        row["prev_hash"] = previous
        row["hash"] = previous = entry_hash(previous, chain_payload(model, row))


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
        entry.hash = previous = entry_hash(previous, chain_payload(model, _EntryValues(entry)))
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
    table = model.__table__  # type: ignore[attr-defined]
    key_name = model.chain_key_field
    columns = {"id", "seq", "prev_hash", "hash", *model.chain_fields}
    if key_name:
        columns.add(key_name)
    statement = select(*[table.c[name] for name in sorted(columns)])
    order = [table.c.seq]
    if key_name:
        order.insert(0, table.c[key_name])
        if not all_chains:
            statement = statement.where(table.c[key_name] == chain_key)
    statement = statement.order_by(*order).execution_options(yield_per=5000)
    reports: list[ChainReport] = []
    report: ChainReport | None = None
    with unscoped(session):
        rows: Iterable[Any] = session.execute(statement).mappings()
        for row in rows:
            key = row[key_name] if key_name else None
            if report is None or report.chain_key != key:
                report = ChainReport(chain=model.chain_name, chain_key=key)
                reports.append(report)
            if report.problem is not None:
                continue
            _check_entry(model, report, row)
    if not all_chains and not reports:
        reports.append(ChainReport(chain=model.chain_name, chain_key=chain_key))
    return reports


def _check_entry(model: type[ChainedEntry], report: ChainReport, row: Mapping[str, Any]) -> None:
    expected_seq = report.entries + 1
    seq = row["seq"]
    if seq != expected_seq:
        reason = (
            f"entry #{expected_seq} is missing (the next entry found is #{seq})"
            if seq > expected_seq
            else f"entry #{seq} appears twice or out of order"
        )
        report.problem = ChainProblem(seq=seq, entry_id=row["id"], reason=reason)
        return
    if row["prev_hash"] != report.head_hash:
        report.problem = ChainProblem(
            seq=seq,
            entry_id=row["id"],
            reason=f"entry #{seq} does not follow the entry before it: an earlier entry was changed, removed or reordered",  # noqa: E501
        )
        return
    if entry_hash(row["prev_hash"], chain_payload(model, row)) != row["hash"]:
        report.problem = ChainProblem(
            seq=seq, entry_id=row["id"], reason=f"entry #{seq} was altered after it was written"
        )
        return
    report.entries = seq
    report.head_hash = row["hash"]


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
