"""The one way the broker's writes start background work: a Celery task sent after commit.

Services never import the task modules (tasks import services, not the other way round): they
name the task. Sending after commit means the worker always finds the rows the task is about,
and a rolled-back transaction starts nothing.
"""

import logging
from importlib import import_module

from celery import current_app
from django.db import transaction

log = logging.getLogger(__name__)


def enqueue_after_commit(task_name: str, *args, queue: str | None = None, countdown: float | None = None,
                         expires: float | None = None, **kwargs) -> None:
    """Send `task_name` (e.g. "broker.tasks.delete_desktop_task") with these arguments once
    the current transaction commits (at once outside one). `queue` routes it to one worker's
    queue (a session host's agent); `expires` (seconds) drops it if no worker took it by then."""
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
    if expires:
        options["expires"] = expires

    def send():
        try:
            task.apply_async(args=args, kwargs=kwargs, **options)
        except Exception as exc:  # the broker (Redis) is away: the rows are committed already
            # Not the request's failure: a desktop waiting for this task is sent it again by
            # the periodic pass (broker/services/hosts.py, VDI_QUEUED_RETRY_SECONDS).
            log.warning("task %s%r not sent, the broker did not answer: %s", task_name, args, exc)

    transaction.on_commit(send)


def enqueue_for_host(task_name: str, *args, host, **kwargs) -> None:
    """A task that touches `host` (its desktops, its libvirt): to the host's own agent where it
    has one, else to the central workers."""
    enqueue_after_commit(task_name, *args, queue=host.task_queue, **kwargs)


class NoAnswer(Exception):
    """The worker that should answer (a session host's agent) did not, in time."""


def call_and_wait(task_name: str, *args, queue: str, timeout: float, **kwargs):
    """Run `task_name` on the worker of `queue` now and return its result: for the few calls a
    web request must wait for (a session display's console password). Never inside a
    transaction whose rows the task needs: it runs elsewhere, now."""
    from celery.exceptions import TimeoutError as CeleryTimeout

    if task_name not in current_app.tasks:
        import_module(task_name.rsplit(".", 1)[0])
    result = current_app.tasks[task_name].apply_async(args=args, kwargs=kwargs, queue=queue, expires=timeout)
    try:
        return result.get(timeout=timeout, disable_sync_subtasks=False)
    except CeleryTimeout as exc:
        result.forget()
        raise NoAnswer(f"no answer from {queue} within {timeout:g} s") from exc
    except Exception as exc:  # Redis away, or the task failed: the caller says what to do
        raise NoAnswer(f"{queue} failed: {exc.__class__.__name__}") from exc
