"""Kill sending processes many times mid-campaign and count what a kill costs: skipped and duplicated messages.

Run: ``uv run python benchmarks/kill_senders.py [--contacts N] [--kills K] [--database sqlite|postgresql]
[--mode cli|worker]``

Not a speed benchmark: ``tests/campaigns/test_sending_crash.py`` kills twice per run, too few to see
a failure that one kill in 40 causes. This kills K times, each ``zgoda campaign send --wait``
process with SIGKILL 20-60 messages after it started delivering (right after a message arrives at
the sink, as the test does), then lets one run finish, and prints how many eligible contacts got no
message (skipped) and how many got two (duplicated). Both must be 0. ``--mode worker`` kills ``zgoda
worker`` processes on RabbitMQ instead, as the test's second case does: the campaign's task is queued
once and each worker started after a kill takes it over (RabbitMQ redelivers what the dead one never
acknowledged). Uses the tests' sending setup
(``tests.support.sending``) and the real sink, in a fresh database dropped at the end.

Measured (2 vCPUs, ``ZGODA_SMTP_CONNECTIONS=3``, batch 10). PostgreSQL: with COMMIT sent before the
dots, 1 skipped in 40 kills; with both held in the kernel and let go together (core/tcp_hold.py),
0 in 300. SQLite, 60 kills each: commit then dots, 3 skipped; dots held before a usual commit, 2 and
4 duplicated; dots held and dropped if killed, a COMMIT that keeps the interpreter lock
(core/sqlite_commit.py), then the dots kept: 0, and 0 again. SQLite, ``--mode worker``, 100 kills,
6,000 contacts: 1 skipped while a thread waiting for the interpreter could still take it between the
COMMIT and the kept dots; 0 with the 50 ms switch interval held during group commits
(``_ThreadSwitches`` in campaigns/sending.py). PostgreSQL, ``--mode worker``, 100 kills, with it: 0.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from pg_databases import create_pg_database, drop_pg_database
from tests.support.sending import delivered_counts, sending_setup

from zgoda.core.db import Database
from zgoda.core.migrate import upgrade
from zgoda.delivery.sink import SmtpSink


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=3000)
    parser.add_argument("--kills", type=int, default=60)
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="postgresql")
    parser.add_argument("--pg-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument(
        "--mode",
        choices=["cli", "worker"],
        default="cli",
        help="kill `zgoda campaign send --wait` processes (cli), or `zgoda worker` processes on RabbitMQ, each "
        "taking over the task the killed one held (worker)",
    )
    parser.add_argument("--broker", default="amqp://guest:guest@127.0.0.1:5672//", help="RabbitMQ, for --mode worker")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="zgoda-kill-"))
    pg_name = None
    if args.database == "postgresql":
        pg_name, url = create_pg_database(args.pg_url, prefix="zgoda_kill_")
    else:
        url = f"sqlite:///{workdir / 'kill.db'}"
    try:
        upgrade(url)
        database = Database.from_url(url)
        with database.transaction() as session:
            setup = sending_setup(session, eligible=args.contacts)
            slug = setup.workspace.slug
            workspace_id, campaign_id = setup.workspace.id, setup.campaign.id
            eligible = {contact.email for contact in setup.eligible}
        database.engine.dispose()
        log = workdir / "runs.log"
        with SmtpSink(workdir / "maildir") as sink:
            env = {
                **os.environ,
                "ZGODA_DATABASE_URL": url,
                "ZGODA_DATA_DIR": str(workdir),
                "ZGODA_SECRET_KEY": "kill-senders-secret-0123456789abcdef",
                "ZGODA_BASE_URL": "https://zgoda.example.com",
                "ZGODA_SMTP_HOST": sink.host,
                "ZGODA_SMTP_PORT": str(sink.port),
                "ZGODA_SMTP_CONNECTIONS": "3",
                "ZGODA_SEND_BATCH_SIZE": "10",
                "ZGODA_SEND_LEASE_SECONDS": "2",
            }
            if args.mode == "worker":
                senders: Senders = _Workers(args.broker, env, log, database, workspace_id, campaign_id)
            else:
                senders = _Commands(slug, env, log)
            try:
                for kill in range(args.kills):
                    process = senders.start()
                    target = sink.received + random.randint(20, 60)
                    last, progress_by = sink.received, time.monotonic() + 60
                    while sink.received < target:
                        if sink.received != last:
                            last, progress_by = sink.received, time.monotonic() + 60
                        # a worker outlives the campaign: no message for a minute means it ended first
                        if process.poll() is not None or time.monotonic() > progress_by:
                            print(f"kill {kill + 1}: the campaign ended first (use more --contacts)")
                            if process.poll() is None:
                                os.killpg(process.pid, signal.SIGKILL)
                                process.wait()
                            return 2
                        time.sleep(0.002)
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
                    print(f"\rkills: {kill + 1}/{args.kills}, messages so far: {sink.received}", end="", flush=True)
                print()
                if not senders.finish():
                    print(log.read_text()[-2000:])
                    return 2
            finally:
                senders.close()
        delivered = delivered_counts(workdir / "maildir")
    finally:
        if pg_name is not None:
            drop_pg_database(args.pg_url, pg_name)
    skipped = len(eligible - set(delivered))
    duplicated = sum(1 for count in delivered.values() if count > 1)
    strangers = len(set(delivered) - eligible)
    print(
        f"{args.database}, {args.mode}: {args.kills} kills, {len(eligible)} eligible: "
        f"skipped {skipped}, duplicated {duplicated}"
    )
    print(f"messages to contacts without consent: {strangers}")
    return 0 if skipped == duplicated == strangers == 0 else 1


class Senders:
    """Starts the sending processes to kill, and the last one, which is let finish."""

    def start(self) -> subprocess.Popen[bytes]:
        raise NotImplementedError

    def finish(self) -> bool:
        raise NotImplementedError

    def close(self) -> None:
        """Nothing to tidy by default."""


class _Commands(Senders):
    """``zgoda campaign send --wait`` processes, without a broker (the campaign runs in each)."""

    def __init__(self, slug: str, env: dict[str, str], log: Path) -> None:
        self.command = [sys.executable, "-m", "zgoda.cli", "campaign", "send", "Karta zimowa", "--workspace", slug]
        self.command.append("--wait")
        self.env = {name: value for name, value in env.items() if name != "ZGODA_BROKER_URL"}
        self.log = log

    def start(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            self.command, env=self.env, stdout=self.log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True
        )

    def finish(self) -> bool:
        last = subprocess.run(self.command, env=self.env, stdout=self.log.open("ab"), stderr=subprocess.STDOUT)
        return last.returncode == 0


class _Workers(Senders):
    """``zgoda worker --concurrency 1`` processes on a queue of this run's own: the campaign's task is queued
    once; each worker started after a kill gets it again from RabbitMQ (the killed one never acknowledged it)."""

    def __init__(
        self, broker: str, env: dict[str, str], log: Path, database: Database, workspace_id: int, campaign_id: int
    ) -> None:
        from zgoda.campaigns import service as campaigns
        from zgoda.campaigns.tasks import prepare_campaign
        from zgoda.core.settings import Settings
        from zgoda.core.tasks import configure
        from zgoda.core.tenancy import Actor, bind_scope

        self.queue = f"zgoda-kill-{os.getpid()}-{int(time.time())}"
        self.env = {**env, "ZGODA_BROKER_URL": broker, "ZGODA_TASK_QUEUE": self.queue}
        self.env["ZGODA_SEND_PARALLEL_TASKS"] = "1"
        self.log = log
        self.database = database
        self.campaign_id = campaign_id
        self.celery = configure(
            Settings(broker_url=broker, task_queue=self.queue, secret_key="x" * 40, data_dir=log.parent)  # type: ignore[arg-type]
        )
        with database.transaction() as session:
            bind_scope(session, workspace_id=workspace_id, actor=Actor.system("benchmark"))
            campaigns.send_campaign(session, campaign_id=campaign_id)
        with self.celery.connection_for_write() as connection:
            prepare_campaign.apply_async((campaign_id,), connection=connection, queue=self.queue)

    def start(self) -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "zgoda.cli", "worker", "--concurrency", "1"]
        return subprocess.Popen(
            command, env=self.env, stdout=self.log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True
        )

    def finish(self) -> bool:
        from sqlalchemy import select

        from zgoda.campaigns.models import Campaign, CampaignStatus
        from zgoda.core.tenancy import Actor, bind_scope, unscoped

        last = self.start()
        deadline = time.monotonic() + 600
        status = CampaignStatus.SENDING.value
        try:
            while status != CampaignStatus.SENT and time.monotonic() < deadline and last.poll() is None:
                time.sleep(0.25)
                with self.database.transaction() as session:
                    bind_scope(session, workspace_id=None, actor=Actor.system("benchmark"))
                    with unscoped(session):
                        query = select(Campaign.status).where(Campaign.id == self.campaign_id)
                        status = session.scalars(query).one()
        finally:
            if last.poll() is None:
                os.killpg(last.pid, signal.SIGTERM)
                last.wait(timeout=60)
        return status == CampaignStatus.SENT

    def close(self) -> None:
        with self.celery.connection_for_write() as connection:
            connection.default_channel.queue_delete(self.queue)
        self.celery.close()
        self.database.engine.dispose()


if __name__ == "__main__":
    sys.exit(main())
