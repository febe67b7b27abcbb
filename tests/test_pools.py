"""Pools on the real stack: spares, floating resets that really wipe, dedicated desktops that
keep their data disk across a recompose, placement, and pools that fail without looping."""

from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from broker.models import BrokerEvent, ConsoleSession, Desktop, DesktopState, GoldenImageVersion, Host, Pool
from broker.selectors import pick_host
from broker.services.assignment import launch_desktop
from broker.services.desktop_sessions import end_desktop_session, enforce_disconnect_timeouts
from broker.services.errors import LaunchRefused
from broker.services.pools import reconcile_pool

S = DesktopState
# Task sending is captured (not executed) by django_capture_on_commit_callbacks: these tests
# check the broker's decisions; tests/test_pools_live.py runs the same paths with a worker.
pytestmark = pytest.mark.django_db


def test_logging_off_a_floating_desktop_detaches_it_at_once(floating, employee, host,
                                                            django_capture_on_commit_callbacks):
    desktop = Desktop.objects.create(pool=floating, user=employee, host=host, state=S.RUNNING,
                                     image_version=floating.image.current_version(), name="vditest-x-logoff")
    end_desktop_session(desktop=desktop, actor=employee, reason="logged off")
    desktop.refresh_from_db()
    assert desktop.state == S.DELETING and desktop.user is None


def test_a_floating_desktop_disconnected_past_the_timeout_is_reset(floating, employee, host):
    long_ago = timezone.now() - timedelta(hours=2)
    desktop = Desktop.objects.create(pool=floating, user=employee, host=host, state=S.RUNNING,
                                     image_version=floating.image.current_version(), name="vditest-x-idle",
                                     assigned_at=long_ago, state_changed_at=long_ago)
    ConsoleSession.objects.create(user=employee, desktop=desktop, protocol="vnc",
                                  closed_at=timezone.now() - timedelta(minutes=31))
    assert enforce_disconnect_timeouts() == 1
    desktop.refresh_from_db()
    assert desktop.state == S.DELETING and desktop.user is None


def test_a_connected_or_recently_disconnected_desktop_is_left_alone(floating, employee, host):
    long_ago = timezone.now() - timedelta(hours=2)
    desktop = Desktop.objects.create(pool=floating, user=employee, host=host, state=S.RUNNING,
                                     image_version=floating.image.current_version(), name="vditest-x-busy",
                                     assigned_at=long_ago, state_changed_at=long_ago)
    ConsoleSession.objects.create(user=employee, desktop=desktop, protocol="vnc",
                                  closed_at=timezone.now() - timedelta(minutes=5))
    assert enforce_disconnect_timeouts() == 0
    ConsoleSession.objects.create(user=employee, desktop=desktop, protocol="vnc")  # open now
    ConsoleSession.objects.filter(closed_at__isnull=False).update(closed_at=timezone.now() - timedelta(hours=1))
    assert enforce_disconnect_timeouts() == 0
    assert Desktop.objects.get(pk=desktop.pk).state == S.RUNNING


def test_a_console_left_open_by_a_dead_gateway_does_not_keep_a_desktop_connected(floating, employee, host):
    """The gateway died 40 minutes ago with the console open: its row stopped being touched.
    The row is closed at its last sign of life, and the disconnect timeout counts from there."""
    long_ago = timezone.now() - timedelta(hours=2)
    desktop = Desktop.objects.create(pool=floating, user=employee, host=host, state=S.RUNNING,
                                     image_version=floating.image.current_version(), name="vditest-x-dead-gw",
                                     assigned_at=long_ago, state_changed_at=long_ago)
    died = timezone.now() - timedelta(minutes=40)
    row = ConsoleSession.objects.create(user=employee, desktop=desktop, protocol="vnc")
    ConsoleSession.objects.filter(pk=row.pk).update(opened_at=long_ago, last_seen_at=died)

    assert enforce_disconnect_timeouts() == 1
    row.refresh_from_db()
    assert (row.closed_at, row.close_code) == (died, 1006)
    assert "gateway stopped answering" in row.close_reason
    assert BrokerEvent.objects.filter(message__contains="whose gateway stopped answering").exists()
    desktop.refresh_from_db()
    assert desktop.state == S.DELETING and desktop.user is None


# --- spares and size ---------------------------------------------------------------------------

def test_reconcile_tops_up_spares_but_never_exceeds_the_maximum(floating, host, employee, other_employee,
                                                                django_capture_on_commit_callbacks):
    floating.min_spares, floating.max_desktops = 2, 3
    floating.save()
    with django_capture_on_commit_callbacks() as sent:
        assert reconcile_pool(pool_id=floating.pk)["created"] == 2
    assert len(sent) == 2  # one provisioning task per spare
    assert reconcile_pool(pool_id=floating.pk)["created"] == 0  # already on their way

    for desktop, user in zip(Desktop.objects.filter(pool=floating), [employee, other_employee]):
        Desktop.objects.filter(pk=desktop.pk).update(user=user)  # both taken
    floating.min_spares = 5
    floating.save()
    assert reconcile_pool(pool_id=floating.pk)["created"] == 1  # 3 is the maximum
    names = sorted(Desktop.objects.filter(pool=floating).values_list("name", flat=True))
    assert names == [f"{settings.VDI_NAME_PREFIX}float-000{n}" for n in (1, 2, 3)]


def test_provisioning_is_bounded_per_host(floating, host):
    host.max_parallel_provisioning = 2
    host.save()
    floating.min_spares, floating.max_desktops = 5, 10
    floating.save()
    assert reconcile_pool(pool_id=floating.pk)["created"] == 2


def test_an_exhausted_pool_says_so(floating, employee, other_employee, host):
    floating.min_spares, floating.max_desktops = 0, 1
    floating.save()
    launch_desktop(user=employee, pool=floating)
    with pytest.raises(LaunchRefused, match="All 1 desktops of Call centre are in use"):
        launch_desktop(user=other_employee, pool=floating)


def test_a_failing_pool_backs_off_instead_of_looping(floating, host):
    GoldenImageVersion.objects.update(path="/var/lib/vdi/images/vditest-missing.qcow2")
    from broker.tasks import provision_desktop_task

    floating.min_spares = 1
    floating.save()
    for _ in range(3):
        reconcile_pool(pool_id=floating.pk)
        for desktop in Desktop.objects.filter(pool=floating, state=S.QUEUED):
            provision_desktop_task.apply(args=[desktop.pk])
    floating.refresh_from_db()
    assert floating.consecutive_failures == 3 and floating.backoff_until > timezone.now()
    assert BrokerEvent.objects.filter(pool=floating, message__contains="3 provisioning failures").exists()
    done = reconcile_pool(pool_id=floating.pk)
    assert done["backing_off"] and done["created"] == 0
    assert done["cleared_failed"] == 1  # the failed spare is cleared out meanwhile


def test_a_new_version_rolls_floating_spares_over(floating, host, golden_image_path,
                                                  django_capture_on_commit_callbacks):
    old = floating.image.current_version()
    spare = Desktop.objects.create(pool=floating, host=host, image_version=old, state=S.RUNNING,
                                   name="vditest-x-old-spare")
    GoldenImageVersion.objects.create(image=floating.image, number=2, path=old.path)
    with django_capture_on_commit_callbacks():
        done = reconcile_pool(pool_id=floating.pk)
    assert done["rolled_over"] == 1
    assert Desktop.objects.get(pk=spare.pk).state == S.DELETING


# --- placement -----------------------------------------------------------------------------------

def test_placement_honours_overcommit(pool, host):
    Host.objects.filter(pk=host.pk).update(cpus=2, memory_mib=4096, vcpu_overcommit=2.0, memory_overcommit=1.0)
    pool.vcpus, pool.memory_mib = 2, 1024
    pool.save()
    for n in range(2):
        Desktop.objects.create(pool=pool, host=host, image_version=pool.image.current_version(), state=S.RUNNING,
                               name=f"vditest-x-load-{n}")
    assert pick_host(pool=pool) is None  # 4 of 4 vCPUs placed
    second = Host.objects.create(name="second", libvirt_uri="qemu:///system", domain_type="qemu", cpus=8,
                                 memory_mib=16384)
    assert pick_host(pool=pool) == second


def test_a_host_in_maintenance_gets_no_new_desktops(pool, host, employee, django_capture_on_commit_callbacks):
    second = Host.objects.create(name="second", libvirt_uri="qemu:///system", domain_type="qemu")
    Host.objects.filter(pk=host.pk).update(in_maintenance=True)
    with django_capture_on_commit_callbacks():
        desktop = launch_desktop(user=employee, pool=pool)
    assert desktop.host == second
    Host.objects.filter(pk=second.pk).update(in_maintenance=True)
    Desktop.objects.all().delete()
    with pytest.raises(LaunchRefused, match="No hypervisor host has room"):
        launch_desktop(user=employee, pool=pool)


def test_a_host_that_stops_answering_is_marked_offline_and_avoided(floating, employee, host,
                                                                    django_capture_on_commit_callbacks):
    from broker.services.hosts import check_host

    dead = Host.objects.create(name="dead", libvirt_uri="qemu+tcp://127.0.0.1:1/system", domain_type="qemu")
    old = Desktop.objects.create(pool=floating, user=employee, host=dead, state=S.RUNNING,
                                 image_version=floating.image.current_version(), name="vditest-x-on-dead")
    check_host(host_id=dead.pk)
    dead.refresh_from_db()
    assert not dead.is_online and "cannot connect" in dead.last_error
    assert BrokerEvent.objects.filter(host=dead, message__startswith="host went offline").exists()
    with django_capture_on_commit_callbacks():
        desktop = launch_desktop(user=employee, pool=floating)
    assert desktop.pk != old.pk and desktop.host == host
    old.refresh_from_db()
    assert old.state == S.FAILED and old.user is None


def test_a_maintenance_window_triggers_the_recompose(pool, employee, host, django_capture_on_commit_callbacks):
    old = pool.image.current_version()
    desktop = Desktop.objects.create(pool=pool, user=employee, host=host, image_version=old, state=S.RUNNING,
                                     name="vditest-x-window")
    GoldenImageVersion.objects.create(image=pool.image, number=2, path=old.path)
    pool.recompose_after = timezone.now() + timedelta(hours=1)
    pool.save()
    with django_capture_on_commit_callbacks():
        reconcile_pool(pool_id=pool.pk)
    assert Desktop.objects.get(pk=desktop.pk).state == S.RUNNING  # not yet
    Pool.objects.filter(pk=pool.pk).update(recompose_after=timezone.now() - timedelta(minutes=1))
    with django_capture_on_commit_callbacks() as sent:
        done = reconcile_pool(pool_id=pool.pk)
    assert done["recomposing"] == 1 and len(sent) >= 1
    assert Desktop.objects.get(pk=desktop.pk).state == S.RECOMPOSING
    assert Pool.objects.get(pk=pool.pk).recompose_after is None
