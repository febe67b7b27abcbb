"""Thin Celery tasks: take ids, call a service, retry when a host does not answer.

Tasks are acked late and rejected when their worker dies, so a worker killed mid-clone gets
its task redelivered; the services pick up where the desktop stands.
"""

import logging

from celery import shared_task

from .hypervisor import HostUnreachable, HypervisorError
from .services import provisioning

log = logging.getLogger(__name__)
RETRIES = 4


def _run(task, step, desktop_id: int):
    try:
        step(desktop_id=desktop_id)
    except HostUnreachable as exc:
        if task.request.retries < RETRIES:
            raise task.retry(exc=exc, countdown=2 ** task.request.retries)
        provisioning.mark_failed(desktop_id=desktop_id, error=f"{exc} — the host is down; an admin must check it.")
    except HypervisorError as exc:
        provisioning.mark_failed(desktop_id=desktop_id, error=str(exc))


@shared_task(bind=True, max_retries=RETRIES)
def provision_desktop_task(self, desktop_id: int):
    _run(self, provisioning.provision_desktop, desktop_id)


@shared_task(bind=True, max_retries=RETRIES)
def start_desktop_task(self, desktop_id: int):
    _run(self, provisioning.start_desktop, desktop_id)


@shared_task(bind=True, max_retries=RETRIES)
def delete_desktop_task(self, desktop_id: int):
    try:
        provisioning.delete_desktop(desktop_id=desktop_id)
    except HostUnreachable as exc:
        if self.request.retries < RETRIES:
            raise self.retry(exc=exc, countdown=2 ** self.request.retries)
        provisioning.mark_failed(desktop_id=desktop_id, error=f"deletion failed, host down: {exc}")
    except HypervisorError as exc:
        provisioning.mark_failed(desktop_id=desktop_id, error=f"deletion failed: {exc}")


@shared_task
def delete_desktops_past_their_hold_task():
    """Periodic: delete desktops whose user lost access longer ago than the pool's grace."""
    from .services.access import desktops_past_their_hold

    for desktop_id in desktops_past_their_hold().values_list("pk", flat=True):
        delete_desktop_task.delay(desktop_id)
