"""Kill sending processes many times mid-campaign and count what a kill costs: skipped and duplicated messages.

Run: ``uv run python benchmarks/kill_senders.py [--contacts N] [--kills K] [--database sqlite|postgresql]``

Not a speed benchmark: ``tests/campaigns/test_sending_crash.py`` kills twice per run, too few to see
a failure that one kill in 40 causes. This kills K times, each ``zgoda campaign send --wait``
process with SIGKILL 20-60 messages after it started delivering (right after a message arrives at
the sink, as the test does), then lets one run finish, and prints how many eligible contacts got no
message (skipped) and how many got two (duplicated). Both must be 0. Uses the tests' sending setup
(``tests.support.sending``) and the real sink, in a fresh database dropped at the end.

Measured (2 vCPUs, ``ZGODA_SMTP_CONNECTIONS=3``, batch 10). PostgreSQL: with COMMIT sent before the
dots, 1 skipped in 40 kills; with both held in the kernel and let go together (core/tcp_hold.py),
0 in 300. SQLite, 60 kills each: commit then dots, 3 skipped; dots held before a usual commit, 2 and
4 duplicated; dots held and dropped if killed, a COMMIT that keeps the interpreter lock
(core/sqlite_commit.py), then the dots kept: 0, and 0 again.
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
            env.pop("ZGODA_BROKER_URL", None)
            command = [sys.executable, "-m", "zgoda.cli", "campaign", "send", "Karta zimowa", "--workspace", slug]
            command.append("--wait")
            for kill in range(args.kills):
                process = subprocess.Popen(
                    command, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True
                )
                target = sink.received + random.randint(20, 60)
                while sink.received < target:
                    if process.poll() is not None:
                        print(f"kill {kill + 1}: the campaign ended first (use more --contacts)")
                        return 2
                    time.sleep(0.002)
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                print(f"\rkills: {kill + 1}/{args.kills}, messages so far: {sink.received}", end="", flush=True)
            last = subprocess.run(command, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT, check=False)
            print()
            if last.returncode != 0:
                print(log.read_text()[-2000:])
                return 2
        delivered = delivered_counts(workdir / "maildir")
    finally:
        if pg_name is not None:
            drop_pg_database(args.pg_url, pg_name)
    skipped = len(eligible - set(delivered))
    duplicated = sum(1 for count in delivered.values() if count > 1)
    strangers = len(set(delivered) - eligible)
    print(f"{args.database}: {args.kills} kills, {len(eligible)} eligible: skipped {skipped}, duplicated {duplicated}")
    print(f"messages to contacts without consent: {strangers}")
    return 0 if skipped == duplicated == strangers == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
