"""Backups of dedicated desktops' data disks on real libvirt: taken while the guest runs and
restored into it (the data written in the guest comes back), kept by the pool's retention,
scheduled per pool, restorable by the employee from the portal (their own only) and by an admin."""

import subprocess
import time
import uuid
from datetime import timedelta

import pytest
from django.conf import settings
from django.urls import reverse
from django.utils import timezone

from broker.hypervisor import driver_for_host
from broker.models import DataDiskBackup, Desktop, DesktopState, Pool
from broker.services import backups
from broker.services.assignment import launch_desktop
from broker.services.provisioning import prepare_host_storage
from tests.support.guest_typist import type_into_guest
from tests.support.measurements import write_measurement
from tests.support.tasks import tasks_among
from tests.support.waiting import file_contains, wait_for_guest_shell, wait_for_state, wait_until

S = DesktopState
B = DataDiskBackup.State
MIB = 2**20


def stopped_desktop_with_data(pool, host, *, user=None, name=None, data_mib: int = 0) -> Desktop:
    """A powered-off dedicated desktop whose data disk is a real volume on the host (no domain:
    the broker copies the disk of a desktop that is off without one). `data_mib` of data written."""
    name = name or f"{settings.VDI_NAME_PREFIX}{pool.name}-{uuid.uuid4().hex[:6]}"
    desktop = Desktop.objects.create(pool=pool, user=user, host=host, image_version=pool.image.current_version(),
                                     name=name, state=S.STOPPED, data_volume_name=f"{name}-data.qcow2")
    prepare_host_storage(host)
    volume = driver_for_host(host).create_volume(pool=host.storage_pool, name=desktop.data_volume_name,
                                                 capacity_bytes=pool.data_disk_gib * 2**30)
    if data_mib:
        # What a user's files look like to the copy: data written in the disk, not an empty one.
        subprocess.run(["qemu-io", "-f", "qcow2", "-c", f"write -P 0x5a 0 {data_mib}M", volume.path], check=True,
                       capture_output=True)
    return desktop


def backup_volumes(host, desktop) -> list[str]:
    return sorted(n for n in driver_for_host(host).list_volume_names(pool=settings.VDI_BACKUP_POOL)
                  if n.startswith(f"{desktop.name}-data-"))


# -- the restore, in a real guest ------------------------------------------------------------------

@pytest.mark.django_db(transaction=True)
@pytest.mark.libvirt
def test_data_written_in_the_guest_is_backed_up_live_and_restored_after_the_disk_is_destroyed(
        live_stack, pool, employee):
    desktop = wait_for_state(launch_desktop(user=employee, pool=pool), S.RUNNING, timeout=120)
    assert desktop.data_volume_name
    wait_for_guest_shell(desktop)
    marker = f"DATA-{uuid.uuid4().hex[:8]}"
    type_into_guest(live_stack, desktop, employee,
                    f"echo {marker} | dd of=/dev/vdb conv=fsync; echo WROTE > /dev/ttyS0\n")
    wait_until(lambda: file_contains(desktop.serial_log_path, b"WROTE"), timeout=30, what="the data disk write")

    started = time.monotonic()
    backup = backups.back_up_data_disk(desktop_id=desktop.pk, kind=DataDiskBackup.Kind.MANUAL)
    backup_s = time.monotonic() - started
    assert backup.state == B.DONE, backup.error
    assert backup.taken_live and backup.size_bytes > 0
    # The guest ran on through the backup: no pause, no reboot (its boot line is still alone).
    assert driver_for_host(desktop.host).domain_info(desktop.name).state == "running"
    assert Desktop.objects.get(pk=desktop.pk).state == S.RUNNING

    # The user's disk is destroyed: zeros over the start of it, from inside the guest.
    type_into_guest(live_stack, desktop, employee,
                    "dd if=/dev/zero of=/dev/vdb bs=4096 count=16 conv=fsync; echo ZEROED > /dev/ttyS0\n")
    wait_until(lambda: file_contains(desktop.serial_log_path, b"ZEROED"), timeout=30, what="the disk overwrite")
    wait_until(lambda: not backups._open_consoles(desktop), timeout=30, what="the typing console to close")

    started = time.monotonic()
    backups.request_restore(backup=backup, actor=employee)  # the portal's and the admin's path: the worker
    wait_until(lambda: desktop.events.filter(message__startswith="data disk restored from the backup").exists(),
               timeout=120, what="the worker to power the desktop off and restore its data disk")
    restored = wait_for_state(desktop, S.RUNNING, timeout=120)
    restored_state_s = time.monotonic() - started
    wait_for_guest_shell(restored)  # a new boot: the serial log starts afresh
    rto_s = time.monotonic() - started
    type_into_guest(live_stack, restored, employee,
                    f"head -c {len(marker)} /dev/vdb > /dev/ttyS0; echo > /dev/ttyS0\n")
    wait_until(lambda: file_contains(restored.serial_log_path, marker.encode()), timeout=30,
               what="the data written before the backup, read back in the guest")

    steps = list(restored.events.order_by("created_at", "id").values_list("to_state", flat=True))
    assert [s for s in steps if s][-5:] == [S.STOPPING, S.STOPPED, S.RESTORING, S.STARTING, S.RUNNING]
    assert restored.events.filter(message__startswith="data disk restored from the backup").exists()
    at = dict(restored.events.filter(to_state__in=(S.STOPPING, S.RESTORING, S.STARTING, S.RUNNING))
              .order_by("created_at").values_list("to_state", "created_at"))
    write_measurement("restore of 1 desktop: power-off through the stop path (s)",
                      round((at[S.RESTORING] - at[S.STOPPING]).total_seconds(), 1))
    write_measurement("restore of 1 desktop: copying the backup back (s)",
                      round((at[S.STARTING] - at[S.RESTORING]).total_seconds(), 2))
    write_measurement("backup of 1 running desktop's data disk (s)", round(backup_s, 2))
    write_measurement("restore of 1 desktop until running again (s)", round(restored_state_s, 1))
    write_measurement("restore of 1 desktop until its guest is up again, RTO (s)", round(rto_s, 1))


# -- retention and schedule -------------------------------------------------------------------------

@pytest.mark.django_db(transaction=True)
@pytest.mark.libvirt
def test_retention_keeps_the_pools_number_of_newest_backups(pool, host, employee):
    Pool.objects.filter(pk=pool.pk).update(backup_keep=2)
    pool.refresh_from_db()
    desktop = stopped_desktop_with_data(pool, host, user=employee, data_mib=1)
    taken = [backups.back_up_data_disk(desktop_id=desktop.pk) for _ in range(4)]
    assert all(b.state == B.DONE for b in taken), [b.error for b in taken]
    assert not taken[0].taken_live

    kept = DataDiskBackup.objects.filter(desktop=desktop).order_by("created_at")
    assert [b.pk for b in kept] == [taken[2].pk, taken[3].pk]
    assert backup_volumes(host, desktop) == sorted(b.volume_name for b in taken[2:])
    assert desktop.events.filter(message__startswith="retention (keep 2)").count() == 2


def _backup_row(desktop, *, hours_ago: float, state=B.DONE):
    row = DataDiskBackup.objects.create(desktop=desktop, host=desktop.host, storage_pool="vdi-backups",
                                        volume_name=f"{desktop.name}-{hours_ago}", state=state)
    DataDiskBackup.objects.filter(pk=row.pk).update(created_at=timezone.now() - timedelta(hours=hours_ago))
    return row


@pytest.mark.django_db
def test_the_schedule_picks_the_desktops_whose_last_backup_is_older_than_their_pools_interval(
        pool, host, image, floating, django_capture_on_commit_callbacks):
    def desktop(name, *, in_pool=pool, state=S.RUNNING, data=True):
        return Desktop.objects.create(pool=in_pool, host=host, name=name, state=state,
                                      data_volume_name=f"{name}-data.qcow2" if data else "")

    old = desktop("old")
    _backup_row(old, hours_ago=25)
    recent = desktop("recent")
    _backup_row(recent, hours_ago=2)
    _backup_row(recent, hours_ago=1, state=B.FAILED)
    never = desktop("never", state=S.STOPPED)
    busy = desktop("busy")
    _backup_row(busy, hours_ago=30)
    _backup_row(busy, hours_ago=0.1, state=B.RUNNING)
    desktop("failed", state=S.FAILED)
    desktop("no-data", data=False)
    desktop("floating", in_pool=floating)
    hourly = Pool.objects.create(name="hourly", display_name="Hourly", image=image, backup_every_hours=1)
    _backup_row(desktop("hourly-1", in_pool=hourly), hours_ago=1.5)
    off = Pool.objects.create(name="off", display_name="Off", image=image, backup_every_hours=0)
    desktop("off-1", in_pool=off)

    due = {d.name for d in backups.backups_due(timezone.now())}
    assert due == {"old", "never", "hourly-1"}
    # 22.5 h later by the injected clock: "recent" is 24.5 h old, and "busy"'s backup that never
    # finished no longer holds it back (its worker died).
    later = {d.name for d in backups.backups_due(timezone.now() + timedelta(hours=22.5))}
    assert later == due | {"recent", "busy"}

    with django_capture_on_commit_callbacks(execute=False) as sent:
        assert sorted(backups.enqueue_due_backups()) == sorted(due)
    assert len(tasks_among(sent)) == 3
    assert settings.CELERY_BEAT_SCHEDULE["back-up-data-disks"]["task"] == "broker.tasks.back_up_due_data_disks_task"
    assert settings.CELERY_BEAT_SCHEDULE["back-up-data-disks"]["schedule"] == 3600


@pytest.mark.django_db
def test_a_restore_is_refused_while_a_console_is_open_unless_forced(pool, host, employee,
                                                                    django_capture_on_commit_callbacks):
    from broker.models import ConsoleSession

    desktop = Desktop.objects.create(pool=pool, host=host, user=employee, name="busy", state=S.RUNNING,
                                     data_volume_name="busy-data.qcow2")
    backup = _backup_row(desktop, hours_ago=3)
    ConsoleSession.objects.create(user=employee, desktop=desktop, protocol="vnc")

    with pytest.raises(backups.RestoreRefused, match="1 console.*open.*force"):
        backups.request_restore(backup=backup, actor=employee)
    with django_capture_on_commit_callbacks(execute=False) as sent:
        backups.request_restore(backup=backup, actor=employee, force=True)
    assert len(tasks_among(sent)) == 1
    assert desktop.events.filter(message__contains="forced").exists()


# -- the portal ---------------------------------------------------------------------------------------

@pytest.fixture
def two_users_backups(pool, host, employee, other_employee):
    mine = Desktop.objects.create(pool=pool, host=host, user=employee, name="alice-desk", state=S.RUNNING,
                                  data_volume_name="alice-desk-data.qcow2")
    theirs = Desktop.objects.create(pool=pool, host=host, user=other_employee, name="bob-desk", state=S.RUNNING,
                                    data_volume_name="bob-desk-data.qcow2")
    return _backup_row(mine, hours_ago=5), _backup_row(theirs, hours_ago=5)


@pytest.mark.django_db
def test_the_employee_sees_and_restores_their_own_backups_only(client, employee, two_users_backups,
                                                               django_capture_on_commit_callbacks):
    mine, theirs = two_users_backups
    client.force_login(employee)

    page = client.get(reverse("portal:files", args=[mine.desktop_id]))
    assert page.status_code == 200
    assert b"files written since the backup are lost" in page.content
    assert mine.volume_name.encode() not in page.content  # dates and sizes, not host paths
    assert len(page.context["backups"]) == 1
    assert client.get(reverse("portal:files", args=[theirs.desktop_id])).status_code == 404

    with django_capture_on_commit_callbacks(execute=False) as sent:
        refused = client.post(reverse("portal:restore", args=[theirs.desktop_id, theirs.pk]))
        # Their backup through my desktop's address: still not mine.
        crossed = client.post(reverse("portal:restore", args=[mine.desktop_id, theirs.pk]))
    assert refused.status_code == 404 and crossed.status_code == 404
    assert tasks_among(sent) == []

    with django_capture_on_commit_callbacks(execute=False) as sent:
        done = client.post(reverse("portal:restore", args=[mine.desktop_id, mine.pk]))
    assert done.status_code == 302
    assert len(tasks_among(sent)) == 1
    assert mine.desktop.events.filter(message__contains="restore of the data disk", actor=employee).exists()


@pytest.mark.django_db
def test_the_portal_restore_needs_a_post_with_the_csrf_token(employee, two_users_backups):
    from django.test import Client

    mine, _theirs = two_users_backups
    client = Client(enforce_csrf_checks=True)
    client.force_login(employee)
    assert client.get(reverse("portal:restore", args=[mine.desktop_id, mine.pk])).status_code == 405
    assert client.post(reverse("portal:restore", args=[mine.desktop_id, mine.pk])).status_code == 403


# -- the admin ----------------------------------------------------------------------------------------

@pytest.mark.django_db
def test_the_admin_lists_a_desktops_backups_and_restores_one_to_another_desktop_after_confirming(
        admin_client, pool, host, employee, other_employee, django_capture_on_commit_callbacks):
    source = Desktop.objects.create(pool=pool, host=host, user=employee, name="src", state=S.STOPPED,
                                    data_volume_name="src-data.qcow2")
    target = Desktop.objects.create(pool=pool, host=host, user=other_employee, name="dst", state=S.STOPPED,
                                    data_volume_name="dst-data.qcow2")
    backup = _backup_row(source, hours_ago=4)
    page = admin_client.get(reverse("admin:broker_desktop_change", args=[source.pk]))
    assert b"Backups of the data disk" in page.content

    url = reverse("admin:broker_datadiskbackup_changelist")
    confirm = admin_client.post(url, {"action": "restore_to_another_desktop", "_selected_action": [backup.pk]})
    assert confirm.status_code == 200 and b"dst" in confirm.content
    with django_capture_on_commit_callbacks(execute=False) as sent:
        admin_client.post(url, {"action": "restore_to_another_desktop", "_selected_action": [backup.pk],
                                "to_desktop": target.pk, "apply": "1"})
    assert len(tasks_among(sent)) == 1
    assert target.events.filter(message__contains="from a backup of src").exists()


# -- 20 desktops: the figures for the note ---------------------------------------------------------------

@pytest.mark.django_db(transaction=True)
@pytest.mark.libvirt
def test_measure_backing_up_and_restoring_the_data_disks_of_a_pool_of_20(pool, host):
    """20 powered-off desktops with 32 MiB written on each data disk, backed up one after the
    other (as one host's worker does) and restored: the figures for README's note."""
    desktops = [stopped_desktop_with_data(pool, host, data_mib=32) for _ in range(20)]
    started = time.monotonic()
    taken = [backups.back_up_data_disk(desktop_id=d.pk) for d in desktops]
    backup_s = time.monotonic() - started
    assert all(b.state == B.DONE for b in taken), [b.error for b in taken]
    assert all(b.size_bytes >= 32 * MIB for b in taken)

    started = time.monotonic()
    for backup in taken:
        backups.restore_data_disk(backup_id=backup.pk)
    restore_s = time.monotonic() - started
    assert all(Desktop.objects.get(pk=d.pk).state == S.STOPPED for d in desktops)
    restored = driver_for_host(host).list_volumes(pool=host.storage_pool)
    sizes = {v.name: v.allocation_bytes for v in restored}
    assert all(sizes[d.data_volume_name] >= 32 * MIB for d in desktops)
    write_measurement("backup of 20 stopped desktops' data disks, 32 MiB each, one after the other (s)",
                      round(backup_s, 1))
    write_measurement("restore of those 20 data disks (copy only, s)", round(restore_s, 1))
