"""Celery tasks for campaigns: prepare the sends, send them (in parallel parts), start scheduled ones."""

from __future__ import annotations

import logging
import threading
import time

from sqlalchemy.exc import OperationalError

from zgoda.campaigns import sending
from zgoda.core.settings import get_settings
from zgoda.core.tasks import celery_app, task_database

log = logging.getLogger("zgoda.campaigns")


@celery_app.task(name="zgoda.campaigns.prepare")  # type: ignore[untyped-decorator]
def prepare_campaign(campaign_id: int) -> int:
    """Freeze the audience into send rows, then queue the sending parts (one per parallel task)."""
    added = sending.prepare(task_database(), campaign_id)
    for _ in range(get_settings().send_parallel_tasks):
        send_campaign_part.delay(campaign_id)
    return added


@celery_app.task(  # type: ignore[untyped-decorator]
    name="zgoda.campaigns.send",
    bind=True,
    # an SMTP outage, or the database briefly away (a restart, a failover): try again with back-off;
    # the sends this run held are claimed again once their leases run out
    autoretry_for=(sending.SmtpUnavailable, OperationalError),
    retry_backoff=10,
    retry_backoff_max=300,
    max_retries=None,
)
def send_campaign_part(self: object, campaign_id: int) -> str:
    """Send what is left of a campaign; a redelivery after a crash takes over the dead worker's sends."""
    outcome = sending.run(task_database(), campaign_id, get_settings())
    log.info(
        "campaign %s: %s sent, %s refused, %s failed (%s)",
        campaign_id,
        outcome.sent,
        outcome.refused,
        outcome.failed,
        outcome.stopped,
    )
    return outcome.stopped


@celery_app.task(name="zgoda.campaigns.dispatch")  # type: ignore[untyped-decorator]
def dispatch_due_campaigns() -> list[int]:
    """Start the scheduled campaigns whose time has come, and tidy cancelled ones (safe to run any number of times)."""
    from zgoda.campaigns.service import start_due_campaigns, sweep_cancelled_sends
    from zgoda.core.tenancy import Actor, bind_scope

    with task_database().transaction() as session:
        bind_scope(session, workspace_id=None, actor=Actor.system("scheduler"))
        sweep_cancelled_sends(session)
        return start_due_campaigns(session)


def resume_unfinished_campaigns() -> int:
    """Queue the sending of every campaign left ``sending`` (the embedded worker lost its queue on exit)."""
    from sqlalchemy import select

    from zgoda.campaigns.models import Campaign, CampaignStatus
    from zgoda.core.tenancy import Actor, bind_scope, unscoped

    with task_database().transaction() as session:
        bind_scope(session, workspace_id=None, actor=Actor.system("scheduler"))
        with unscoped(session):
            ids = list(session.scalars(select(Campaign.id).where(Campaign.status == CampaignStatus.SENDING)))
    for campaign_id in ids:
        prepare_campaign.delay(campaign_id)
    return len(ids)


def start_scheduler(interval: float = 30.0) -> threading.Thread:
    """A thread that every ``interval`` seconds starts due scheduled campaigns (a countdown may be lost)
    and, when a bounce mailbox is configured, polls it."""
    from zgoda.feedback.tasks import poll_bounce_mailbox

    def loop() -> None:
        while True:
            try:
                dispatch_due_campaigns.delay()
                if get_settings().imap_host or get_settings().bounce_maildir:
                    poll_bounce_mailbox.delay()
            except Exception:  # the broker may be briefly away: try again next time
                log.exception("could not queue the periodic checks")
            time.sleep(interval)

    thread = threading.Thread(target=loop, name="zgoda-scheduler", daemon=True)
    thread.start()
    return thread
