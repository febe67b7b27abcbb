"""Thin Celery tasks: take ids, call a service, retry when a host does not answer.

Tasks are acked late and rejected when their worker dies, so a worker killed mid-clone gets
its task redelivered; the services pick up where the desktop stands.
"""

import logging

from celery import shared_task

from .hypervisor import HostUnreachable, HypervisorError
from .services import provisioning
from .task_retries import RETRY_WHILE_THE_DATABASE_IS_AWAY

log = logging.getLogger(__name__)
RETRIES = 4


def _run(task, step, desktop_id: int, *, failure: str = "", **kwargs):
    try:
        step(desktop_id=desktop_id, **kwargs)
    except HostUnreachable as exc:
        if task.request.retries < RETRIES:
            raise task.retry(exc=exc, countdown=2 ** task.request.retries)
        provisioning.mark_failed(desktop_id=desktop_id,
                                 error=f"{failure}{exc} — the host is down; an admin must check it.")
    except HypervisorError as exc:
        provisioning.mark_failed(desktop_id=desktop_id, error=f"{failure}{exc}")


@shared_task(bind=True, max_retries=RETRIES, **RETRY_WHILE_THE_DATABASE_IS_AWAY)
def provision_desktop_task(self, desktop_id: int):
    _run(self, provisioning.provision_desktop, desktop_id)


@shared_task(bind=True, max_retries=RETRIES, **RETRY_WHILE_THE_DATABASE_IS_AWAY)
def start_desktop_task(self, desktop_id: int):
    _run(self, provisioning.start_desktop, desktop_id)


@shared_task(bind=True, max_retries=RETRIES, **RETRY_WHILE_THE_DATABASE_IS_AWAY)
def stop_desktop_task(self, desktop_id: int, reason: str = "powering off"):
    _run(self, provisioning.stop_desktop, desktop_id, failure="shutdown failed: ", reason=reason)


@shared_task(bind=True, max_retries=RETRIES, **RETRY_WHILE_THE_DATABASE_IS_AWAY)
def recompose_desktop_task(self, desktop_id: int):
    _run(self, provisioning.recompose_desktop, desktop_id, failure="recompose failed: ")


@shared_task(bind=True, max_retries=RETRIES, **RETRY_WHILE_THE_DATABASE_IS_AWAY)
def delete_desktop_task(self, desktop_id: int):
    _run(self, provisioning.delete_desktop, desktop_id, failure="deletion failed: ")


@shared_task(**RETRY_WHILE_THE_DATABASE_IS_AWAY)
def migrate_desktop_task(migration_id: int):
    """Live-migrate a desktop (on its source host's worker). A failed move leaves the desktop
    running where it was and the migration row says why: nothing to retry here."""
    from .services.live_migration import migrate_desktop

    migrate_desktop(migration_id=migration_id)


@shared_task(bind=True, max_retries=RETRIES, **RETRY_WHILE_THE_DATABASE_IS_AWAY)
def back_up_data_disk_task(self, desktop_id: int, kind: str = "scheduled", actor_id: int | None = None):
    """A failed backup is a row saying why (the next scheduled pass tries again); nothing to retry."""
    from .services.backups import back_up_data_disk

    back_up_data_disk(desktop_id=desktop_id, kind=kind, actor_id=actor_id)


@shared_task(bind=True, max_retries=RETRIES, **RETRY_WHILE_THE_DATABASE_IS_AWAY)
def restore_data_disk_task(self, backup_id: int, desktop_id: int, actor_id: int | None = None, force: bool = False):
    from .services.backups import restore_data_disk

    try:
        restore_data_disk(backup_id=backup_id, to_desktop_id=desktop_id, actor_id=actor_id, force=force)
    except HostUnreachable as exc:
        if self.request.retries < RETRIES:
            raise self.retry(exc=exc, countdown=2 ** self.request.retries)
    except HypervisorError:
        pass  # written down on the desktop (it stays off, with the reason); an admin tries again


# -- periodic ------------------------------------------------------------------------------------

@shared_task
def delete_desktops_past_their_hold_task():
    """Delete desktops whose user lost access longer ago than the pool's grace."""
    from .services.access import desktops_past_their_hold

    for desktop in desktops_past_their_hold().select_related("host"):
        delete_desktop_task.apply_async(args=[desktop.pk], queue=desktop.host.task_queue if desktop.host else None)


@shared_task
def reconcile_everything_task():
    """The periodic pass: check and reconcile every host, then every pool, then sessions."""
    from django.db.models import Q

    from .models import Host, Pool

    # Session hosts report through their agents (broker.session_tasks.check_session_hosts_task).
    # Fenced hosts too: one that comes back must lose its stale copies of desktops restarted elsewhere.
    for host in Host.objects.filter(Q(is_enabled=True) | Q(fenced_at__isnull=False), kind=Host.Kind.HYPERVISOR):
        reconcile_host_task.apply_async(args=[host.pk], queue=host.task_queue)
    for pool_id in Pool.objects.values_list("pk", flat=True):
        reconcile_pool_task.delay(pool_id)
    enforce_disconnect_timeouts_task.delay()
    fence_dead_hosts_task.delay()  # central: a dead host's own agent cannot do it
    from .services.jobs import expire_stale_jobs

    expire_stale_jobs()  # a job whose worker died shows as failed, not running for ever


@shared_task
def back_up_due_data_disks_task():
    """Hourly: enqueue the data disk backups each pool's schedule says are due."""
    from .services.backups import enqueue_due_backups

    enqueue_due_backups()


@shared_task
def fence_dead_hosts_task():
    """High availability: fence the hypervisors unreachable past their threshold and bring
    their desktops back elsewhere (broker/services/high_availability.py)."""
    from .services.high_availability import fence_and_recover, hosts_due_for_fencing

    for host in hosts_due_for_fencing():
        fence_and_recover(host_id=host.pk)


@shared_task
def reconcile_host_task(host_id: int):
    from .services.hosts import check_host, reconcile_host

    host = check_host(host_id=host_id)
    if host.is_online:
        try:
            reconcile_host(host_id=host_id)
        except HostUnreachable as exc:
            log.warning("host %s stopped answering during reconciliation: %s", host.name, exc)


@shared_task
def reconcile_pool_task(pool_id: int):
    from .services.pools import reconcile_pool

    reconcile_pool(pool_id=pool_id)


@shared_task
def enforce_disconnect_timeouts_task():
    from .services.desktop_sessions import enforce_disconnect_timeouts

    enforce_disconnect_timeouts()


@shared_task(ignore_result=False)
def set_vm_console_password_task(desktop_id: int, protocol: str, password: str, valid_for_s: int):
    """Run by a host's own agent for the portal, which waits: (vnc port, spice port, listen), or None
    if the host's libvirt did not answer."""
    from .console.targets import set_vm_console_password
    from .models import Desktop

    desktop = Desktop.objects.select_related("host").filter(pk=desktop_id).first()
    if desktop is None:
        return None
    try:
        ports = set_vm_console_password(desktop, protocol=protocol, password=password, valid_for_s=valid_for_s)
    except HypervisorError:
        return None
    return [ports.vnc, ports.spice, ports.listen]


@shared_task
def purge_expired_console_tickets_task():
    """Console tickets live seconds; their rows are kept an hour for the record, then removed."""
    from .console.tickets import purge_expired_tickets

    purge_expired_tickets()


@shared_task(**RETRY_WHILE_THE_DATABASE_IS_AWAY)
def checksum_image_version_task(version_id: int):
    from .services.images import record_checksum

    record_checksum(version_id=version_id)
