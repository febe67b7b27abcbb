"""Failed Celery tasks become rows, so the dashboard shows them from any process."""

import logging

from celery.signals import task_failure

log = logging.getLogger(__name__)


@task_failure.connect(dispatch_uid="dashboard.record_task_failure")
def record_task_failure(sender=None, task_id=None, exception=None, **_kwargs):
    from .services.samples import record_task_failure as record

    try:
        record(task_name=getattr(sender, "name", str(sender)), task_id=task_id or "", exception=exception)
    except Exception:  # the database is away: the worker's log has the failure anyway
        log.warning("could not record the failure of task %s", task_id, exc_info=True)
