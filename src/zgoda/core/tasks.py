"""Celery: background work (imports, sending, evaluation).

With ``ZGODA_BROKER_URL`` set (RabbitMQ ``amqp://`` or Redis ``redis://``) tasks run on
``zgoda worker`` processes, any number, on any machine, sharing the database. Without it
(the embedded default) ``zgoda serve`` runs one worker thread in its own process on an
in-memory broker: no broker to install, the same task code.

Tasks take ids, reload what they need, and are enqueued only after the transaction that
created their work commits (:func:`enqueue_after_commit`).
"""

from __future__ import annotations

import logging
import threading
from functools import lru_cache
from typing import Any

from celery import Celery
from sqlalchemy import event
from sqlalchemy.orm import Session

from zgoda.core.db import Database
from zgoda.core.settings import Settings, get_settings

log = logging.getLogger("zgoda.tasks")

TASK_MODULES = [
    "zgoda.contacts.imports.tasks",
    "zgoda.contacts.connectors.tasks",
    "zgoda.campaigns.tasks",
    "zgoda.feedback.tasks",
]
# memory:// until configure() runs: a process that never configured Celery must not publish to a stray broker
celery_app = Celery("zgoda", include=TASK_MODULES, broker="memory://")
# the default queue from the start: Celery caches its queues on first use, so a task published before
# configure() (the demo seeding in `serve`) must already go where the workers listen
celery_app.conf.task_default_queue = "zgoda"


def configure(settings: Settings) -> Celery:
    """Point Celery at the configured broker (or the in-memory one)."""
    celery_app.conf.update(
        broker_url=settings.broker_url or "memory://",
        broker_connection_retry_on_startup=True,
        task_acks_late=True,  # a task lost with its worker is delivered again
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        worker_hijack_root_logger=False,
        task_default_queue=settings.task_queue,
    )
    return celery_app


@lru_cache(maxsize=1)
def task_database() -> Database:
    """The database tasks use in this process (one engine per worker process)."""
    settings = get_settings()
    return Database.from_url(settings.resolved_database_url)


def enqueue_after_commit(session: Session, task: Any, *args: Any, countdown: float | None = None) -> None:
    """Send ``task`` with ``args`` once the session's transaction commits (never for a rollback)."""

    def send(_session: Session) -> None:
        try:
            task.apply_async(args=args, countdown=countdown)
        except Exception:  # the work stays queued in the database: log and go on
            log.exception("could not enqueue %s%s", task.name, args)

    event.listen(session, "after_commit", send, once=True)


def start_embedded_worker() -> threading.Thread:
    """Run one worker thread in this process on the in-memory broker (the embedded default)."""

    def run() -> None:
        worker = celery_app.WorkController(
            pool_cls="solo",
            concurrency=1,
            without_heartbeat=True,
            without_mingle=True,
            without_gossip=True,
            loglevel="INFO",
        )
        worker.start()

    thread = threading.Thread(target=run, name="zgoda-embedded-worker", daemon=True)
    thread.start()
    return thread
