"""Pools on the real stack (worker, gateway, libvirtd): spares, floating resets that really wipe, dedicated desktops that
keep their data disk across a recompose, placement, and pools that fail without looping."""

import shutil
import uuid
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from broker.hypervisor import driver_for_uri
from broker.models import Desktop, DesktopState
from broker.services.assignment import launch_desktop
from broker.services.desktop_sessions import end_desktop_session, enforce_disconnect_timeouts
from broker.services.images import publish_image_version
from broker.services.pools import reconcile_pool
from broker.services.recompose import recompose_pool
from tests.support.guest_typist import type_into_guest
from tests.support.waiting import file_contains, wait_for_guest_shell, wait_for_state, wait_until

S = DesktopState
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.libvirt]


def volume_path(desktop, name=None):
    return f"{desktop.host.storage_path}/{name or desktop.volume_name}"


@pytest.mark.libvirt
def test_powered_off_spares_start_when_claimed(live_stack, floating, employee):
    floating.spares_powered_on = False
    floating.save()
    reconcile_pool(pool_id=floating.pk)
    spare = wait_for_state(Desktop.objects.get(pool=floating), S.STOPPED)
    assert driver_for_uri("qemu:///system").domain_info(spare.name).state == "shutoff"
    mine = launch_desktop(user=employee, pool=floating)
    assert mine.pk == spare.pk
    wait_for_state(mine, S.RUNNING)


@pytest.mark.libvirt
def test_a_floating_desktop_is_wiped_before_the_next_user_gets_one(live_stack, floating, employee,
                                                                  other_employee):
    reconcile_pool(pool_id=floating.pk)
    spare = wait_for_state(Desktop.objects.get(pool=floating), S.RUNNING)

    mine = launch_desktop(user=employee, pool=floating)
    assert mine.pk == spare.pk and mine.state == S.RUNNING  # a ready spare: no wait at all
    wait_for_guest_shell(mine)
    secret = f"SECRET-OF-ALICE-{uuid.uuid4().hex[:8]}"
    type_into_guest(live_stack, mine, employee, f"echo {secret} > /dev/vda; sync\n")
    wait_until(lambda: file_contains(volume_path(mine), secret.encode()), timeout=30,
               what="Alice's data to reach her desktop's disk")

    end_desktop_session(desktop=mine, actor=employee, reason="logged off")
    wait_for_state(mine, S.DELETED)
    reconcile_pool(pool_id=floating.pk)
    theirs = launch_desktop(user=other_employee, pool=floating)
    theirs = wait_for_state(theirs, S.RUNNING)

    assert theirs.pk != mine.pk and theirs.name != mine.name
    assert not file_contains(volume_path(theirs), secret.encode())
    assert not driver_for_uri("qemu:///system").list_volumes(pool=settings.VDI_STORAGE_POOL) or \
        mine.volume_name not in {v.name for v in driver_for_uri("qemu:///system").list_volumes(
            pool=settings.VDI_STORAGE_POOL)}
    assert Desktop.objects.get(pk=mine.pk).user is None  # never handed to anyone again


@pytest.mark.libvirt
def test_recompose_rebuilds_the_system_disk_and_keeps_the_users_data(live_stack, pool, employee, host,
                                                                     golden_image_path):
    desktop = wait_for_state(launch_desktop(user=employee, pool=pool), S.RUNNING)
    assert desktop.data_volume_name
    wait_for_guest_shell(desktop)
    marker = f"ALICE-DATA-{uuid.uuid4().hex[:8]}"
    type_into_guest(live_stack, desktop, employee, f"echo {marker} > /dev/vdb; sync\n")
    data_path = volume_path(desktop, desktop.data_volume_name)
    wait_until(lambda: file_contains(data_path, marker.encode()), timeout=30, what="data on the data disk")

    v2_path = f"{settings.VDI_IMAGE_PATH}/{settings.VDI_NAME_PREFIX}golden-v2.qcow2"
    shutil.copyfile(golden_image_path, v2_path)
    try:
        v2 = publish_image_version(image=pool.image, path=v2_path, host=host)
        assert recompose_pool(pool=pool, actor=None) == 1
        desktop = wait_for_state(desktop, S.RUNNING, timeout=90)
        assert desktop.image_version == v2
        assert file_contains(data_path, marker.encode())  # the user's data survived
        xml_backing = driver_for_uri("qemu:///system")
        assert xml_backing.domain_info(desktop.name).state == "running"
        assert desktop.events.filter(to_state=S.RECOMPOSING).exists()
    finally:
        from tests.support.libvirt_cleanup import remove_test_leftovers

        remove_test_leftovers(only_ours=True)
        Desktop.objects.update(state=S.DELETED)
        import os

        os.remove(v2_path)


def test_a_finished_clone_lets_the_pool_fill_its_slot_at_once(live_stack, floating, host):
    """Spares are refilled as clones finish, not at the next periodic pass (30 s)."""
    host.max_parallel_provisioning = 1
    host.save()
    floating.min_spares = 2
    floating.save()
    assert reconcile_pool(pool_id=floating.pk)["created"] == 1  # one in flight per host
    wait_until(lambda: Desktop.objects.filter(pool=floating, state=S.RUNNING).count() == 2, timeout=60,
               what="the second spare, created when the first one finished")


def test_a_dedicated_desktop_left_disconnected_is_powered_off_and_starts_again_on_launch(live_stack, pool,
                                                                                         employee):

    desktop = wait_for_state(launch_desktop(user=employee, pool=pool), S.RUNNING)
    long_ago = timezone.now() - timedelta(minutes=pool.disconnect_timeout_minutes + 1)
    Desktop.objects.filter(pk=desktop.pk).update(assigned_at=long_ago, state_changed_at=long_ago)
    assert enforce_disconnect_timeouts() == 1
    # The demo guest has no ACPI daemon: after the grace period the broker powers it off.
    desktop = wait_for_state(desktop, S.STOPPED, timeout=60)
    assert driver_for_uri("qemu:///system").domain_info(desktop.name).state == "shutoff"
    assert desktop.data_volume_name  # its disks stay
    again = launch_desktop(user=employee, pool=pool)
    assert again.pk == desktop.pk
    wait_for_state(again, S.RUNNING)
