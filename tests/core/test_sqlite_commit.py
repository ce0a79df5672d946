"""COMMIT without releasing the interpreter lock (the SQLite sender's commit point)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from zgoda.core import sqlite_commit

pytestmark = pytest.mark.skipif(sqlite_commit._LIBRARY is None, reason="not a CPython whose sqlite3 layout is known")


def _open(path: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    return connection


def test_the_commit_is_durable_and_the_module_sees_no_transaction_left(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    writer, reader = _open(path), _open(path)
    writer.execute("CREATE TABLE t (x INTEGER)")
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("INSERT INTO t VALUES (1)")
    assert reader.execute("SELECT count(*) FROM t").fetchone() == (0,)
    assert sqlite_commit.ready(writer)
    assert sqlite_commit.commit_holding_gil(writer)
    assert not writer.in_transaction
    assert reader.execute("SELECT count(*) FROM t").fetchone() == (1,)
    writer.commit()  # what SQLAlchemy then does: nothing left to commit, no error
    assert not sqlite_commit.commit_holding_gil(writer)  # nothing open: the caller's usual path
    writer.close()
    reader.close()


def test_what_it_cannot_handle_is_left_to_the_caller(tmp_path: Path) -> None:
    memory = sqlite3.connect(":memory:", isolation_level=None)
    memory.execute("BEGIN")
    assert not sqlite_commit.ready(memory)
    assert not sqlite_commit.commit_holding_gil(memory)  # no file to check the handle against
    assert memory.in_transaction
    memory.close()
    assert not sqlite_commit.commit_holding_gil(memory)  # closed: no handle
    assert not sqlite_commit.commit_holding_gil(object())


def test_a_refused_commit_raises_and_leaves_the_transaction_open(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    writer = _open(path)
    writer.execute("PRAGMA foreign_keys=ON")
    writer.execute("CREATE TABLE p (id INTEGER PRIMARY KEY)")
    writer.execute("CREATE TABLE c (p INTEGER REFERENCES p(id) DEFERRABLE INITIALLY DEFERRED)")
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("INSERT INTO c VALUES (42)")  # checked at COMMIT: refused
    with pytest.raises(sqlite3.OperationalError, match="COMMIT failed"):
        sqlite_commit.commit_holding_gil(writer)
    assert writer.in_transaction
    writer.rollback()
    assert writer.execute("SELECT count(*) FROM c").fetchone() == (0,)
    writer.close()
