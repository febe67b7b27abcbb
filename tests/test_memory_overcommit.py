"""Overcommit: the host admin shows what is placed against what the ratios allow; idle VM
desktops give memory back through their balloon and get it back when their user connects."""

from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.utils import timezone

from broker.console.targets import set_vm_console_password
from broker.hypervisor import DomainSpec, driver_for_host
from broker.hypervisor.xml import domain_xml
from broker.models import ConsoleSession, Desktop, DesktopState, Host, Pool
from broker.services.memory import idle_desktops_to_shrink, shrink_idle_desktops

pytestmark = pytest.mark.django_db(transaction=True)
S = DesktopState
NODE = """<node><domain type='test'><name>{name}</name><memory>1048576</memory><os><type>hvm</type></os>
<devices><graphics type='vnc' port='5999' autoport='no' listen='127.0.0.1'/></devices></domain></node>"""


def test_the_domain_has_a_balloon_that_starts_deflated():
    xml = domain_xml(DomainSpec(name="x", uuid="00000000-0000-0000-0000-000000000001", domain_type="kvm", vcpus=1,
                                memory_mib=2048, system_disk_path="/d.qcow2"))
    assert '<memballoon model="virtio" autodeflate="on" freePageReporting="on"><stats period="5" />' in xml
    assert '<currentMemory unit="MiB">2048</currentMemory>' in xml


def test_the_host_list_shows_placed_against_allowed(admin_client, host, pool, employee):
    Host.objects.filter(pk=host.pk).update(cpus=2, memory_mib=4096, vcpu_overcommit=2.5, memory_overcommit=1.2)
    for number in range(3):
        Desktop.objects.create(pool=pool, host=host, name=f"desk-placed-{number}", state=S.RUNNING)
    Desktop.objects.create(pool=pool, host=host, name="desk-gone", state=S.DELETED)  # not placed any more
    page = admin_client.get("/admin/broker/host/").content.decode()
    assert "3 / 5 (150 % of physical, limit 250 %)" in page
    assert "0.8 / 4.8 GiB (19 % of physical, limit 120 %)" in page  # 3 × 256 MiB


@pytest.fixture
def idle_vm(pool, employee):
    """A running desktop, idle for an hour: the running 2 GiB domain "test" of libvirt's test
    driver, whose guest reports balloon statistics as a guest with a balloon driver does."""
    vm_host = Host.objects.create(name="test-default", libvirt_uri="test:///default", domain_type="qemu",
                                  is_enabled=False)
    Pool.objects.filter(pk=pool.pk).update(memory_mib=2048)
    desktop = Desktop.objects.create(pool=pool, user=employee, host=vm_host, name="test", state=S.RUNNING,
                                     vnc_port=5999)
    Desktop.objects.filter(pk=desktop.pk).update(state_changed_at=timezone.now() - timedelta(hours=1))
    yield Desktop.objects.select_related("pool", "host").get(pk=desktop.pk)
    driver_for_host(vm_host).set_balloon_target("test", memory_mib=2048)  # as the next test expects it


def test_a_guest_without_a_balloon_driver_is_left_alone(pool, employee):
    nodes = Path(settings.VAR_DIR) / "test-nodes"
    nodes.mkdir(parents=True, exist_ok=True)
    name = f"{settings.VDI_NAME_PREFIX}no-balloon"
    node = nodes / f"{name}.xml"
    node.write_text(NODE.format(name=name))  # a test-driver domain that reports no statistics
    vm_host = Host.objects.create(name="node-no-balloon", libvirt_uri=f"test://{node}", domain_type="qemu",
                                  is_enabled=False)
    desktop = Desktop.objects.create(pool=pool, user=employee, host=vm_host, name=name, state=S.RUNNING)
    Desktop.objects.filter(pk=desktop.pk).update(state_changed_at=timezone.now() - timedelta(hours=1))
    assert shrink_idle_desktops(host=vm_host, driver=driver_for_host(vm_host)) == []
    assert Desktop.objects.get(pk=desktop.pk).memory_target_mib is None


def test_an_idle_desktop_gives_memory_back_and_gets_it_when_its_user_connects(idle_vm, employee):
    driver = driver_for_host(idle_vm.host)
    # What reconciliation runs for each host (this test-driver host has no storage to reconcile).
    assert shrink_idle_desktops(host=idle_vm.host, driver=driver) == [idle_vm.name]
    assert driver.balloon_info(idle_vm.name).actual_mib == 1024  # VDI_BALLOON_IDLE_SHARE 0.5 of 2048
    assert Desktop.objects.get(pk=idle_vm.pk).memory_target_mib == 1024
    assert shrink_idle_desktops(host=idle_vm.host, driver=driver) == []  # once

    # The user connects: the console grant gives the memory back before the console opens.
    set_vm_console_password(Desktop.objects.select_related("pool", "host").get(pk=idle_vm.pk), protocol="vnc",
                            password="secret12", valid_for_s=30)
    assert driver.balloon_info(idle_vm.name).actual_mib == 2048
    assert Desktop.objects.get(pk=idle_vm.pk).memory_target_mib is None
    assert idle_vm.events.filter(message__startswith="its user connected").exists()


def test_only_desktops_without_a_console_for_the_idle_time_are_shrunk(idle_vm, employee):
    assert list(idle_desktops_to_shrink(host=idle_vm.host)) == [idle_vm]
    session = ConsoleSession.objects.create(user=employee, desktop=idle_vm, protocol="vnc")
    assert list(idle_desktops_to_shrink(host=idle_vm.host)) == []  # a console is open
    ConsoleSession.objects.filter(pk=session.pk).update(closed_at=timezone.now() - timedelta(minutes=5))
    assert list(idle_desktops_to_shrink(host=idle_vm.host)) == []  # closed 5 min ago: not idle long enough
    ConsoleSession.objects.filter(pk=session.pk).update(closed_at=timezone.now() - timedelta(minutes=20))
    assert list(idle_desktops_to_shrink(host=idle_vm.host)) == [idle_vm]


@pytest.mark.libvirt
def test_a_real_guest_gives_memory_back_through_its_balloon_driver(running_desktop):
    from tests.support.waiting import wait_for_guest_shell, wait_until

    desktop = Desktop.objects.select_related("pool", "host").get(pk=running_desktop.pk)
    wait_for_guest_shell(desktop)  # its init has loaded virtio_balloon by then
    driver = driver_for_host(desktop.host)
    wait_until(lambda: driver.balloon_info(desktop.name).guest_cooperates, timeout=30,
               what="the guest's balloon driver to report")
    Desktop.objects.filter(pk=desktop.pk).update(state_changed_at=timezone.now() - timedelta(hours=1))
    assert shrink_idle_desktops(host=desktop.host, driver=driver) == [desktop.name]
    target = Desktop.objects.get(pk=desktop.pk).memory_target_mib
    assert target == max(128, desktop.pool.memory_mib // 2)
    # The guest's driver inflates the balloon: QEMU's figure follows within seconds.
    wait_until(lambda: driver.balloon_info(desktop.name).actual_mib <= target, timeout=30,
               what=f"the guest to give memory back down to {target} MiB")
    set_vm_console_password(Desktop.objects.select_related("pool", "host").get(pk=desktop.pk), protocol="vnc",
                            password="secret12", valid_for_s=30)
    wait_until(lambda: driver.balloon_info(desktop.name).actual_mib >= desktop.pool.memory_mib, timeout=30,
               what="the guest to get its memory back")
