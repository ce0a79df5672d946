"""A real `zgoda worker` process over RabbitMQ runs an import queued by another process."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import select

from tests.support.databases import skip_or_fail
from zgoda.accounts import service as accounts
from zgoda.consent import sources
from zgoda.contacts.imports import service as imports
from zgoda.contacts.imports.models import ImportJob
from zgoda.contacts.models import Contact
from zgoda.core.db import Database
from zgoda.core.settings import Settings
from zgoda.core.tasks import configure
from zgoda.core.tenancy import Actor, bind_scope, unscoped

BROKER = os.environ.get("ZGODA_TEST_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")


def _broker_reachable() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5672), timeout=2):
            return True
    except OSError:
        return False


def test_a_worker_process_runs_a_queued_import(fresh_database_url: str, tmp_path: Path) -> None:
    if not _broker_reachable():
        skip_or_fail("RabbitMQ is not reachable at 127.0.0.1:5672")
    database = Database.from_url(fresh_database_url)
    with database.transaction() as session:
        bind_scope(session, workspace_id=None, actor=Actor.system("test"))
        workspace = accounts.create_workspace(session, slug="worker-test", name="Worker test")
        bind_scope(session, workspace_id=workspace.id, actor=Actor.system("test"))
        source = sources.create_source(session, name="CRM", kind="crm")
        rows = "".join(f"w{n}@example.com;tak\n" for n in range(2500))
        staged = imports.stage_file(
            io.BytesIO(f"email;email_marketing\n{rows}".encode()), filename="w.csv", data_dir=tmp_path
        )
        job_id = imports.create_job(session, source_id=source.id, staged=staged).job.id
    env = {
        **os.environ,
        "ZGODA_DATABASE_URL": fresh_database_url,
        "ZGODA_BROKER_URL": BROKER,
        "ZGODA_DATA_DIR": str(tmp_path),
        "ZGODA_SECRET_KEY": "worker-test-secret-0123456789abcdef",
    }
    celery = configure(Settings(broker_url=BROKER, secret_key="x" * 40, data_dir=tmp_path))  # type: ignore[arg-type]
    log = (tmp_path / "worker.log").open("w")
    worker = subprocess.Popen(
        [sys.executable, "-m", "zgoda", "worker", "--concurrency", "1"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        from zgoda.contacts.imports.tasks import run_import

        # an explicit connection: earlier tests in this process may have used the in-memory broker
        with celery.connection_for_write(BROKER) as connection:
            run_import.apply_async((job_id,), connection=connection)
        deadline = time.monotonic() + 90
        status = "queued"
        while time.monotonic() < deadline and status not in ("done", "failed"):
            time.sleep(0.5)
            with database.transaction() as session, unscoped(session):
                status = session.scalars(select(ImportJob.status).where(ImportJob.id == job_id)).one()
        assert status == "done", (tmp_path / "worker.log").read_text()[-3000:]
        with database.transaction() as session, unscoped(session):
            assert session.scalars(select(Contact.id)).all().__len__() == 2500
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=15)
        except subprocess.TimeoutExpired:
            worker.kill()
        log.close()
        database.engine.dispose()
