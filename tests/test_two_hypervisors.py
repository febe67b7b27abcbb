"""Two real hypervisors on one machine: this machine's libvirtd and a second daemon with its own
sockets, state and host UUID (scripts/start-second-libvirtd.sh), sharing the disk directory.
Placement, drain, shared-storage reconciliation and offline detection, on real daemons."""

import subprocess

import pytest

from broker.hypervisor import driver_for_uri
from broker.models import BrokerEvent, Desktop, DesktopState, Entitlement, Host
from broker.services.assignment import launch_desktop
from broker.services.hosts import check_host, reconcile_host, set_host_maintenance
from tests.conftest import SECOND_DAEMON
from tests.support.stack import ROOT
from tests.support.waiting import wait_for_state

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.libvirt]
S = DesktopState
def host_uuid(uri: str) -> str:
    import re

    capabilities = subprocess.run(["virsh", "-c", uri, "capabilities"], capture_output=True, text=True,
                                  timeout=30, check=True).stdout
    return re.search(r"<uuid>([^<]+)</uuid>", capabilities).group(1)


def domains_on(uri: str) -> set[str]:
    return {domain.name for domain in driver_for_uri(uri).list_domains()}


def test_the_two_daemons_are_two_hosts(two_hosts):
    first, second = two_hosts
    assert host_uuid(first.libvirt_uri) != host_uuid(second.libvirt_uri)
    assert check_host(host_id=second.pk).is_online and second.pk != first.pk


def test_desktops_are_placed_on_both_and_drain_sends_new_ones_elsewhere(live_stack, two_hosts, pool, employee,
                                                                        other_employee, django_user_model):
    first, second = two_hosts
    desktops = [wait_for_state(launch_desktop(user=user, pool=pool), S.RUNNING, timeout=120)
                for user in (employee, other_employee)]
    assert {d.host_id for d in desktops} == {first.pk, second.pk}
    for desktop in desktops:
        assert desktop.name in domains_on(desktop.host.libvirt_uri)
        others = second if desktop.host_id == first.pk else first
        assert desktop.name not in domains_on(others.libvirt_uri)

    # Reconciling one host leaves the other's disks alone, though both see the same directory.
    done = reconcile_host(host_id=first.pk)
    ours = {name for d in desktops for name in (d.name, d.volume_name)}
    assert not ours & set(done["orphan_volumes"] + done["orphan_domains"] + done["stale_copies"])
    assert all(Desktop.objects.get(pk=d.pk).state == S.RUNNING for d in desktops)

    # Drain the first host: the next desktop goes to the second.
    assert set_host_maintenance(host=first, in_maintenance=True)
    third = django_user_model.objects.create_user("carl", password="correct-horse-9")
    Entitlement.objects.create(pool=pool, user=third)
    placed = wait_for_state(launch_desktop(user=third, pool=pool), S.RUNNING, timeout=120)
    assert placed.host_id == second.pk


def test_a_daemon_that_stops_answering_is_marked_offline_and_back_online(two_hosts):
    _first, second = two_hosts
    subprocess.run([str(ROOT / "scripts/start-second-libvirtd.sh"), "--stop", SECOND_DAEMON], timeout=60, check=True)
    try:
        gone = check_host(host_id=second.pk)
        assert not gone.is_online and gone.last_error
        assert BrokerEvent.objects.filter(host=second, message__startswith="host went offline").exists()
    finally:
        subprocess.run([str(ROOT / "scripts/start-second-libvirtd.sh"), SECOND_DAEMON], capture_output=True, timeout=60,
                       check=True)
    assert check_host(host_id=second.pk).is_online
    assert BrokerEvent.objects.filter(host=second, message="host is back online").exists()
