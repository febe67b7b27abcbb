"""The one way the broker's writes start background work: a Celery task sent after commit.

Services never import the task modules (tasks import services, not the other way round): they
name the task. Sending after commit means the worker always finds the rows the task is about,
and a rolled-back transaction starts nothing.
"""

from importlib import import_module

from celery import current_app
from django.db import transaction


def enqueue_after_commit(task_name: str, *args, queue: str | None = None, countdown: float | None = None,
                         **kwargs) -> None:
    """Send `task_name` (e.g. "broker.tasks.delete_desktop_task") with these arguments once
    the current transaction commits (at once outside one). `queue` routes it to one worker's
    queue (a session host's agent)."""
    if task_name not in current_app.tasks:
        # Celery registers tasks when their module is imported (a worker imports them all at
        # start; a web process only what it touched): the name says where the task lives.
        import_module(task_name.rsplit(".", 1)[0])
    task = current_app.tasks[task_name]  # NotRegistered here: a typo in the caller, found by its tests
    options = {}
    if queue:
        options["queue"] = queue
    if countdown:
        options["countdown"] = countdown
    transaction.on_commit(lambda: task.apply_async(args=args, kwargs=kwargs, **options))
