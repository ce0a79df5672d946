"""Test databases: SQLite files or fresh PostgreSQL databases, created and dropped per use."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from sqlalchemy import create_engine, make_url, text

DEFAULT_PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def skip_or_fail(reason: str) -> None:
    """Skip on a laptop without the service; in CI a missing service is a failure, never a skip."""
    if in_ci():
        pytest.fail(f"{reason} — CI must run this test")
    pytest.skip(reason)


def main_test_database_url() -> str | None:
    """The URL the suite runs on (``ZGODA_TEST_DATABASE_URL``), or ``None`` for a SQLite file."""
    return os.environ.get("ZGODA_TEST_DATABASE_URL") or None


def pg_admin_url() -> str:
    """A URL on the PostgreSQL server with rights to create databases."""
    explicit = os.environ.get("ZGODA_TEST_PG_ADMIN_URL")
    if explicit:
        return explicit
    main = main_test_database_url()
    if main and main.startswith("postgresql"):
        return make_url(main).set(database="postgres").render_as_string(hide_password=False)
    return DEFAULT_PG_ADMIN_URL


def postgres_problem(admin_url: str) -> str | None:
    """Why PostgreSQL cannot be used, or ``None`` when it answers."""
    try:
        engine = create_engine(_psycopg(admin_url), connect_args={"connect_timeout": 3})
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        engine.dispose()
    except Exception as error:  # noqa: BLE001 - any failure means "not reachable"
        return f"PostgreSQL is not reachable at {make_url(admin_url).render_as_string()}: {error.__class__.__name__}"
    return None


def _psycopg(url: str) -> str:
    return "postgresql+psycopg://" + url.split("://", 1)[1] if url.startswith("postgresql://") else url


def create_postgres_database(admin_url: str) -> str:
    name = f"zgoda_t_{uuid.uuid4().hex[:12]}"
    engine = create_engine(_psycopg(admin_url), isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return make_url(_psycopg(admin_url)).set(database=name).render_as_string(hide_password=False)


def drop_postgres_database(admin_url: str, url: str) -> None:
    name = make_url(url).database
    engine = create_engine(_psycopg(admin_url), isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


def new_database(backend: str, tmp_dir: Path) -> str:
    """A fresh, empty database URL on ``backend`` (``sqlite`` or ``postgresql``)."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_dir / f'zgoda-{uuid.uuid4().hex[:8]}.db'}"
    problem = postgres_problem(pg_admin_url())
    if problem:
        skip_or_fail(problem)
    return create_postgres_database(pg_admin_url())


def current_backend() -> str:
    main = main_test_database_url()
    return "postgresql" if main and main.startswith("postgresql") else "sqlite"
