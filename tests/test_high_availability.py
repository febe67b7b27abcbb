"""High availability on two real libvirt daemons: the second one dies (its libvirt stops
answering, its guest goes on running, as after a crash of the daemon or a cut network); only
once its fence agent has powered it off does its dedicated desktop start on the first host,
with its data disk, exactly once; when the dead host comes back its stale definition goes."""

import subprocess
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from broker.models import BrokerEvent, Desktop, DesktopState, Host, Pool
from broker.services.assignment import launch_desktop
from broker.services.high_availability import declare_fenced, hosts_due_for_fencing
from broker.services.hosts import check_host, reconcile_host
from broker.tasks import fence_dead_hosts_task
from tests.conftest import SECOND_DAEMON
from tests.support.guest_typist import type_into_guest
from tests.support.stack import ROOT
from tests.support.waiting import file_contains, wait_for_guest_shell, wait_for_state, wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.libvirt]
S = DesktopState
DAEMON_RUN = Path("/var/lib/vdi/hosts") / SECOND_DAEMON / "run"


def qemu_processes_of(name: str) -> list[int]:
    """Every QEMU process on this machine that runs the domain `name` (either daemon's)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmdline and b"qemu-system" in cmdline[0] and any(arg.startswith(f"guest={name},".encode())
                                                            for arg in cmdline):
            found.append(int(proc.name))
    return found


def test_a_dead_host_is_fenced_and_its_desktop_restarts_elsewhere_with_its_data_exactly_once(
        live_stack, two_hosts, pool, employee):
    first, second = two_hosts
    Host.objects.filter(pk=first.pk).update(is_enabled=False)  # it starts on the second host
    desktop = wait_for_state(launch_desktop(user=employee, pool=pool), S.RUNNING, timeout=120)
    assert desktop.host_id == second.pk and desktop.data_volume_name
    wait_for_guest_shell(desktop)
    marker = f"DATA-{uuid.uuid4().hex[:8]}"
    # fsync on the disk: the guest asks for a flush, as a file system does on a commit.
    type_into_guest(live_stack, desktop, employee, f"echo {marker} | dd of=/dev/vdb conv=fsync; echo WROTE > /dev/ttyS0\n")
    wait_until(lambda: file_contains(desktop.serial_log_path, b"WROTE"), timeout=30, what="the data disk write")
    Host.objects.filter(pk=first.pk).update(is_enabled=True)
    fence = f"{ROOT}/scripts/fence-local-daemon.sh {SECOND_DAEMON}"

    # The second host's libvirt dies; its guest goes on running.
    subprocess.run([str(ROOT / "scripts/start-second-libvirtd.sh"), "--stop", SECOND_DAEMON], timeout=60, check=True)
    try:
        assert len(qemu_processes_of(desktop.name)) == 1
        assert not check_host(host_id=second.pk).is_online

        # A fence that fails: nothing starts elsewhere, ever (the guest may still be writing).
        Host.objects.filter(pk=second.pk).update(fence_command="/bin/false", fence_after_seconds=0)
        fence_dead_hosts_task()
        assert Desktop.objects.get(pk=desktop.pk).host_id == second.pk
        assert BrokerEvent.objects.filter(host=second, message__contains="fencing failed (exit status 1)").exists()
        assert Host.objects.get(pk=second.pk).fenced_at is None

        # The fence agent powers it off; then the desktop starts on the first host, with its disks.
        Host.objects.filter(pk=second.pk).update(fence_command=fence)
        fence_dead_hosts_task()
        assert Host.objects.get(pk=second.pk).fenced_at is not None
        assert not Host.objects.get(pk=second.pk).is_enabled
        restarted = wait_for_state(desktop, S.RUNNING, timeout=120)
        assert restarted.host_id == first.pk
        assert len(qemu_processes_of(desktop.name)) == 1
        wait_for_guest_shell(restarted)
        type_into_guest(live_stack, restarted, employee, "head -c 13 /dev/vdb > /dev/ttyS0; echo > /dev/ttyS0\n")
        wait_until(lambda: file_contains(restarted.serial_log_path, marker.encode()), timeout=30,
                   what="the data written before the failure")
        # A second pass changes nothing: no second start.
        fence_dead_hosts_task()
        starts = restarted.events.filter(to_state=S.STARTING).count()
        assert starts == 2, list(restarted.events.values_list("to_state", "message"))  # the first boot, the restart
    finally:
        subprocess.run([str(ROOT / "scripts/start-second-libvirtd.sh"), SECOND_DAEMON], capture_output=True,
                       timeout=60, check=True)

    # The dead host comes back: its stale definition of the desktop is removed, nothing else.
    assert check_host(host_id=second.pk).is_online
    done = reconcile_host(host_id=second.pk)
    assert done["stale_copies"] == [desktop.name], done
    assert Desktop.objects.get(pk=desktop.pk).state == S.RUNNING
    assert len(qemu_processes_of(desktop.name)) == 1


def test_fencing_waits_for_the_hosts_threshold(two_hosts):
    _first, second = two_hosts
    now = timezone.now()
    Host.objects.filter(pk=second.pk).update(is_online=False, offline_since=now - timedelta(seconds=50),
                                             fence_command="/bin/true", fence_after_seconds=60)
    assert hosts_due_for_fencing(now=now) == []
    assert [h.pk for h in hosts_due_for_fencing(now=now + timedelta(seconds=11))] == [second.pk]
    Host.objects.filter(pk=second.pk).update(fence_after_seconds=None)  # policy: never by itself
    assert hosts_due_for_fencing(now=now + timedelta(hours=1)) == []


def test_confirmed_dead_host_writes_off_spares_and_floating_desktops_and_keeps_unshared_ones(
        two_hosts, pool, floating, employee, django_user_model):
    first, second = two_hosts
    Host.objects.filter(pk=second.pk).update(is_online=False, offline_since=timezone.now())
    spare = Desktop.objects.create(pool=floating, host=second, name="float-spare", state=S.RUNNING)
    in_use = Desktop.objects.create(pool=floating, host=second, user=employee, name="float-used", state=S.RUNNING)
    done = declare_fenced(host=Host.objects.get(pk=second.pk), how="confirmed by the test")
    assert sorted(done["written_off"]) == ["float-spare", "float-used"]
    assert Desktop.objects.get(pk=spare.pk).state == S.DELETED
    assert Desktop.objects.get(pk=in_use.pk).state == S.DELETED

    # A host without shared storage: its dedicated desktop waits for it.
    Host.objects.filter(pk=first.pk).update(storage_group="", is_online=False, offline_since=timezone.now())
    Host.objects.filter(pk=second.pk).update(storage_group="other", is_enabled=True, is_online=True)
    kept = Desktop.objects.create(pool=pool, host=first, user=employee, name="desk-unshared", state=S.RUNNING)
    done = declare_fenced(host=Host.objects.get(pk=first.pk), how="confirmed by the test")
    assert done["waiting"] == ["desk-unshared"]
    kept.refresh_from_db()
    assert kept.host_id == first.pk and kept.state == S.RUNNING
    assert kept.events.filter(message__contains="its disks are only on that host").exists()
    assert Pool.objects.get(pk=pool.pk).kind == Pool.Kind.DEDICATED
