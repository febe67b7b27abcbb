"""Backups of dedicated desktops' user-data disks, and restoring one.

A backup is a full qcow2 copy of the data disk on the host's backup storage pool
(settings.VDI_BACKUP_POOL at VDI_BACKUP_PATH), taken by libvirt's backup job while the desktop
runs (a point-in-time image, no pause of the guest) or by a volume copy while it is off. Each
pool says how often (`backup_every_hours`: the recovery point objective) and how many to keep
(`backup_keep`). A restore powers the desktop off through the normal stop path, replaces its
data disk by the backup's copy and starts it again if it was running. Every step is an event
on the desktop.

Called by Celery tasks (broker/tasks.py), and by the admin and the portal through
`request_backup` and `request_restore`, which only check and enqueue.
"""

import logging
import time
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Exists, Max, OuterRef, Q
from django.utils import timezone

from ..console.sessions import live_console_sessions
from ..enqueue import enqueue_for_host
from ..hypervisor import HypervisorError, driver_for_host
from ..models import DataDiskBackup, Desktop, DesktopState, Pool

log = logging.getLogger(__name__)
S = DesktopState
B = DataDiskBackup.State
# A backup still "running" after this long belongs to a worker that died: it no longer holds
# the schedule back.
RUNNING_BACKUP_GIVEN_UP_AFTER = timedelta(hours=6)
START_AFTER_RESTORE = "restore: it starts again when its data disk is back"


class RestoreRefused(Exception):
    """A restore that may not happen now; the message says why and what to do."""


def backup_volume_name(desktop: Desktop, *, at: datetime, backup_id: int) -> str:
    return f"{desktop.name}-data-{at:%Y%m%dT%H%M%S}-{backup_id}.qcow2"


def _data_volume_path(desktop: Desktop) -> str:
    return f"{desktop.host.storage_path.rstrip('/')}/{desktop.data_volume_name}"


def prepare_backup_storage(host) -> None:
    driver_for_host(host).ensure_storage_pool(name=settings.VDI_BACKUP_POOL, path=settings.VDI_BACKUP_PATH)


# -- taking backups ----------------------------------------------------------------------------

def request_backup(*, desktop: Desktop, kind: str = DataDiskBackup.Kind.MANUAL, actor=None) -> bool:
    """Enqueue a backup of the desktop's data disk on its host's worker; False if it has none."""
    if not desktop.data_volume_name or desktop.host_id is None or desktop.state == S.DELETED:
        return False
    desktop.note(f"{kind} backup of the data disk requested", actor=actor)
    enqueue_for_host("broker.tasks.back_up_data_disk_task", desktop.pk, kind, actor.pk if actor else None,
                     host=desktop.host)
    return True


def back_up_data_disk(*, desktop_id: int, kind: str = DataDiskBackup.Kind.SCHEDULED,
                      actor_id: int | None = None) -> DataDiskBackup | None:
    """Copy the desktop's data disk to the backup pool. A failure is recorded on the backup row
    and as an event; the desktop itself is untouched either way."""
    desktop = Desktop.objects.select_related("host", "pool").filter(pk=desktop_id).first()
    if desktop is None or not desktop.data_volume_name or desktop.host_id is None:
        return None
    if desktop.state not in (S.RUNNING, S.STOPPED):
        # Starting, moving, being restored...: the next hourly pass takes it.
        desktop.note(f"data disk backup skipped: the desktop is {desktop.get_state_display().lower()}")
        return None
    if DataDiskBackup.objects.filter(desktop=desktop, state=B.RUNNING,
                                     created_at__gt=timezone.now() - RUNNING_BACKUP_GIVEN_UP_AFTER).exists():
        return None  # a duplicate delivery of the same task, or two admins pressing at once
    backup = DataDiskBackup.objects.create(desktop=desktop, host=desktop.host, kind=kind,
                                           storage_pool=settings.VDI_BACKUP_POOL, requested_by_id=actor_id,
                                           taken_live=desktop.state == S.RUNNING)
    backup.volume_name = backup_volume_name(desktop, at=backup.created_at, backup_id=backup.pk)
    backup.save(update_fields=["volume_name"])
    driver = driver_for_host(desktop.host)
    started = time.monotonic()
    try:
        prepare_backup_storage(desktop.host)
        volume = driver.backup_disk(desktop.name, disk_path=_data_volume_path(desktop),
                                    target_pool=settings.VDI_BACKUP_POOL, target_name=backup.volume_name)
    except HypervisorError as exc:
        DataDiskBackup.objects.filter(pk=backup.pk).update(state=B.FAILED, error=str(exc)[:2000],
                                                           finished_at=timezone.now())
        desktop.note(f"data disk backup failed: {exc}")
        log.warning("backup of %s failed: %s", desktop.name, exc)
        backup.refresh_from_db()
        return backup
    took = time.monotonic() - started
    DataDiskBackup.objects.filter(pk=backup.pk).update(
        state=B.DONE, path=volume.path, size_bytes=volume.allocation_bytes, capacity_bytes=volume.capacity_bytes,
        finished_at=timezone.now())
    how = "while it ran (live backup job)" if backup.taken_live else "while it was off"
    desktop.note(f"data disk backed up {how} in {took:.1f} s: {volume.allocation_bytes / 2**20:.1f} MiB "
                 f"({kind}) to {settings.VDI_BACKUP_POOL}/{volume.name}")
    apply_retention(desktop)
    backup.refresh_from_db()
    return backup


def backups_due(now: datetime | None = None):
    """Desktops whose pool's schedule says their data disk is due for a backup at `now`: live
    dedicated desktops with a data disk, running or off, whose last successful backup is older
    than the pool's `backup_every_hours` (or that have none), and no backup under way."""
    now = now or timezone.now()
    last_done = (DataDiskBackup.objects.filter(desktop=OuterRef("pk"), state=B.DONE)
                 .values("desktop").annotate(last=Max("created_at")).values("last"))
    running = DataDiskBackup.objects.filter(desktop=OuterRef("pk"), state=B.RUNNING,
                                            created_at__gt=now - RUNNING_BACKUP_GIVEN_UP_AFTER)
    candidates = (Desktop.objects.select_related("host", "pool")
                  .filter(pool__kind=Pool.Kind.DEDICATED, pool__backup_every_hours__gt=0,
                          state__in=(S.RUNNING, S.STOPPED), host__isnull=False)
                  .exclude(data_volume_name="")
                  .annotate(last_backup=last_done, backing_up=Exists(running))
                  .filter(backing_up=False))
    due = []
    for desktop in candidates.filter(Q(last_backup__isnull=True) | Q(last_backup__lt=now - timedelta(hours=1))):
        # The per-pool interval (the filter above is only the smallest one, to read fewer rows).
        if desktop.last_backup is None or desktop.last_backup <= now - timedelta(hours=desktop.pool.backup_every_hours):
            due.append(desktop)
    return due


def enqueue_due_backups(now: datetime | None = None) -> list[str]:
    """The hourly pass: each due backup on its desktop's host's worker; and the backups of
    desktops deleted longer ago than their pool keeps them are deleted."""
    delete_backups_of_long_deleted_desktops(now)
    names = []
    for desktop in backups_due(now):
        enqueue_for_host("broker.tasks.back_up_data_disk_task", desktop.pk, DataDiskBackup.Kind.SCHEDULED, None,
                         host=desktop.host)
        names.append(desktop.name)
    return names


def apply_retention(desktop: Desktop) -> list[str]:
    """Keep the pool's `backup_keep` newest successful backups of the desktop; delete the older
    ones (volume and row), and failed rows older than the oldest one kept."""
    keep = max(desktop.pool.backup_keep, 1)  # the backup just taken is never deleted by its own pass
    done = list(DataDiskBackup.objects.filter(desktop=desktop, state=B.DONE).order_by("-created_at", "-id"))
    removed = []
    for backup in done[keep:]:
        if delete_backup(backup):
            removed.append(backup.volume_name)
    if len(done) >= keep:
        DataDiskBackup.objects.filter(desktop=desktop, state=B.FAILED,
                                      created_at__lt=done[keep - 1].created_at).delete()
    if removed:
        desktop.note(f"retention (keep {keep}): deleted {len(removed)} older backup(s): {', '.join(removed)}")
    return removed


def delete_backups_of_long_deleted_desktops(now: datetime | None = None) -> list[str]:
    """A deleted desktop's backups are what is left of a departed employee's files: kept for
    the pool's `keep_backups_of_deleted_desktops_days` after the deletion (an admin can restore
    one to a new desktop meanwhile), then deleted like any backup past its retention."""
    now = now or timezone.now()
    removed = []
    expired = (DataDiskBackup.objects.select_related("host", "desktop", "desktop__pool")
               .filter(desktop__state=S.DELETED)
               .exclude(state=B.RUNNING))
    for backup in expired:
        kept_until = backup.desktop.state_changed_at + timedelta(days=backup.desktop.pool.keep_backups_of_deleted_desktops_days)
        if now < kept_until:
            continue
        if backup.state == B.FAILED:
            backup.delete()
        elif delete_backup(backup):
            removed.append(backup.volume_name)
    if removed:
        log.info("deleted %d backup(s) of desktops deleted long ago: %s", len(removed), ", ".join(removed))
    return removed


def delete_backup(backup: DataDiskBackup) -> bool:
    try:
        driver_for_host(backup.host).delete_volume(pool=backup.storage_pool, name=backup.volume_name)
    except HypervisorError as exc:
        log.warning("could not delete backup %s: %s", backup.volume_name, exc)
        return False  # kept, and tried again at the next pass
    backup.delete()
    return True


# -- restoring ------------------------------------------------------------------------------------

def _open_consoles(desktop: Desktop) -> int:
    return live_console_sessions().filter(desktop=desktop).count()


def check_restore(*, backup: DataDiskBackup, to_desktop: Desktop | None = None, force: bool = False) -> Desktop:
    """The desktop the backup would be restored to; raises RestoreRefused saying why not."""
    target = to_desktop or backup.desktop
    if backup.state != B.DONE:
        raise RestoreRefused(f"This backup is {backup.get_state_display().lower()}, not a complete copy.")
    if not target.data_volume_name or target.host_id is None:
        raise RestoreRefused(f"{target} has no data disk to restore to.")
    if target.state not in (S.RUNNING, S.STOPPED, S.RESTORING):
        raise RestoreRefused(f"{target} is {target.get_state_display().lower()}; try again when it is running "
                             "or powered off.")
    if target.pk != backup.desktop_id and target.host_id != backup.host_id and not (
            target.host.shares_storage_with(backup.host)):
        raise RestoreRefused(f"The backup is on {backup.host}, which does not share storage with {target.host}.")
    consoles = _open_consoles(target)
    if consoles and not force:
        raise RestoreRefused(
            f"{target} has {consoles} console(s) open: the restore powers it off and replaces its data disk, so "
            "whoever works in it would lose what they have not saved. Ask them to log off first, or an "
            "administrator can force the restore (it closes the consoles).")
    return target


def request_restore(*, backup: DataDiskBackup, actor, to_desktop: Desktop | None = None,
                    force: bool = False) -> Desktop:
    """Check, write down who asked, and enqueue the restore on the target's host's worker."""
    target = check_restore(backup=backup, to_desktop=to_desktop, force=force)
    what = "its own backup" if target.pk == backup.desktop_id else f"a backup of {backup.desktop}"
    target.note(f"restore of the data disk from {what} of {backup.created_at:%Y-%m-%d %H:%M} requested"
                f"{' (forced: open consoles are closed)' if force else ''}", actor=actor)
    enqueue_for_host("broker.tasks.restore_data_disk_task", backup.pk, target.pk, actor.pk if actor else None, force,
                     host=target.host)
    return target


def restore_data_disk(*, backup_id: int, to_desktop_id: int | None = None, actor_id: int | None = None,
                      force: bool = False) -> Desktop | None:
    """Power the desktop off through the normal stop path, replace its data disk by the backup's
    copy, and start it again if it was running. Safe to run twice: a redelivered task finds the
    desktop `restoring` and copies again."""
    from django.contrib.auth import get_user_model

    from . import provisioning

    backup = DataDiskBackup.objects.select_related("host", "desktop").filter(pk=backup_id).first()
    if backup is None:
        return None
    target = Desktop.objects.select_related("host", "pool").filter(pk=to_desktop_id or backup.desktop_id).first()
    if target is None:
        return None
    actor = get_user_model().objects.filter(pk=actor_id).first() if actor_id else None
    try:
        target = check_restore(backup=backup, to_desktop=target, force=force)
    except RestoreRefused as refused:
        target.note(f"restore refused: {refused}", actor=actor)
        return target
    was_running = target.state == S.RUNNING
    started = time.monotonic()
    if target.state == S.RUNNING:
        provisioning.stop_desktop(desktop_id=target.pk, reason="powering off to restore its data disk from a backup")
        target = Desktop.objects.select_related("host", "pool").get(pk=target.pk)
    if target.state == S.STOPPED:
        if not target.transition(S.RESTORING, expected=S.STOPPED, actor=actor, restoring_from=backup,
                                 message=f"restoring the data disk from the backup of "
                                         f"{backup.created_at:%Y-%m-%d %H:%M}"):
            target.note("restore abandoned: the desktop was started meanwhile", actor=actor)
            return target
    elif target.state != S.RESTORING:
        target.note(f"restore abandoned: the desktop is {target.get_state_display().lower()}", actor=actor)
        return target
    # Whether to start it afterwards, written down so a redelivered task knows it too.
    if was_running:
        target.note(START_AFTER_RESTORE, actor=actor)
    start_after = target.events.filter(message=START_AFTER_RESTORE, created_at__gte=target.state_changed_at).exists()
    driver = driver_for_host(target.host)
    try:
        volume = driver.restore_disk(target.name, backup_path=backup.path, pool=target.host.storage_pool,
                                     volume=target.data_volume_name)
    except HypervisorError as exc:
        target.transition(S.STOPPED, expected=S.RESTORING, actor=actor, restoring_from=None,
                          message=f"restore failed, the desktop stays off: {exc}", last_error=str(exc))
        raise
    copied = time.monotonic() - started
    message = (f"data disk restored from the backup of {backup.created_at:%Y-%m-%d %H:%M} in {copied:.1f} s "
               f"({volume.allocation_bytes / 2**20:.1f} MiB)")
    if not start_after:
        target.transition(S.STOPPED, expected=S.RESTORING, message=message, actor=actor, restoring_from=None)
        return target
    if target.transition(S.STARTING, expected=S.RESTORING, message=message, actor=actor, restoring_from=None):
        provisioning.start_desktop(desktop_id=target.pk)
    return Desktop.objects.get(pk=target.pk)


def restore_events(desktop: Desktop, *, limit: int = 6):
    """The latest steps of the desktop's restores (and backups), newest first: what the portal
    shows as the restore's progress."""
    return list(desktop.events.filter(Q(to_state__in=(S.RESTORING, S.STARTING, S.RUNNING, S.STOPPING, S.STOPPED))
                                      | Q(message__icontains="restore"))
                .order_by("-created_at", "-id")[:limit])
