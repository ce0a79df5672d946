"""Never twice, never skipped: sending processes killed with SIGKILL mid-campaign, a real SMTP sink counting.

Each run is ``zgoda campaign send NAME --wait`` in its own process (without a broker the command sends
itself). The first two are killed once the sink has received some of the messages; the last finishes.
Then every eligible contact must have exactly one message at the sink, and nobody else any.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select

from tests.support.sending import delivered_counts, send_status_counts, sending_setup
from zgoda.campaigns.models import Campaign, CampaignStatus, Send, SendStatus
from zgoda.core.db import Database
from zgoda.core.tenancy import Actor, bind_scope, unscoped
from zgoda.delivery.sink import SmtpSink

ELIGIBLE = 240
WAIT = 120.0  # seconds: an upper bound for the runs, never a measured figure


def _run(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-m",
        "zgoda.cli",
        "campaign",
        "send",
        "Karta zimowa",
        "--workspace",
        env["SLUG"],
        "--wait",
    ]
    return subprocess.Popen(command, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)


def _kill_when(process: subprocess.Popen[bytes], sink: SmtpSink, received: int) -> str:
    """SIGKILL the process (and its group) once the sink holds ``received`` messages; says when (for failures)."""
    deadline = time.monotonic() + WAIT
    while sink.received < received:
        assert process.poll() is None, "the sending process ended before it could be killed"
        assert time.monotonic() < deadline, f"the sink got only {sink.received} messages"
        time.sleep(0.002)
    os.killpg(process.pid, signal.SIGKILL)
    killed_at = datetime.now(UTC).strftime("%H:%M:%S.%f")
    process.wait(timeout=WAIT)
    return f"killed {process.pid} at {killed_at} UTC with {sink.received} messages at the sink"


def _skipped(database: Database, campaign_id: int, missing: set[str], log: Path, kills: list[str]) -> str:
    """What the send rows of the contacts who got nothing say (the assertion's message)."""
    from zgoda.contacts.models import Contact

    with database.transaction() as session:
        bind_scope(session, workspace_id=None, actor=Actor.system("test"))
        with unscoped(session):
            rows = session.execute(
                select(Contact.email, Send.status, Send.attempts, Send.ref, Send.sent_at, Send.smtp_reply)
                .join(Send, Send.contact_id == Contact.id)
                .where(Send.campaign_id == campaign_id, Contact.email.in_(missing))
            ).all()
    listed = [tuple(row) for row in rows]
    return f"skipped: {listed} (or someone without consent got a message); {kills}; log: {log.read_text()[-2000:]}"


def test_killed_senders_deliver_every_message_exactly_once(fresh_database_url: str, tmp_path: Path) -> None:
    database = Database.from_url(fresh_database_url)
    with database.transaction() as session:
        setup = sending_setup(session, eligible=ELIGIBLE)
        slug = setup.workspace.slug
        campaign_id = setup.campaign.id
        eligible = {c.email for c in setup.eligible}
    maildir = tmp_path / "maildir"
    log = tmp_path / "runs.log"
    with SmtpSink(maildir) as sink:
        env = {
            **os.environ,
            "SLUG": slug,
            "ZGODA_DATABASE_URL": fresh_database_url,
            "ZGODA_DATA_DIR": str(tmp_path),
            "ZGODA_SECRET_KEY": "crash-test-secret-0123456789abcdef",
            "ZGODA_BASE_URL": "https://zgoda.example.com",
            "ZGODA_SMTP_HOST": sink.host,
            "ZGODA_SMTP_PORT": str(sink.port),
            "ZGODA_SMTP_CONNECTIONS": "3",
            "ZGODA_SEND_BATCH_SIZE": "10",
            "ZGODA_SEND_LEASE_SECONDS": "2",
        }
        env.pop("ZGODA_BROKER_URL", None)
        kills = [_kill_when(_run(env, log), sink, 30)]
        kills.append(_kill_when(_run(env, log), sink, sink.received + 60))
        last = _run(env, log)
        assert last.wait(timeout=WAIT) == 0, log.read_text()

    delivered = delivered_counts(maildir)
    assert set(delivered) == eligible, _skipped(database, campaign_id, eligible - set(delivered), log, kills)
    assert max(delivered.values()) == 1, f"sent twice: {[a for a, n in delivered.items() if n > 1]}"

    with database.transaction() as session:
        bind_scope(session, workspace_id=None, actor=Actor.system("test"))
        with unscoped(session):
            assert session.get(Campaign, campaign_id).status == CampaignStatus.SENT  # type: ignore[union-attr]
    assert send_status_counts(database, campaign_id) == {SendStatus.SENT: ELIGIBLE, SendStatus.REFUSED: 2}
    database.engine.dispose()


def test_a_killed_worker_is_taken_over_by_another(fresh_database_url: str, tmp_path: Path) -> None:
    """The same with `zgoda worker` processes on RabbitMQ: the dead worker's task is redelivered to the next."""
    import socket

    from tests.support.databases import skip_or_fail
    from zgoda.campaigns import service as campaigns
    from zgoda.campaigns.tasks import prepare_campaign
    from zgoda.core.settings import Settings
    from zgoda.core.tasks import configure

    broker = os.environ.get("ZGODA_TEST_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
    try:
        socket.create_connection(("127.0.0.1", 5672), timeout=2).close()
    except OSError:
        skip_or_fail("RabbitMQ is not reachable at 127.0.0.1:5672")
    database = Database.from_url(fresh_database_url)
    with database.transaction() as session:
        setup = sending_setup(session, eligible=ELIGIBLE)
        campaign_id = setup.campaign.id
        eligible = {c.email for c in setup.eligible}
    queue = f"zgoda-crash-{os.getpid()}-{int(time.time())}"
    maildir = tmp_path / "maildir"
    log = tmp_path / "workers.log"
    celery = configure(Settings(broker_url=broker, task_queue=queue, secret_key="x" * 40, data_dir=tmp_path))  # type: ignore[arg-type]
    with SmtpSink(maildir) as sink:
        env = {
            **os.environ,
            "ZGODA_DATABASE_URL": fresh_database_url,
            "ZGODA_DATA_DIR": str(tmp_path),
            "ZGODA_SECRET_KEY": "crash-test-secret-0123456789abcdef",
            "ZGODA_BASE_URL": "https://zgoda.example.com",
            "ZGODA_BROKER_URL": broker,
            "ZGODA_TASK_QUEUE": queue,
            "ZGODA_SMTP_HOST": sink.host,
            "ZGODA_SMTP_PORT": str(sink.port),
            "ZGODA_SMTP_CONNECTIONS": "3",
            "ZGODA_SEND_BATCH_SIZE": "10",
            "ZGODA_SEND_LEASE_SECONDS": "2",
            "ZGODA_SEND_PARALLEL_TASKS": "1",
        }

        def start_worker() -> subprocess.Popen[bytes]:
            command = [sys.executable, "-m", "zgoda.cli", "worker", "--concurrency", "1"]
            return subprocess.Popen(
                command, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True
            )

        first = start_worker()
        second: subprocess.Popen[bytes] | None = None
        try:
            with database.transaction() as session:
                bind_scope(session, workspace_id=setup.workspace.id, actor=Actor.system("test"))
                campaigns.send_campaign(session, campaign_id=campaign_id)
            with celery.connection_for_write(broker) as connection:
                prepare_campaign.apply_async((campaign_id,), connection=connection, queue=queue)
            kills = [_kill_when(first, sink, 40)]
            second = start_worker()
            deadline = time.monotonic() + WAIT
            status = CampaignStatus.SENDING.value
            while status != CampaignStatus.SENT and time.monotonic() < deadline:
                time.sleep(0.25)
                with database.transaction() as session:
                    bind_scope(session, workspace_id=None, actor=Actor.system("test"))
                    with unscoped(session):
                        status = session.scalars(select(Campaign.status).where(Campaign.id == campaign_id)).one()
            assert status == CampaignStatus.SENT, log.read_text()[-3000:]
        finally:
            for process in (first, second):
                if process is not None and process.poll() is None:
                    os.killpg(process.pid, signal.SIGTERM)
                    process.wait(timeout=30)
            with celery.connection_for_write(broker) as connection:
                connection.default_channel.queue_delete(queue)  # the run's own queue, not left in RabbitMQ
            configure(Settings(secret_key="x" * 40, data_dir=tmp_path))  # type: ignore[arg-type]
            celery.close()  # the producer pool goes back to the in-memory broker for later tests
            database.engine.dispose()
    delivered = delivered_counts(maildir)
    assert set(delivered) == eligible, _skipped(database, campaign_id, eligible - set(delivered), log, kills)
    assert max(delivered.values()) == 1, f"sent twice: {[a for a, n in delivered.items() if n > 1]}"
