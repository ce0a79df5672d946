"""Celery tasks for imports."""

from __future__ import annotations

from zgoda.contacts.imports.service import run_job
from zgoda.core.settings import get_settings
from zgoda.core.tasks import celery_app, task_database


@celery_app.task(name="zgoda.imports.run")  # type: ignore[untyped-decorator]
def run_import(job_id: int) -> str:
    """Run or resume one import job; a redelivery after a crash resumes from the last committed batch."""
    job = run_job(task_database(), job_id, region=get_settings().default_phone_region)
    return job.status
