"""Engine, sessions and the declarative base.

SQLite is the embedded default: WAL mode, foreign keys on, and every transaction
opened with ``BEGIN IMMEDIATE`` so concurrent writers queue on the busy timeout
instead of failing half-way (the same choice as Django's ``transaction_mode``).
PostgreSQL is the production database; both run the whole test suite.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import JSON, DateTime, Dialect, Engine, MetaData, create_engine, event, exc
from sqlalchemy.engine import Connection
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Stores aware datetimes as naive UTC and gives them back aware, on every database."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given where an aware one is required")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return value.replace(tzinfo=UTC) if value is not None else None

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any] | None:
        """On SQLite, the text SQLAlchemy's processors would store, written by one C call per value
        (``isoformat``) instead of two Python steps (the ledger binds a few timestamps per event)."""
        general = super().bind_processor(dialect)
        if not self._sqlites_own_format():
            return general
        assert general is not None

        def process(value: Any) -> Any:
            if type(value) is datetime and value.tzinfo is UTC:
                # "YYYY-MM-DD HH:MM:SS.ffffff+00:00": SQLite's storage format and the offset, cut off
                return value.isoformat(" ", "microseconds")[:-6]
            return general(value)  # None, another zone, a naive value (refused), anything else

        return process

    def result_processor(self, dialect: Dialect, coltype: object) -> Callable[[Any], Any] | None:
        """On SQLite, SQLAlchemy's own parsing (``datetime.fromisoformat``) and the time zone in one step."""
        general = super().result_processor(dialect, coltype)
        if not self._sqlites_own_format():
            return general
        assert general is not None
        parse = datetime.fromisoformat

        def process(value: Any) -> Any:
            if type(value) is str:
                return parse(value).replace(tzinfo=UTC)
            return general(value)

        return process

    def _sqlites_own_format(self) -> bool:
        """Whether this is SQLite's DATETIME (the dialect's copy of this type) with its default storage
        format and parsing, which the fast processors above reproduce; anything else keeps SQLAlchemy's."""
        impl = self.impl_instance
        return getattr(impl, "_storage_format", None) == _SQLITE_FORMAT and not getattr(impl, "_reg", None)


_SQLITE_FORMAT = "%(year)04d-%(month)02d-%(day)02d %(hour)02d:%(minute)02d:%(second)02d.%(microsecond)06d"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime, dict[str, Any]: JSON}


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine configured for Zgoda on SQLite or PostgreSQL."""
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if is_sqlite(url):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, **kwargs)
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
        return engine
    engine = create_engine(url, **kwargs)
    event.listen(engine.pool, "checkin", _remember_checkin)
    event.listen(engine.pool, "checkout", _ping_if_idle)
    return engine


MAX_BIGINT = 2**63 - 1
"""The largest integer either database binds in a query (SQLite's INTEGER, PostgreSQL's BIGINT)."""
MAX_INTEGER = 2**31 - 1
"""The largest value an INTEGER column (ids included) holds on PostgreSQL."""
NUL = "\x00"
"""The one character PostgreSQL's text refuses (SQLite keeps it): input holding it is refused or replaced."""


IDLE_PING_SECONDS = 10.0


def _remember_checkin(_dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
    record.info["checked_in_at"] = time.monotonic()


def _ping_if_idle(dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: Any) -> None:
    """Ping a pooled connection only if it sat idle a while (``pool_pre_ping`` pings on every checkout).

    A connection used a moment ago is alive; one idle for long may have been dropped by a restart or a
    firewall. A failed ping makes the pool discard it and connect again (SQLAlchemy's pessimistic
    disconnect handling), so the request never sees the dead connection.
    """
    last = record.info.get("checked_in_at")
    if last is None or time.monotonic() - last < IDLE_PING_SECONDS:
        return
    try:
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        dbapi_connection.rollback()
    except Exception as error:  # any failure: the connection is not usable
        raise exc.DisconnectionError(str(error)) from error


SQLITE_CHECKPOINT_PAGES = 10_000  # WAL pages before a commit copies them into the database file


def _sqlite_on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    dbapi_connection.isolation_level = None  # we emit BEGIN ourselves
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    # A 32 MB page cache (the default is 2 MB) and a checkpoint every 10,000 WAL pages (40 MB; the default
    # is 1,000): index and state pages written by batch after batch stay in memory, and are copied to the
    # database file (and synced) a tenth as often. Recording 200,000 consent events in batches of 1,000:
    # 4.50x -> 3.77x a plain insert (benchmarks/ledger.py, docs/benchmarks.md). No mmap: mapped pages
    # would count in the resident memory that the import's memory limit is about.
    cursor.execute("PRAGMA cache_size=-32000")
    cursor.execute(f"PRAGMA wal_autocheckpoint={SQLITE_CHECKPOINT_PAGES}")
    cursor.close()


READS_ONLY = "zgoda_reads_only"  # a connection execution option: the transaction will only read


def _sqlite_on_begin(connection: Connection) -> None:
    # A transaction that only reads begins DEFERRED: in WAL mode it then takes no lock, so a long read
    # (the sending gate's query) does not hold up writers (the group commit) for its whole length.
    deferred = connection.get_execution_options().get(READS_ONLY, False)
    connection.exec_driver_sql("BEGIN" if deferred else "BEGIN IMMEDIATE")


class Database:
    """An engine and its session factory; the outermost layer owns each transaction."""

    def __init__(self, engine: Engine, factory: sessionmaker[Session] | None = None) -> None:
        self.engine = engine
        self.factory = factory or sessionmaker(bind=engine, expire_on_commit=False)

    @classmethod
    def from_url(cls, url: str) -> Database:
        return cls(make_engine(url))

    @property
    def bind(self) -> Engine | Connection:
        """What sessions run on: the engine, or one connection (tests run everything in an outer transaction)."""
        bind = self.factory.kw.get("bind")
        return bind if isinstance(bind, Connection) else self.engine

    @property
    def single_connection(self) -> bool:
        """Whether every session shares one connection, which then must not be used by two threads at once."""
        return isinstance(self.bind, Connection)

    @contextmanager
    def transaction(self, *, reads_only: bool = False) -> Iterator[Session]:
        """A session whose work is committed on success and rolled back on any error.

        ``reads_only``: the work only reads, and on SQLite takes no write lock (a write in it may then
        fail with "database is locked" where another writer got there first).
        """
        session = self.factory()
        if reads_only and self.engine.dialect.name == "sqlite" and not self.single_connection:
            session.connection(execution_options={READS_ONLY: True})
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()
