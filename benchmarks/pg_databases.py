"""Throwaway PostgreSQL databases for the benchmarks (imported by the scripts beside this file)."""

from __future__ import annotations

import uuid

from sqlalchemy import create_engine, make_url, text


def create_pg_database(server_url: str, prefix: str = "zgoda_bench_") -> tuple[str, str]:
    """A new, empty database on the server of ``server_url``: its name (``prefix`` + random) and its URL."""
    admin = make_url(server_url).set(database="postgres")
    name = f"{prefix}{uuid.uuid4().hex[:10]}"
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return name, admin.set(database=name).render_as_string(hide_password=False)


def drop_pg_database(server_url: str, name: str) -> None:
    """Drop ``name``, closing whatever still uses it."""
    engine = create_engine(make_url(server_url).set(database="postgres"), isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()
