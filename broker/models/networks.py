"""Where a pool's desktops plug their network card in, host by host.

A pool with no row keeps desktops without a NIC (as before networks existed). A row without a
host applies to every host that has no row of its own, so one row is enough where all hosts
name their network alike, and a host that differs (another bridge, another VLAN) gets its own.
"""

import secrets

from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q

from .hosts import Host
from .pools import Pool

# QEMU's own range (52:54:00, locally administered): what libvirt picks for a NIC without a
# MAC. 24 random bits; a clash with a live desktop is refused by the database and retried.
MAC_PREFIX = "52:54:00"


def new_mac_address() -> str:
    return MAC_PREFIX + "".join(f":{byte:02x}" for byte in secrets.token_bytes(3))


class PoolNetwork(models.Model):
    class Kind(models.TextChoices):
        NETWORK = "network", "libvirt network (NAT, routed, host-only: defined on the host)"
        BRIDGE = "bridge", "Linux bridge (a bridge of the host, e.g. br0 on the office LAN)"
        OVS_BRIDGE = "openvswitch", "Open vSwitch bridge (VLAN tag per pool)"

    pool = models.ForeignKey(Pool, on_delete=models.CASCADE, related_name="networks")
    host = models.ForeignKey(
        Host, on_delete=models.CASCADE, null=True, blank=True, related_name="pool_networks",
        limit_choices_to={"kind": Host.Kind.HYPERVISOR},
        help_text="Empty: every host of the pool that has no row of its own.")
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.NETWORK)
    name = models.CharField(
        max_length=64,
        help_text="The libvirt network's name (virsh net-list), or the bridge's interface name on the host.")
    vlan_tag = models.PositiveSmallIntegerField(
        null=True, blank=True,
        help_text="Open vSwitch bridges only: the 802.1Q VLAN (1-4094) the desktops' ports are access ports "
        "of. On a Linux bridge, give the host a bridge on a VLAN sub-interface (br42 on eth0.42) and "
        "name that bridge instead.")
    dhcp_server = models.GenericIPAddressField(
        protocol="IPv4", null=True, blank=True,
        help_text="The DHCP server whose answers give a desktop its address in the traffic filter (spoofing "
        "protection). Empty: a libvirt network's own address (its dnsmasq); on a bridge, any DHCP server "
        "of the LAN is believed.")

    class Meta:
        ordering = ["pool", "host__name"]
        constraints = [
            models.UniqueConstraint(fields=["pool", "host"], name="one_network_per_pool_and_host"),
            models.UniqueConstraint(fields=["pool"], condition=Q(host__isnull=True),
                                    name="one_default_network_per_pool"),
        ]

    def __str__(self):
        where = self.host.name if self.host_id else "every host"
        vlan = f" VLAN {self.vlan_tag}" if self.vlan_tag else ""
        return f"{self.get_kind_display().split(' (')[0]} {self.name}{vlan} ({where})"

    def clean(self):
        import re

        if not re.fullmatch(r"[A-Za-z0-9_.:-]+", self.name or ""):
            raise ValidationError({"name": "A network or interface name: letters, digits, '_', '.', ':', '-'."})
        if self.kind != self.Kind.NETWORK and len(self.name) > 15:
            raise ValidationError({"name": "An interface name has at most 15 characters."})
        if self.vlan_tag is not None:
            if self.kind != self.Kind.OVS_BRIDGE:
                raise ValidationError({"vlan_tag": (
                    "libvirt tags a desktop's port only on an Open vSwitch bridge. For a Linux bridge, make a "
                    "bridge on the VLAN's sub-interface on the host (e.g. br42 with eth0.42) and name it here; "
                    "for a libvirt network, put the VLAN into the network's definition.")})
            if not 1 <= self.vlan_tag <= 4094:
                raise ValidationError({"vlan_tag": "A VLAN tag is 1-4094."})
        try:
            pool = self.pool  # in the admin: the pool as its form has it, saved or not
        except Pool.DoesNotExist:
            pool = None
        if pool is not None and pool.is_farm:
            raise ValidationError("A farm's sessions run on session hosts, not in VMs: it has no desktop network.")
        if pool is not None and pool.desktops_isolated and self.kind == self.Kind.OVS_BRIDGE:
            raise ValidationError({"kind": (
                "libvirt isolates ports of Linux bridges and libvirt networks only. On Open vSwitch untick "
                "the pool's 'Isolate desktops' and keep its desktops apart in the switch (a VLAN of their own "
                "with private VLAN or OpenFlow rules).")})
        if pool is not None and pool.filter_traffic and self.kind == self.Kind.OVS_BRIDGE:
            # Open vSwitch switches in its own datapath, past the Linux bridge's netfilter hooks
            # where the filter's ebtables rules sit: it would be on and filter nothing.
            raise ValidationError({"kind": (
                "libvirt's traffic filter (ebtables) sees Linux bridges only; Open vSwitch ports bypass it. "
                "Untick the pool's 'Filter traffic' and use the switch's own port security.")})
        if self.host_id and self.host.kind != Host.Kind.HYPERVISOR:
            raise ValidationError({"host": "Only hypervisors run desktops."})

    @classmethod
    def for_desktop(cls, *, pool: Pool, host: Host | None) -> "PoolNetwork | None":
        """The row that applies on `host`: its own, else the pool's row for every host."""
        rows = cls.objects.filter(pool=pool).select_related("host")
        own = rows.filter(host=host).first() if host is not None else None
        return own or rows.filter(host__isnull=True).first()
