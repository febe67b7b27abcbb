"""The one task of every long action (broker/services/jobs.py): an id in, the row re-read, the
service called. A job that follows other workers comes back here by itself until it ends."""

from celery import shared_task

from .task_retries import RETRY_WHILE_THE_DATABASE_IS_AWAY


@shared_task(**RETRY_WHILE_THE_DATABASE_IS_AWAY)
def run_job_task(job_id: int):
    from .services.jobs import run_job

    run_job(job_id=job_id)
