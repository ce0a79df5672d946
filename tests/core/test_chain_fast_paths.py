"""The shortcuts that build canonical JSON faster give exactly the bytes ``canonical_json`` gives.

Verification reads SQLite's stored timestamp texts and 0/1 booleans as they are, and encodes each
distinct string of a column once; the evidence digest fills a prepared template. Each is compared with
the plain path on arbitrary values: a difference would make stored hashes fail to verify (or, worse,
let a changed value pass).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Boolean, DateTime
from sqlalchemy.dialects import sqlite

from zgoda.consent.ledger import EVIDENCE_FIELDS, evidence_json
from zgoda.core.chain import (
    _json_bools,
    _json_naive_utc,
    _json_sqlite_bools,
    _json_sqlite_datetimes,
    _json_strings,
)
from zgoda.core.crypto import canonical_json

_DIALECT = sqlite.dialect()


def _processor(found: Callable[[Any], Any] | None) -> Callable[[Any], Any]:
    assert found is not None
    return found


_STORE = _processor(DateTime().dialect_impl(_DIALECT).bind_processor(_DIALECT))
_READ = _processor(DateTime().dialect_impl(_DIALECT).result_processor(_DIALECT, None))
_READ_BOOL = _processor(Boolean().dialect_impl(_DIALECT).result_processor(_DIALECT, None))

moments = st.datetimes(  # a day inside datetime's range: every zone below must convert to UTC
    min_value=datetime(1, 1, 2),
    max_value=datetime(9999, 12, 30),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-7, minutes=-30))]),
)
json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text()


@settings(max_examples=500, deadline=None)
@given(moment=moments)
def test_sqlite_timestamp_texts_give_the_canonical_fragment(moment: datetime) -> None:
    naive = moment.astimezone(UTC).replace(tzinfo=None)
    stored = _STORE(naive)  # what SQLAlchemy writes to SQLite
    assert isinstance(stored, str)
    [fast] = _json_sqlite_datetimes(_READ, [stored])
    assert fast == _json_naive_utc([_READ(stored)])[0] == _json_naive_utc([naive])[0]
    assert fast == canonical_json(moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"))


@settings(max_examples=500, deadline=None)
@given(
    stored=st.one_of(
        st.text(),
        st.from_regex(r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}[ T][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,7})?\Z"),
        st.integers(),
        st.none(),
    )
)
def test_any_other_stored_timestamp_is_read_as_sqlalchemy_reads_it(stored: Any) -> None:
    """Texts in the stored shape give the fragment of the datetime SQLAlchemy reads; others go through it."""
    try:
        expected = _json_naive_utc([_READ(stored)])[0]
    except (ValueError, TypeError):
        return  # unreadable: verification fails on it either way
    assert _json_sqlite_datetimes(_READ, [stored, stored]) == [expected, expected]


@given(values=st.lists(st.one_of(st.sampled_from([0, 1, 2, -1, 1.0, 0.0, True, False, None, "1"]), st.integers())))
def test_sqlite_booleans_are_read_as_sqlalchemy_reads_them(values: list[Any]) -> None:
    assert _json_sqlite_bools(_READ_BOOL, values) == _json_bools([_READ_BOOL(v) for v in values])


@settings(max_examples=300, deadline=None)
@given(
    values=st.lists(
        st.one_of(json_scalars, st.sampled_from(["grant", "grant", "api", ""]), st.lists(st.text(), max_size=2)),
        max_size=20,
    )
)
def test_string_columns_encode_each_value_as_canonical_json(values: list[Any]) -> None:
    assert _json_strings(values) == [canonical_json(v) for v in values]


@settings(max_examples=300, deadline=None)
@given(fields=st.fixed_dictionaries({}, optional=dict.fromkeys(EVIDENCE_FIELDS, json_scalars)))
def test_evidence_json_is_canonical_json(fields: dict[str, Any]) -> None:
    assert evidence_json(fields) == canonical_json({name: fields.get(name) for name in EVIDENCE_FIELDS})
