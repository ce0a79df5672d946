"""Celery tasks for feedback: poll the bounce mailbox."""

from __future__ import annotations

import logging

from zgoda.core.settings import get_settings
from zgoda.core.tasks import celery_app, task_database
from zgoda.feedback.intake import ImapSettings, poll_imap, poll_maildir

log = logging.getLogger("zgoda.feedback")


@celery_app.task(name="zgoda.feedback.poll_mailbox")  # type: ignore[untyped-decorator]
def poll_bounce_mailbox() -> dict[str, object]:
    """Apply what arrived in the bounce mailbox (ZGODA_IMAP_*) since the last poll."""
    settings = get_settings()
    if settings.bounce_maildir is not None:
        report = poll_maildir(task_database(), settings.bounce_maildir, bounce_domain=settings.bounce_domain)
        if report.messages:
            log.info("bounce Maildir: %s", report.as_json())
    if not (settings.imap_host and settings.imap_username and settings.imap_password):
        return {"skipped": "no IMAP bounce mailbox configured"}
    imap = ImapSettings(
        host=settings.imap_host,
        port=settings.imap_port,
        username=settings.imap_username,
        password=settings.imap_password.get_secret_value(),
        security=settings.imap_security,
        folder=settings.imap_folder,
    )
    report = poll_imap(task_database(), imap, bounce_domain=settings.bounce_domain)
    if report.messages:
        log.info("bounce mailbox: %s", report.as_json())
    return report.as_json()
