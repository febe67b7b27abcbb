"""What the backups leave behind: a restore whose task was lost (a Redis restart) is sent again
by the host pass from the same backup; a deleted desktop's backups are kept for the pool's
period after its deletion, then deleted (row and volume)."""

from datetime import timedelta
from unittest.mock import patch

import pytest
from django.utils import timezone

from broker.hypervisor import driver_for_host
from broker.models import DataDiskBackup, Desktop, DesktopState
from broker.services import backups
from broker.services.hosts import RESTORE_STUCK_AFTER, reconcile_host
from tests.test_data_backups import backup_volumes, stopped_desktop_with_data

S = DesktopState
B = DataDiskBackup.State


def _interrupted_restore(desktop, backup):
    """As a restore leaves the desktop when its task is lost after the old disk was removed."""
    driver_for_host(desktop.host).delete_volume(pool=desktop.host.storage_pool, name=desktop.data_volume_name)
    Desktop.objects.filter(pk=desktop.pk).update(
        state=S.RESTORING, restoring_from=backup,
        state_changed_at=timezone.now() - RESTORE_STUCK_AFTER - timedelta(minutes=1))


@pytest.mark.django_db(transaction=True)
@pytest.mark.libvirt
def test_a_restore_whose_task_was_lost_is_sent_again_and_brings_the_disk_back(
        pool, host, employee):
    desktop = stopped_desktop_with_data(pool, host, user=employee, data_mib=1)
    backup = backups.back_up_data_disk(desktop_id=desktop.pk)
    assert backup.state == B.DONE, backup.error
    _interrupted_restore(desktop, backup)

    # A pass before the threshold leaves a restore that may still be copying alone.
    done = reconcile_host(host_id=host.pk, now=timezone.now() - timedelta(minutes=10))
    assert desktop.name not in done["retried"]
    assert not desktop.events.filter(message__startswith="restore interrupted").exists()

    sent = []
    with patch("broker.services.hosts.enqueue_for_host", lambda *args, **kwargs: sent.append(args)):
        done = reconcile_host(host_id=host.pk)
    assert done["retried"] == [desktop.name]
    assert sent == [("broker.tasks.restore_data_disk_task", backup.pk, desktop.pk, None, False)]
    assert desktop.events.filter(message__startswith="restore interrupted").exists()

    # What that task does, run here: the disk is back, from the same backup.
    backups.restore_data_disk(backup_id=backup.pk, to_desktop_id=desktop.pk)
    desktop.refresh_from_db()
    assert desktop.state == S.STOPPED and desktop.restoring_from is None
    assert desktop.data_volume_name in driver_for_host(host).list_volume_names(pool=host.storage_pool)


@pytest.mark.django_db(transaction=True)
@pytest.mark.libvirt
def test_a_lost_restore_whose_backup_is_gone_fails_with_what_to_do(pool, host, employee):
    desktop = stopped_desktop_with_data(pool, host, user=employee)
    _interrupted_restore(desktop, None)

    done = reconcile_host(host_id=host.pk)

    desktop.refresh_from_db()
    assert done["failed"] == [desktop.name]
    assert desktop.state == S.FAILED
    assert "restore another of its backups to a new desktop" in desktop.last_error


@pytest.mark.django_db(transaction=True)
@pytest.mark.libvirt
def test_a_deleted_desktops_backups_are_kept_for_the_pools_period_then_deleted(pool, host, employee, other_employee):
    pool.keep_backups_of_deleted_desktops_days = 30
    pool.save(update_fields=["keep_backups_of_deleted_desktops_days"])
    departed = stopped_desktop_with_data(pool, host, user=employee, data_mib=1)
    recent = stopped_desktop_with_data(pool, host, user=other_employee, data_mib=1)
    for desktop, days_ago in ((departed, 31), (recent, 5)):
        assert backups.back_up_data_disk(desktop_id=desktop.pk).state == B.DONE
        Desktop.objects.filter(pk=desktop.pk).update(state=S.DELETED,
                                                     state_changed_at=timezone.now() - timedelta(days=days_ago))
    DataDiskBackup.objects.create(desktop=departed, host=host, storage_pool="vdi-backups",
                                  volume_name="never-written", state=B.FAILED)

    backups.enqueue_due_backups()  # the hourly pass

    assert not DataDiskBackup.objects.filter(desktop=departed).exists()
    assert backup_volumes(host, departed) == []
    assert DataDiskBackup.objects.filter(desktop=recent, state=B.DONE).count() == 1
    assert len(backup_volumes(host, recent)) == 1
