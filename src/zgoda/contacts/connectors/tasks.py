"""Celery tasks for connectors: deliver a notification, retrying with backoff."""

from __future__ import annotations

from typing import Any

from zgoda.contacts.connectors.outbound import attempt
from zgoda.core.clock import utcnow
from zgoda.core.tasks import celery_app, task_database


@celery_app.task(name="zgoda.connectors.deliver", bind=True, max_retries=None)  # type: ignore[untyped-decorator]
def deliver(self: Any, delivery_id: int) -> str:
    """Try once; when the row says "try later", schedule the next attempt at its time."""
    delivery = attempt(task_database(), delivery_id)
    if delivery.status == "pending" and delivery.next_attempt_at is not None:
        wait = max((delivery.next_attempt_at - utcnow()).total_seconds(), 1.0)
        raise self.retry(countdown=wait)
    return str(delivery.status)
