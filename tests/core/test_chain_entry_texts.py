"""The entry texts the database writes for verification are the plain path's, byte for byte, or NULL.

Verification asks SQLite or PostgreSQL to write each entry's "<prev_hash>\\n<canonical JSON>" in the
SELECT (``chain._entry_text_sql``) instead of encoding sixteen columns in Python. Here arbitrary values
are stored in a table with the ledger's column types (on SQLite every storage class in every column, as
a tampered file could hold them) and the database's text is compared with the text the plain path (the
column encoders and the template) makes of the same values as the driver hands them over: equal, or
NULL (then that chain is verified the plain way). A NULL where the values are ordinary would only cost
time, so ordinary rows are checked to get a text.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Column, Connection, DateTime, MetaData, String, Table, create_engine
from sqlalchemy.dialects import sqlite
from sqlalchemy.orm import Session

import zgoda.models  # noqa: F401 - every table, so foreign-key columns know their types
from tests.support.databases import drop_postgres_database, new_database, pg_admin_url
from zgoda.consent.models import ConsentEvent
from zgoda.core import chain

_STORE_SQLITE = DateTime().dialect_impl(sqlite.dialect()).bind_processor(sqlite.dialect())


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def connection(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Connection]:
    url = new_database(request.param, tmp_path_factory.mktemp("entry-texts"))
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            _probe_table().create(connection)
            connection.commit()
            yield connection
    finally:
        engine.dispose()
        if request.param == "postgresql":
            drop_postgres_database(pg_admin_url(), url)


def _probe_table() -> Table:
    """The ledger's columns with their types (strings of any length), and no key, constraint or trigger."""
    source: Table = ConsentEvent.__table__  # type: ignore[assignment]
    columns = [Column(c.name, String() if isinstance(c.type, String) else c.type) for c in source.columns]
    return Table("entry_text_probe", MetaData(), *columns)


def _texts(connection: Connection, rows: list[dict[str, Any]]) -> list[tuple[str | None, str | None]]:
    """(the database's text, the plain path's text or ``None`` where it raises) for each row."""
    table = _probe_table()
    verifier = chain._Verifier(Session(bind=connection), ConsentEvent)
    sql = chain._entry_text_sql(connection.dialect, table, verifier.names, verifier.template)
    assert sql is not None
    assert chain._database_quotes_like_json(connection)
    names = ["id", "prev_hash", *verifier.names]
    marker = "?" if connection.dialect.name == "sqlite" else "%s"
    insert = f"INSERT INTO entry_text_probe ({', '.join(names)}) VALUES ({', '.join([marker] * len(names))})"
    try:  # in the transaction the probe began (autobegin), rolled back
        for number, row in enumerate(rows):
            connection.exec_driver_sql(insert, (number, row["prev_hash"], *(row[n] for n in verifier.names)))
        cursor = connection.connection.cursor()
        cursor.execute(f"SELECT {sql} FROM entry_text_probe ORDER BY id")
        texts = [row[0] for row in cursor.fetchall()]
        results: list[tuple[str | None, str | None]] = []
        for number, fast in enumerate(texts):
            results.append((fast, _plain_text(cursor, verifier, number)))
        cursor.close()
    finally:
        connection.rollback()
    return results


def _plain_text(cursor: Any, verifier: Any, number: int) -> str | None:
    """The plain path's text of row ``number``; ``None`` where reading or encoding it raises."""
    try:
        cursor.execute(f"SELECT prev_hash, {', '.join(verifier.names)} FROM entry_text_probe WHERE id = {number}")
        prev_hash, *values = cursor.fetchone()
        fragments = [encode([value])[0] for encode, value in zip(verifier.encoders, values, strict=True)]
        return str(verifier.template % (prev_hash, *fragments))
    except Exception:  # noqa: BLE001 - the driver (a timestamp Python cannot hold) or an encoder refused it
        return None


def _ordinary(**changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "prev_hash": "ab" * 32,
        "workspace_id": 3,
        "contact_ref": "0f" * 16,
        "purpose_id": 7,
        "event_type": "grant",
        "requires_confirmation": False,
        "legal_basis": "consent",
        "method": "web_form",
        "source_id": None,
        "notice_id": 12,
        "notice_sha256": "cd" * 32,
        "occurred_at": datetime(2025, 1, 6, 9, 0),
        "recorded_at": datetime(2025, 1, 6, 9, 0, 0, 123456),
        "actor": "Zofia Żółć <zofia@example.com>",
        "reference": 'a "quoted"\\ \n\t reference ☕ \U0001f600',
        "evidence_digest": None,
        "seq": 41,
    }
    row.update(changes)
    return row


def _stored(connection: Connection, row: dict[str, Any]) -> dict[str, Any]:
    """``row`` as SQLAlchemy would store it on this database (timestamps as SQLite's texts)."""
    if connection.dialect.name != "sqlite":
        return row
    assert _STORE_SQLITE is not None
    return {k: _STORE_SQLITE(v) if isinstance(v, datetime) else v for k, v in row.items()}


def test_ordinary_rows_get_the_plain_text(connection: Connection) -> None:
    rows = [
        _ordinary(),
        _ordinary(requires_confirmation=True, source_id=-5, notice_id=None, reference=None),
        _ordinary(occurred_at=datetime(1000, 1, 1), recorded_at=datetime(9999, 12, 31, 23, 59, 59, 999999)),
        _ordinary(actor="".join(map(chr, range(1, 0x100))), event_type=""),
    ]
    for fast, plain in _texts(connection, [_stored(connection, row) for row in rows]):
        assert plain is not None
        assert fast == plain


_NAMES = (*ConsentEvent.chain_fields, "seq")
_KINDS = {name: chain._column_kind(ConsentEvent.__table__.c[name]) for name in _NAMES}  # type: ignore[attr-defined]

_texts_sqlite_keeps = st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=12)
_datetimes = st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59, 999999))
_near_timestamps = st.from_regex(r"\A[0-9]{1,5}-[0-9]{2}-[0-9]{2}[ T][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{0,7})?\Z")


def _sqlite_values(kind: str | None) -> st.SearchStrategy[Any]:
    """Anything SQLite can hold, in any column; and the column's own kind of values more often."""
    anything = st.one_of(
        st.none(),
        st.integers(min_value=-(2**63), max_value=2**63 - 1),
        st.floats(allow_nan=False),
        st.booleans(),
        _texts_sqlite_keeps,
        st.binary(max_size=6),
    )
    own: dict[str | None, st.SearchStrategy[Any]] = {
        "str": st.one_of(_texts_sqlite_keeps, st.sampled_from(["grant", "", "ż", "\x00", "a\x00b"])),
        "int": st.one_of(st.integers(min_value=-(2**63), max_value=2**63 - 1), st.sampled_from(["5", " 5", "5.0"])),
        "bool": st.sampled_from([0, 1, 2, -1, "1", "true", 1.0, 0.5]),
        "time": st.one_of(
            _datetimes.map(lambda moment: _STORE_SQLITE(moment) if _STORE_SQLITE else moment),
            _near_timestamps,
            _datetimes.map(lambda moment: moment.isoformat()),
            st.sampled_from(
                ["2025-01-06 09:00:00.000000\x00", "2025-01-06 09:00:00.000000 ", "0999-01-01 00:00:00.000000"]
            ),
        ),
    }
    return st.one_of(own[kind], own[kind], anything)


def _postgresql_values(kind: str | None) -> st.SearchStrategy[Any]:
    """Anything PostgreSQL's column of that type can hold (no NUL in text)."""
    texts = st.text(alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=12)
    own: dict[str | None, st.SearchStrategy[Any]] = {
        "str": texts,
        "int": st.integers(min_value=-(2**31), max_value=2**31 - 1),
        "bool": st.booleans(),
        "time": st.one_of(_datetimes, st.sampled_from(["infinity", "-infinity", "0001-01-01 00:00:00 BC"])),
    }
    return st.one_of(st.none(), own[kind])


@st.composite
def _rows(draw: st.DrawFn, dialect: str) -> list[dict[str, Any]]:
    values = _sqlite_values if dialect == "sqlite" else _postgresql_values
    count = draw(st.integers(min_value=1, max_value=4))
    rows = []
    for _ in range(count):
        row = {name: draw(values(_KINDS[name])) for name in _NAMES}
        row["prev_hash"] = draw(st.sampled_from(["ab" * 32, chain.GENESIS_HASH]))
        rows.append(row)
    return rows


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_the_database_writes_the_plain_text_or_nothing(connection: Connection, data: st.DataObject) -> None:
    rows = data.draw(_rows(connection.dialect.name))
    for fast, plain in _texts(connection, rows):
        assert fast is None or fast == plain


def test_a_database_that_quotes_otherwise_is_not_used(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'q.db'}")
    monkeypatch.setattr(chain, "_QUOTING_PROBE", "\u2028")
    monkeypatch.setattr(chain, "_QUOTING_AGREES", {})
    monkeypatch.setattr(chain, "encode_basestring", lambda text: '"\\u2028"')  # as if Python escaped it
    with engine.connect() as connection:
        assert not chain._database_quotes_like_json(connection)
    engine.dispose()
    assert datetime.now(UTC)  # the module's imports stay used
