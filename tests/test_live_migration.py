"""Live migration between two real libvirt daemons sharing the disk directory: a drain moves a
running desktop away and the guest goes on running (what was typed before and after reaches
the same shell); a move that cannot happen, or fails, leaves the desktop where it was; a
worker that died mid-move leaves books that the broker puts right from what the hosts say."""

import time
import uuid

import pytest

from broker.hypervisor import driver_for_uri
from broker.models import BrokerEvent, Desktop, DesktopState, Host, LiveMigration
from broker.services.assignment import launch_desktop
from broker.services.hosts import reconcile_host
from broker.services.live_migration import (
    CannotMigrate,
    drain_host,
    migrate_desktop,
    request_migration,
    settle_interrupted_migration,
)
from tests.support.guest_typist import type_into_guest
from tests.support.measurements import write_measurement
from tests.support.waiting import file_contains, wait_for_guest_shell, wait_for_state, wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.libvirt]
S = DesktopState
M = LiveMigration.State


def wait_for_migration(desktop, state: str, timeout: float) -> LiveMigration:
    def done():
        return LiveMigration.objects.filter(desktop=desktop, state=state).first()

    try:
        return wait_until(done, timeout=timeout, what=f"the move to be {state}")
    except AssertionError:
        rows = list(LiveMigration.objects.filter(desktop=desktop).values("state", "error", "destination__name"))
        events = list(Desktop.objects.get(pk=desktop.pk).events.values_list("to_state", "message"))
        raise AssertionError(f"moves: {rows}; desktop events: {events}") from None


def domain_state(uri: str, name: str) -> str | None:
    return {d.name: d.state for d in driver_for_uri(uri).list_domains()}.get(name)


@pytest.fixture
def desktop_on_first(live_stack, two_hosts, pool, employee):
    """A running desktop of `employee` on the first host, booted to its shell."""
    first, second = two_hosts
    Host.objects.filter(pk=second.pk).update(is_enabled=False)
    desktop = wait_for_state(launch_desktop(user=employee, pool=pool), S.RUNNING, timeout=120)
    assert desktop.host_id == first.pk
    wait_for_guest_shell(desktop)
    Host.objects.filter(pk=second.pk).update(is_enabled=True)
    return desktop


def test_drain_moves_a_running_desktop_and_its_guest_goes_on_running(live_stack, two_hosts, desktop_on_first,
                                                                     employee):
    first, second = two_hosts
    desktop = desktop_on_first
    before = f"before-{uuid.uuid4().hex[:6]}"
    type_into_guest(live_stack, desktop, employee, f"echo {before} > /dev/ttyS0\n")
    wait_until(lambda: file_contains(desktop.serial_log_path, before.encode()), timeout=30, what="the typed line")

    drained = drain_host(host=first)
    assert drained == {"moving": [desktop.name], "staying": []}
    migration = wait_for_migration(desktop, M.COMPLETED, timeout=120)

    moved = Desktop.objects.get(pk=desktop.pk)
    assert moved.state == S.RUNNING and moved.host_id == second.pk and migration.destination_id == second.pk
    assert domain_state(second.libvirt_uri, desktop.name) == "running"
    assert domain_state(first.libvirt_uri, desktop.name) is None  # gone from the source, not just stopped
    assert moved.vnc_port and moved.vnc_port == driver_for_uri(second.libvirt_uri).graphics_ports(desktop.name).vnc
    assert migration.data_total_bytes and migration.duration_s is not None
    assert list(moved.events.exclude(to_state="").values_list("to_state", flat=True)[:2]) == ["running", "migrating"]

    # The same guest, not a new boot: the shell answers through the console on the new host.
    after = f"after-{uuid.uuid4().hex[:6]}"
    type_into_guest(live_stack, moved, employee, f"echo {after} > /dev/ttyS0\n")
    wait_until(lambda: file_contains(desktop.serial_log_path, after.encode()), timeout=30, what="the typed line")
    # One log across the move (appended to, not truncated), and one boot in it: no restart.
    log = open(desktop.serial_log_path, "rb").read()
    assert before.encode() in log and log.count(b"VDI-GUEST-READY") == 1

    # Reconciliation of both hosts agrees: nothing orphaned, nothing stale, nothing vanished.
    for host in (first, second):
        done = reconcile_host(host_id=host.pk)
        assert not (done["orphan_domains"] or done["stale_copies"] or done["vanished"]), done
    assert Desktop.objects.get(pk=desktop.pk).state == S.RUNNING
    write_measurement("live migration: one running desktop (256 MiB, TCG) between the two daemons (s)",
                      round(migration.duration_s, 2))


def test_a_move_that_fails_leaves_the_desktop_running_where_it_was(live_stack, two_hosts, desktop_on_first):
    first, second = two_hosts
    desktop = desktop_on_first
    # An address that is not this machine's: the destination cannot listen there (TEST-NET-1,
    # nothing is sent anywhere: the bind fails).
    Host.objects.filter(pk=second.pk).update(migration_address="192.0.2.1")
    migration = request_migration(desktop=desktop, reason=LiveMigration.Reason.ADMIN)
    migration = wait_for_migration(desktop, M.FAILED, timeout=60)
    assert migration.error
    stayed = Desktop.objects.get(pk=desktop.pk)
    assert stayed.state == S.RUNNING and stayed.host_id == first.pk
    assert domain_state(first.libvirt_uri, desktop.name) == "running"
    assert domain_state(second.libvirt_uri, desktop.name) is None
    assert BrokerEvent.objects.filter(host=first, message__contains=f"{desktop.name} did not move").exists()


def test_desktops_that_cannot_move_stay_and_the_drain_says_why(two_hosts, pool, employee):
    first, _second = two_hosts
    Host.objects.filter(pk=first.pk).update(storage_group="")
    desktop = Desktop.objects.create(pool=pool, user=employee, host=first, name=f"{pool.name}-not-shared",
                                     state=S.RUNNING, vnc_port=5999)
    drained = drain_host(host=first)
    assert drained["moving"] == [] and "no shared storage" in drained["staying"][0]
    assert Host.objects.get(pk=first.pk).in_maintenance
    assert not LiveMigration.objects.exists()
    assert BrokerEvent.objects.filter(host=first, message__contains="wait for their users to log off").exists()
    with pytest.raises(CannotMigrate):
        request_migration(desktop=Desktop.objects.get(pk=desktop.pk), reason=LiveMigration.Reason.ADMIN)


def test_a_move_whose_worker_died_is_settled_from_what_the_hosts_say(two_hosts, pool, employee, live_stack):
    first, second = two_hosts
    Host.objects.filter(pk=second.pk).update(is_enabled=False)
    one = wait_for_state(launch_desktop(user=employee, pool=pool), S.RUNNING, timeout=120)
    assert one.host_id == first.pk

    # The worker died before libvirt moved anything: the desktop is where it was.
    interrupted = LiveMigration.objects.create(desktop=one, source=first, destination=second,
                                               reason=LiveMigration.Reason.DRAIN, state=M.RUNNING)
    assert one.transition(S.MIGRATING, expected=S.RUNNING, message="moving (test)")
    settle_interrupted_migration(desktop_id=one.pk)
    assert Desktop.objects.get(pk=one.pk).state == S.RUNNING
    assert Desktop.objects.get(pk=one.pk).host_id == first.pk
    assert LiveMigration.objects.get(pk=interrupted.pk).state == M.FAILED

    # The worker died after libvirt moved it: the books follow the guest to the second host.
    redelivered = LiveMigration.objects.create(desktop=one, source=first, destination=second,
                                               reason=LiveMigration.Reason.DRAIN, state=M.RUNNING)
    assert Desktop.objects.get(pk=one.pk).transition(S.MIGRATING, expected=S.RUNNING, message="moving (test)")
    driver_for_uri(first.libvirt_uri).migrate_domain(one.name, destination=driver_for_uri(second.libvirt_uri),
                                                     address="127.0.0.1")
    migrate_desktop(migration_id=redelivered.pk)  # the task, delivered again after the worker died
    settled = Desktop.objects.get(pk=one.pk)
    assert settled.state == S.RUNNING and settled.host_id == second.pk
    assert LiveMigration.objects.get(pk=redelivered.pk).state == M.COMPLETED
    assert domain_state(first.libvirt_uri, one.name) is None


def test_reconciliation_leaves_an_arriving_domain_alone_and_destroys_a_stale_copy(two_hosts, pool, employee,
                                                                                   live_stack):
    first, second = two_hosts
    Host.objects.filter(pk=second.pk).update(is_enabled=False)
    one = wait_for_state(launch_desktop(user=employee, pool=pool), S.RUNNING, timeout=120)
    # On the second host's books the domain is a stranger; while the desktop is moving, it is
    # the arriving copy.
    assert one.transition(S.MIGRATING, expected=S.RUNNING, message="moving (test)")
    driver_for_uri(first.libvirt_uri).migrate_domain(one.name, destination=driver_for_uri(second.libvirt_uri),
                                                     address="127.0.0.1")
    done = reconcile_host(host_id=second.pk)
    assert one.name not in done["orphan_domains"] + done["stale_copies"]
    assert domain_state(second.libvirt_uri, one.name) == "running"

    # The books say it runs on the first host (as after an HA restart there): the second
    # host's copy is stale and is destroyed; its disks are kept.
    assert one.transition(S.RUNNING, expected=S.MIGRATING, message="(test)")
    started = time.monotonic()
    done = reconcile_host(host_id=second.pk)
    assert done["stale_copies"] == [one.name], done
    assert domain_state(second.libvirt_uri, one.name) is None
    assert BrokerEvent.objects.filter(host=second, message__contains=f"stale copy of {one.name}").exists()
    volumes = {v.name for v in driver_for_uri(first.libvirt_uri).list_volumes(pool=first.storage_pool)}
    assert one.volume_name in volumes
    assert time.monotonic() - started < 60
