"""UTCDateTime's SQLite fast path writes exactly the text SQLAlchemy's own processors would."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import create_engine
from sqlalchemy.dialects.postgresql import psycopg
from sqlalchemy.types import TypeDecorator

from zgoda.core.db import UTCDateTime

VALUES = [
    datetime(2026, 1, 1, tzinfo=UTC),  # no microseconds: still written with six zeros
    datetime(2026, 11, 30, 8, 53, 1, 123456, tzinfo=UTC),
    datetime(999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),  # a three-digit year, zero-padded
    datetime(1, 1, 1, tzinfo=UTC),
    datetime(2026, 3, 29, 3, 30, tzinfo=ZoneInfo("Europe/Warsaw")),  # another zone: converted to UTC
    datetime(2026, 5, 1, 1, 2, 3, 4, tzinfo=timezone(timedelta(hours=-3))),
    None,
]


def _processors() -> tuple[object, object]:
    dialect = create_engine("sqlite://").dialect
    column_type = UTCDateTime().dialect_impl(dialect)
    return column_type.bind_processor(dialect), TypeDecorator.bind_processor(column_type, dialect)


@pytest.mark.parametrize("value", VALUES, ids=str)
def test_sqlite_binds_the_text_sqlalchemy_would(value: datetime | None) -> None:
    fast, general = _processors()
    assert fast is not general
    assert fast(value) == general(value)  # type: ignore[operator]
    if value is not None:
        assert fast(value) == value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f").rjust(26, "0")  # type: ignore[operator]


def test_a_naive_datetime_is_still_refused() -> None:
    fast, _ = _processors()
    with pytest.raises(ValueError, match="naive datetime"):
        fast(datetime(2026, 1, 1))  # type: ignore[operator]


def test_stored_values_read_back_as_the_same_instants() -> None:
    from sqlalchemy import Column, Integer, MetaData, Table, insert, select

    engine = create_engine("sqlite://")
    table = Table("t", MetaData(), Column("id", Integer, primary_key=True), Column("at", UTCDateTime()))
    table.metadata.create_all(engine)
    with engine.begin() as connection:
        connection.execute(insert(table), [{"at": value} for value in VALUES])
        stored = [row.at for row in connection.execute(select(table.c.at).order_by(table.c.id))]
    assert stored == VALUES  # aware datetimes compare as instants


def test_postgresql_keeps_the_general_processor() -> None:
    dialect = psycopg.dialect()
    column_type = UTCDateTime().dialect_impl(dialect)
    process = column_type.bind_processor(dialect)
    assert process is not None
    assert process(datetime(2026, 1, 1, tzinfo=ZoneInfo("Europe/Warsaw"))) == datetime(2025, 12, 31, 23, 0)


@pytest.mark.parametrize(
    "stored",
    ["2026-11-30 08:53:01.123456", "2026-01-01 00:00:00.000000", "2026-01-01 00:00:00", "0999-12-31 23:59:59.5", None],
)
def test_sqlite_reads_the_value_sqlalchemy_would(stored: str | None) -> None:
    dialect = create_engine("sqlite://").dialect
    column_type = UTCDateTime().dialect_impl(dialect)
    fast = column_type.result_processor(dialect, None)
    general = TypeDecorator.result_processor(column_type, dialect, None)
    assert fast is not None and general is not None and fast is not general
    assert fast(stored) == general(stored)
    if stored is not None:
        assert fast(stored).tzinfo is UTC
