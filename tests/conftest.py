"""Fixtures: migrate once per session, run each test in a transaction rolled back at the end."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Connection, Engine
from sqlalchemy.orm import Session, sessionmaker

from tests.support.databases import (
    current_backend,
    drop_postgres_database,
    main_test_database_url,
    new_database,
    pg_admin_url,
)
from tests.support.web import Browser
from zgoda.core.db import Database, make_engine
from zgoda.core.migrate import upgrade
from zgoda.core.settings import Settings
from zgoda.web.app import create_app

TEST_SECRET = "test-secret-key-not-for-production-0123456789"


@pytest.fixture(autouse=True, scope="session")
def _cheap_password_hashing() -> Iterator[None]:
    """Argon2 with minimal cost in tests: the suite creates hundreds of users. Production keeps the defaults."""
    from argon2 import PasswordHasher

    from zgoda.core import crypto

    original = crypto._password_hasher
    crypto._password_hasher = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    yield
    crypto._password_hasher = original


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = main_test_database_url() or f"sqlite:///{tmp_path_factory.mktemp('db') / 'zgoda-test.db'}"
    upgrade(url)
    return url


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def connection(engine: Engine) -> Iterator[Connection]:
    connection = engine.connect()
    transaction = connection.begin()
    yield connection
    transaction.rollback()
    connection.close()


@pytest.fixture
def db(connection: Connection, engine: Engine) -> Database:
    """A Database whose sessions all live inside the test's outer transaction."""
    factory = sessionmaker(bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False)
    return Database(engine, factory)


@pytest.fixture
def session(db: Database) -> Iterator[Session]:
    session = db.factory()
    yield session
    session.close()


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(data_dir=tmp_path, database_url=database_url, secret_key=TEST_SECRET, base_url="http://testserver")  # type: ignore[arg-type]


@pytest.fixture
def app(settings: Settings, db: Database) -> FastAPI:
    return create_app(settings, db)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, follow_redirects=True) as client:
        yield client


@pytest.fixture
def browser(client: TestClient, session: Session) -> Browser:
    """A workspace with one member per role, driven through its pages (tests/e2e has its own: Chromium)."""
    return Browser(client, session)


@pytest.fixture
def fresh_database_url(tmp_path: Path) -> Iterator[str]:
    """An empty database of the suite's backend, migrated, for tests that must really commit."""
    backend = current_backend()
    url = new_database(backend, tmp_path)
    upgrade(url)
    yield url
    if backend == "postgresql":
        drop_postgres_database(pg_admin_url(), url)
