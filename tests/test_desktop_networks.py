"""Desktop networks: a pool names its network per host, each desktop gets a virtio NIC with a
MAC of its own, an address by DHCP, libvirt's clean-traffic filter and (isolated pools) a port
that cannot reach the other desktops.

The live tests boot real guests on the real libvirtd, on this machine's own NAT network
(`vdi-nat`, scripts/start-nat-network.sh): all traffic stays between the guests and the host's
bridge. They type into the guest's shell through the console gateway and read what the guest
writes to its serial log.
"""

import os
import random
import re
import time
import uuid
import xml.etree.ElementTree as ET

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from broker.hypervisor import DomainSpec, HypervisorError, NicSpec, driver_for_uri
from broker.hypervisor.xml import domain_xml
from broker.models import Desktop, DesktopState, Entitlement, Host, Pool, PoolNetwork
from broker.services.provisioning import desktop_name, domain_spec, provision_desktop
from tests.support.guest_typist import type_into_guest
from tests.support.measurements import write_measurement
from tests.support.waiting import wait_for_guest_shell, wait_until

NAT_NETWORK = os.environ.get("VDI_TEST_NAT_NETWORK", "vdi-nat")
S = DesktopState


def interface_of(spec: DomainSpec) -> ET.Element | None:
    return ET.fromstring(domain_xml(spec)).find("./devices/interface")


def spec_with(nic: NicSpec | None) -> DomainSpec:
    return DomainSpec(name="vdi-x", uuid=str(uuid.uuid4()), domain_type="qemu", vcpus=1, memory_mib=128,
                      system_disk_path="/var/lib/vdi/desktops/x.qcow2", nic=nic)


# --- the domain XML, without booting ------------------------------------------------------------

def test_a_desktop_without_a_network_has_no_network_card():
    assert interface_of(spec_with(None)) is None


def test_an_isolated_filtered_nic_on_a_libvirt_network():
    nic = NicSpec(kind="network", source="vdi-nat", mac_address="52:54:00:12:34:56", isolated=True,
                  clean_traffic=True, dhcp_server="10.213.17.1")
    interface = interface_of(spec_with(nic))
    assert interface.get("type") == "network"
    assert interface.find("source").get("network") == "vdi-nat"
    assert interface.find("mac").get("address") == "52:54:00:12:34:56"
    assert interface.find("model").get("type") == "virtio"
    assert interface.find("port").get("isolated") == "yes"
    filterref = interface.find("filterref")
    assert filterref.get("filter") == "clean-traffic"
    assert {p.get("name"): p.get("value") for p in filterref.findall("parameter")} == {
        "CTRL_IP_LEARNING": "dhcp", "DHCPSERVER": "10.213.17.1"}


def test_an_open_unfiltered_nic_on_a_linux_bridge():
    interface = interface_of(spec_with(NicSpec(kind="bridge", source="br0", mac_address="52:54:00:00:00:01")))
    assert interface.get("type") == "bridge"
    assert interface.find("source").get("bridge") == "br0"
    assert interface.find("port") is None and interface.find("filterref") is None
    assert interface.find("vlan") is None and interface.find("virtualport") is None


def test_a_vlan_tag_on_an_open_vswitch_bridge():
    interface = interface_of(spec_with(NicSpec(kind="openvswitch", source="ovsbr0", mac_address="52:54:00:00:00:02",
                                               vlan_tag=42)))
    assert interface.get("type") == "bridge"
    assert interface.find("virtualport").get("type") == "openvswitch"
    assert interface.find("vlan/tag").get("id") == "42"
    with pytest.raises(ValueError):
        domain_xml(spec_with(NicSpec(kind="bridge", source="br0", mac_address="52:54:00:00:00:03", vlan_tag=42)))


# --- the model: rows per host, defaults, validation ---------------------------------------------

@pytest.fixture
def host_b(db):
    return Host.objects.create(name="host-b", libvirt_uri="test:///default", domain_type="qemu")


def test_floating_pools_isolate_their_desktops_by_default_and_dedicated_ones_do_not(image):
    floating = Pool.objects.create(name="f", display_name="F", image=image, kind=Pool.Kind.FLOATING)
    dedicated = Pool.objects.create(name="d", display_name="D", image=image, kind=Pool.Kind.DEDICATED)
    chosen = Pool.objects.create(name="c", display_name="C", image=image, kind=Pool.Kind.FLOATING,
                                 isolate_desktops=False)
    assert (floating.isolate_desktops, dedicated.isolate_desktops, chosen.isolate_desktops) == (True, False, False)
    assert floating.filter_traffic and dedicated.filter_traffic


def test_a_host_with_a_row_of_its_own_uses_it_and_the_others_the_pools_row(pool, host, host_b):
    PoolNetwork.objects.create(pool=pool, name="vdi-nat")
    PoolNetwork.objects.create(pool=pool, host=host_b, kind=PoolNetwork.Kind.BRIDGE, name="br-office",
                               dhcp_server="10.1.2.3")
    on_a = Desktop(pool=pool, host=host, name="vdi-a")
    on_b = Desktop(pool=pool, host=host_b, name="vdi-b")
    assert domain_spec(on_a).nic.source == "vdi-nat" and domain_spec(on_a).nic.kind == "network"
    nic_b = domain_spec(on_b).nic
    assert (nic_b.kind, nic_b.source, nic_b.dhcp_server) == ("bridge", "br-office", "10.1.2.3")
    assert nic_b.mac_address == on_b.mac_address and nic_b.clean_traffic and not nic_b.isolated


def test_a_pool_without_a_row_for_a_host_gives_no_network_card_there(pool, host, host_b):
    PoolNetwork.objects.create(pool=pool, host=host_b, kind=PoolNetwork.Kind.BRIDGE, name="br0")
    assert domain_spec(Desktop(pool=pool, host=host, name="vdi-a")).nic is None


def test_a_vlan_tag_needs_open_vswitch_which_neither_filters_nor_isolates(pool, image):
    with pytest.raises(ValidationError, match="sub-interface"):
        PoolNetwork(pool=pool, kind=PoolNetwork.Kind.BRIDGE, name="br0", vlan_tag=42).full_clean()
    with pytest.raises(ValidationError, match="Filter traffic"):
        PoolNetwork(pool=pool, kind=PoolNetwork.Kind.OVS_BRIDGE, name="ovsbr0", vlan_tag=42).full_clean()
    pool.filter_traffic = False
    PoolNetwork(pool=pool, kind=PoolNetwork.Kind.OVS_BRIDGE, name="ovsbr0", vlan_tag=42).full_clean()
    with pytest.raises(ValidationError, match="1-4094"):
        PoolNetwork(pool=pool, kind=PoolNetwork.Kind.OVS_BRIDGE, name="ovsbr0", vlan_tag=4095).full_clean()
    floating = Pool.objects.create(name="f", display_name="F", image=image, kind=Pool.Kind.FLOATING,
                                   filter_traffic=False)
    with pytest.raises(ValidationError, match="Isolate desktops"):
        PoolNetwork(pool=floating, kind=PoolNetwork.Kind.OVS_BRIDGE, name="ovsbr0").full_clean()
    with pytest.raises(ValidationError, match="15 characters"):
        PoolNetwork(pool=pool, kind=PoolNetwork.Kind.BRIDGE, name="a-very-long-bridge").full_clean()


def test_one_row_per_pool_and_host(pool, host):
    PoolNetwork.objects.create(pool=pool, name="vdi-nat")
    with pytest.raises(IntegrityError), transaction.atomic():
        PoolNetwork.objects.create(pool=pool, name="other")
    PoolNetwork.objects.create(pool=pool, host=host, name="other")
    with pytest.raises(IntegrityError), transaction.atomic():
        PoolNetwork.objects.create(pool=pool, host=host, name="third")


def test_each_desktop_keeps_a_mac_of_its_own(pool, host):
    first = Desktop.objects.create(pool=pool, host=host, name="vdi-a")
    second = Desktop.objects.create(pool=pool, host=host, name="vdi-b")
    assert re.fullmatch(r"52:54:00(:[0-9a-f]{2}){3}", first.mac_address)
    assert first.mac_address != second.mac_address
    assert Desktop.objects.get(pk=first.pk).mac_address == first.mac_address  # stored: a rebuild keeps it
    with pytest.raises(IntegrityError), transaction.atomic():
        Desktop.objects.create(pool=pool, host=host, name="vdi-c", mac_address=first.mac_address)
    Desktop.objects.filter(pk=first.pk).update(state=S.DELETED)  # a deleted desktop's MAC is free again
    Desktop.objects.create(pool=pool, host=host, name="vdi-c", mac_address=first.mac_address)


@pytest.mark.libvirt
def test_a_libvirt_network_gives_the_filter_its_dhcp_server(pool, host, nat_network):
    PoolNetwork.objects.create(pool=pool, name=NAT_NETWORK)
    nic = domain_spec(Desktop(pool=pool, host=host, name="vdi-a"), driver=driver_for_uri(host.libvirt_uri)).nic
    assert nic.dhcp_server == nat_network.ipv4_address


@pytest.mark.libvirt
def test_a_missing_libvirt_network_is_named_in_the_error(pool, host, nat_network):
    PoolNetwork.objects.create(pool=pool, name="vdi-no-such-network")
    with pytest.raises(HypervisorError, match="vdi-no-such-network"):
        domain_spec(Desktop(pool=pool, host=host, name="vdi-a"), driver=driver_for_uri(host.libvirt_uri))


# --- real guests on the NAT network --------------------------------------------------------------

@pytest.fixture(scope="session")
def nat_network():
    try:
        network = driver_for_uri("qemu:///system").network_info(NAT_NETWORK)
    except HypervisorError as exc:
        pytest.fail(f"{exc}: run scripts/start-nat-network.sh")
    assert network.active and network.ipv4_address, f"{NAT_NETWORK} is not running: scripts/start-nat-network.sh"
    return network


def network_pool(image, group, *, name, kind=Pool.Kind.DEDICATED, **fields) -> Pool:
    pool = Pool.objects.create(name=name, display_name=name.title(), image=image, kind=kind, **fields)
    PoolNetwork.objects.create(pool=pool, name=NAT_NETWORK)
    Entitlement.objects.create(pool=pool, group=group)
    return pool


class Guest:
    """A desktop of `pool` for `user`, provisioned for real and booted to its shell."""

    def __init__(self, stack, pool, user, host):
        self.stack, self.user = stack, user
        started = time.monotonic()
        desktop = Desktop.objects.create(pool=pool, user=user, host=host, image_version=pool.image.current_version(),
                                         name=desktop_name(pool=pool, unique=uuid.uuid4().hex[:6]))
        self.desktop = provision_desktop(desktop_id=desktop.pk)
        assert self.desktop.state == S.RUNNING, self.desktop.last_error
        wait_for_guest_shell(self.desktop)
        self.boot_s = time.monotonic() - started
        log = self.serial_log()
        found = re.search(rb"VDI-GUEST-IP (\d+\.\d+\.\d+\.\d+)", log)
        assert found, f"{self.desktop.name} booted without an address: {log[-400:]!r}"
        self.ip = found.group(1).decode()

    def serial_log(self) -> bytes:
        with open(self.desktop.serial_log_path, "rb") as handle:
            return handle.read()

    def run(self, command: str, *, timeout: float = 30) -> int:
        """Type `command` into the shell and return its exit status (written to the serial log)."""
        marker = f"RESULT-{uuid.uuid4().hex[:8]}"
        type_into_guest(self.stack, self.desktop, self.user, f"{command}; echo {marker}-$? > /dev/ttyS0\n")
        pattern = re.compile(marker.encode() + rb"-(\d+)")
        found = wait_until(lambda: pattern.search(self.serial_log()), timeout=timeout,
                           what=f"{command!r} to finish in {self.desktop.name}")
        return int(found.group(1))

    def pings(self, address: str, *, source: str | None = None) -> bool:
        via = f"-I {source} " if source else ""
        return self.run(f"ping -c 2 -W 2 {via}{address} >/dev/null 2>&1") == 0


def in_subnet(address: str, gateway: str) -> bool:
    return address.rsplit(".", 1)[0] == gateway.rsplit(".", 1)[0] and address != gateway


@pytest.mark.django_db(transaction=True)
@pytest.mark.libvirt
def test_a_desktop_gets_an_address_by_dhcp_and_reaches_the_gateway(live_stack, nat_network, image, employees_group,
                                                                  employee, host):
    pool = network_pool(image, employees_group, name="office")
    guest = Guest(live_stack, pool, employee, host)

    assert in_subnet(guest.ip, nat_network.ipv4_address), guest.ip
    assert guest.pings(nat_network.ipv4_address)
    write_measurement("boot to shell with a NIC and its DHCP lease (TCG, s)", round(guest.boot_s, 1))


@pytest.mark.django_db(transaction=True)
@pytest.mark.libvirt
def test_two_desktops_of_an_isolated_pool_cannot_reach_each_other(live_stack, nat_network, image, employees_group,
                                                                 employee, other_employee, host):
    pool = network_pool(image, employees_group, name="kiosk", kind=Pool.Kind.FLOATING)
    assert pool.isolate_desktops  # floating pools: on by default
    alice, bob = Guest(live_stack, pool, employee, host), Guest(live_stack, pool, other_employee, host)

    assert alice.pings(nat_network.ipv4_address) and bob.pings(nat_network.ipv4_address)
    assert not alice.pings(bob.ip)
    assert not bob.pings(alice.ip)


@pytest.mark.django_db(transaction=True)
@pytest.mark.libvirt
def test_two_desktops_of_an_open_pool_reach_each_other(live_stack, nat_network, image, employees_group, employee,
                                                      other_employee, host):
    pool = network_pool(image, employees_group, name="team")
    assert not pool.isolate_desktops  # dedicated pools: open by default
    alice, bob = Guest(live_stack, pool, employee, host), Guest(live_stack, pool, other_employee, host)

    assert alice.pings(bob.ip)
    assert bob.pings(alice.ip)


@pytest.mark.django_db(transaction=True)
@pytest.mark.libvirt
def test_a_spoofed_source_address_is_dropped(live_stack, nat_network, image, employees_group, employee, host):
    """A guest that sends from an address DHCP did not give it reaches nothing; the same guest
    from its own address does. Without the filter (the control) the forged address gets answers."""
    gateway = nat_network.ipv4_address
    # Outside the DHCP range (.10-.250), so never another desktop's; random, so one run's
    # leftover ARP entry on the host does not meet the next run's guest.
    forged = f"{gateway.rsplit('.', 1)[0]}.{random.randint(2, 9)}"
    claim_it = f"ip addr add {forged}/32 dev eth0; arping -U -c 1 -I eth0 -s {forged} {forged} >/dev/null 2>&1"

    filtered = network_pool(image, employees_group, name="guarded")
    guest = Guest(live_stack, filtered, employee, host)
    assert guest.pings(gateway)
    assert guest.run(claim_it) == 0
    assert not guest.pings(gateway, source=forged)
    assert guest.pings(gateway)  # its own address still works: only the forged one was dropped

    unfiltered = network_pool(image, employees_group, name="unguarded", filter_traffic=False)
    control = Guest(live_stack, unfiltered, employee, host)
    assert control.run(claim_it) == 0
    assert control.pings(gateway, source=forged)


@pytest.mark.django_db(transaction=True)
@pytest.mark.libvirt
def test_a_desktop_moved_to_a_host_that_names_the_network_otherwise_keeps_its_mac_and_address(
        live_stack, nat_network, two_hosts, image, employees_group, employee):
    """Host A has the libvirt network; host B (the second daemon, same machine) reaches the same
    segment through its bridge. A live migration re-plugs the card there, same MAC, and the
    filter on B already knows the desktop's address: the guest reaches the gateway at once."""
    from broker.models import LiveMigration
    from broker.services.live_migration import request_migration

    first, second = two_hosts
    pool = network_pool(image, employees_group, name="roaming")
    PoolNetwork.objects.create(pool=pool, host=second, kind=PoolNetwork.Kind.BRIDGE, name=nat_network.bridge,
                               dhcp_server=nat_network.ipv4_address)
    guest = Guest(live_stack, pool, employee, first)
    assert guest.pings(nat_network.ipv4_address)

    request_migration(desktop=guest.desktop, reason=LiveMigration.Reason.ADMIN, destination=second)
    moved = wait_until(lambda: LiveMigration.objects.filter(desktop=guest.desktop).exclude(
        state__in=(LiveMigration.State.QUEUED, LiveMigration.State.RUNNING)).first(), timeout=120, what="the move")
    assert moved.state == LiveMigration.State.COMPLETED, moved.error
    guest.desktop = Desktop.objects.get(pk=guest.desktop.pk)
    assert guest.desktop.host_id == second.pk

    assert guest.pings(nat_network.ipv4_address)
    assert guest.run(f"ip link show eth0 | grep -q {guest.desktop.mac_address}") == 0
    assert guest.run(f"ip -4 addr show eth0 | grep -q 'inet {guest.ip}/'") == 0


def test_the_admin_gives_a_pool_its_network_per_host(admin_client, pool, host):
    from django.forms.models import model_to_dict
    from django.urls import reverse

    data = {k: ("on" if v is True else "" if v is None or v is False else v) for k, v in model_to_dict(pool).items()}
    data = {k: v for k, v in data.items() if v != ""}
    data.update({
        "isolate_desktops": "True",
        "entitlements-TOTAL_FORMS": "0", "entitlements-INITIAL_FORMS": "0",
        "schedule_rules-TOTAL_FORMS": "0", "schedule_rules-INITIAL_FORMS": "0",
        "networks-TOTAL_FORMS": "2", "networks-INITIAL_FORMS": "0",
        "networks-0-host": "", "networks-0-kind": "network", "networks-0-name": "vdi-nat",
        "networks-1-host": host.pk, "networks-1-kind": "bridge", "networks-1-name": "br0", "networks-1-vlan_tag": "42",
    })
    response = admin_client.post(reverse("admin:broker_pool_change", args=[pool.pk]), data)
    assert response.status_code == 200 and b"sub-interface" in response.content  # a VLAN on a Linux bridge
    del data["networks-1-vlan_tag"]
    response = admin_client.post(reverse("admin:broker_pool_change", args=[pool.pk]), data)
    assert response.status_code == 302
    pool.refresh_from_db()
    assert pool.isolate_desktops is True
    assert sorted(pool.networks.values_list("kind", "name", "host")) == [("bridge", "br0", host.pk),
                                                                          ("network", "vdi-nat", None)]
