"""Thin Celery tasks: take an id, call a service."""

from celery import shared_task

from broker.task_retries import RETRY_WHILE_THE_DATABASE_IS_AWAY

from .models import DirectorySyncRun
from .services import sync


@shared_task(ignore_result=True, **RETRY_WHILE_THE_DATABASE_IS_AWAY)
def sync_directory_task(run_id: int | None = None):
    """The periodic sync (no id: a run row is made here) or one an admin queued (its row's id)."""
    if run_id is None:
        run_id = sync.queue_sync(trigger=DirectorySyncRun.Trigger.SCHEDULE).pk
    sync.run_directory_sync(run_id=run_id)
