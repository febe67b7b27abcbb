"""What the broker asks of a hypervisor, and the errors it may get back.

Every method is idempotent where the operation allows it (starting a running domain,
destroying a stopped one, deleting a missing volume): Celery may deliver a task twice, and a
retry must finish the job instead of failing on what the first attempt already did.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field


class HypervisorError(Exception):
    """A hypervisor operation failed; the message is safe to show an admin."""


class HostUnreachable(HypervisorError):
    """The host's libvirt did not answer (down, wrong URI, network)."""


class DomainNotFound(HypervisorError):
    pass


class ImageUnavailable(HypervisorError):
    """A golden image is missing or unreadable on the host."""


class StorageFull(HypervisorError):
    """A storage pool has no room for a disk; the message names the pool and the space."""


@dataclass(frozen=True)
class NicSpec:
    """A desktop's network card: where it plugs in, and what guards its port."""
    kind: str  # "network" (a libvirt network), "bridge" (a Linux bridge), "openvswitch"
    source: str  # the network's or the bridge's name
    mac_address: str
    vlan_tag: int | None = None  # openvswitch only
    # The port may not talk to other isolated ports of the bridge (libvirt's <port isolated>).
    isolated: bool = False
    # libvirt's clean-traffic nwfilter: no MAC, IP or ARP spoofing; the address is learned
    # from DHCP answers (of `dhcp_server` only, when given).
    clean_traffic: bool = False
    dhcp_server: str | None = None


@dataclass(frozen=True)
class NetworkInfo:
    name: str
    active: bool
    bridge: str | None
    ipv4_address: str | None  # the host's address on it: the desktops' gateway and DHCP server


@dataclass(frozen=True)
class DomainSpec:
    name: str
    uuid: str
    domain_type: str  # "kvm" on real hosts, "qemu" (TCG) where KVM is unusable
    vcpus: int
    memory_mib: int
    system_disk_path: str
    data_disk_path: str | None = None
    serial_log_path: str | None = None
    graphics: tuple[str, ...] = ("vnc", "spice")
    graphics_listen: str = "127.0.0.1"
    metadata: dict[str, str] = field(default_factory=dict)
    # The consoles' password at boot. None: a random one nobody is told, so a console port is
    # never open without a password; the broker sets a short-lived one per console session.
    graphics_password: str | None = None
    nic: NicSpec | None = None  # None: no network card (a pool without a network)


@dataclass(frozen=True)
class DomainInfo:
    name: str
    uuid: str
    state: str  # "running", "paused", "shutoff", "other"


@dataclass(frozen=True)
class VolumeInfo:
    name: str
    path: str
    capacity_bytes: int
    allocation_bytes: int


@dataclass(frozen=True)
class HostCapacity:
    cpus: int
    memory_mib: int


@dataclass(frozen=True)
class GraphicsPorts:
    listen: str
    vnc: int | None
    spice: int | None


@dataclass(frozen=True)
class MigrationProgress:
    """What a live migration reported so far (memory and device state it must copy)."""
    data_total_bytes: int
    data_processed_bytes: int
    data_remaining_bytes: int


@dataclass(frozen=True)
class BalloonInfo:
    """A running domain's memory: what the balloon leaves it, its maximum, and whether the
    guest's balloon driver answers (without it a target is never reached)."""
    actual_mib: int
    maximum_mib: int
    guest_cooperates: bool


@dataclass(frozen=True)
class HostUsage:
    """What a host's hypervisor says it is using, at one moment. CPU time and the disk and
    network byte counts are cumulative counters: a rate is the difference of two readings.
    A figure the hypervisor cannot give (a driver without node statistics) is None."""
    cpu_busy_ns: int | None  # host CPU time spent on anything but idle and I/O wait, all CPUs
    cpu_total_ns: int | None
    memory_total_kib: int
    memory_available_kib: int | None  # free, plus buffers and page cache the kernel gives back
    storage_capacity_bytes: int | None  # the desktops' storage pool
    storage_allocation_bytes: int | None
    storage_available_bytes: int | None
    disk_read_bytes: int  # by the running domains, summed over their disks
    disk_write_bytes: int
    net_rx_bytes: int  # by the running domains, summed over their network cards
    net_tx_bytes: int
    running_domains: int


class HypervisorDriver(abc.ABC):
    """One host's hypervisor. Implementations: `LibvirtDriver` (any libvirt URI)."""

    @abc.abstractmethod
    def host_capacity(self) -> HostCapacity:
        """The host's physical CPUs and memory; raises HostUnreachable if it does not answer."""

    @abc.abstractmethod
    def host_usage(self, *, storage_pool: str) -> HostUsage:
        """The host's CPU, memory, its storage pool's space and its domains' disk and network
        counters, read in a few round trips; raises HostUnreachable if it does not answer. A
        missing storage pool leaves the storage figures None."""

    # -- storage ---------------------------------------------------------------------------
    @abc.abstractmethod
    def ensure_storage_pool(self, *, name: str, path: str) -> None:
        """Make sure a directory storage pool exists, is built and active."""

    @abc.abstractmethod
    def image_info(self, *, path: str) -> VolumeInfo:
        """Describe a golden image by path; raises ImageUnavailable if it is not there."""

    @abc.abstractmethod
    def clone_volume(self, *, pool: str, name: str, base_path: str, linked: bool = True) -> VolumeInfo:
        """Create `name` in `pool` from the image at `base_path` (qcow2 overlay or full copy).

        If the volume already exists (a retried task), it is returned as it is.
        """

    @abc.abstractmethod
    def create_volume(self, *, pool: str, name: str, capacity_bytes: int) -> VolumeInfo:
        """Create an empty qcow2 volume (a data disk); an existing one is returned as it is."""

    @abc.abstractmethod
    def delete_volume(self, *, pool: str, name: str) -> bool:
        """Delete a volume; returns False if it did not exist."""

    @abc.abstractmethod
    def list_volumes(self, *, pool: str) -> list[VolumeInfo]: ...

    @abc.abstractmethod
    def list_volume_names(self, *, pool: str) -> list[str]:
        """The names alone: no question per volume (its path and size), which a host with
        hundreds of disks would answer hundreds of times per reconcile pass."""

    # -- backups of data disks ----------------------------------------------------------------
    @abc.abstractmethod
    def backup_disk(self, name: str | None, *, disk_path: str, target_pool: str, target_name: str,
                    timeout_s: float = 3600) -> VolumeInfo:
        """Copy the disk at `disk_path` to a new qcow2 volume `target_name` of `target_pool`, as it
        was at one moment. When the domain `name` runs, by the hypervisor's backup job (the guest
        goes on running, no pause); when it is off (or `name` is None), by a volume copy. Raises
        HypervisorError on failure, leaving no partial volume behind."""

    @abc.abstractmethod
    def restore_disk(self, name: str | None, *, backup_path: str, pool: str, volume: str) -> VolumeInfo:
        """Replace the volume `volume` of `pool` (created if missing) by a copy of the backup at
        `backup_path`. The domain `name` (which uses the volume) must be off: raises
        HypervisorError if it runs."""

    # -- networks --------------------------------------------------------------------------
    @abc.abstractmethod
    def network_info(self, name: str) -> NetworkInfo:
        """A libvirt network of the host; raises HypervisorError if there is none of that name."""

    # -- domains ---------------------------------------------------------------------------
    @abc.abstractmethod
    def define_domain(self, spec: DomainSpec) -> None:
        """Define (or redefine, same name and UUID) a persistent domain."""

    @abc.abstractmethod
    def start_domain(self, name: str) -> None:
        """Start a defined domain; a running one is left alone."""

    @abc.abstractmethod
    def shutdown_domain(self, name: str) -> None:
        """Ask the guest to power off (ACPI); returns at once."""

    @abc.abstractmethod
    def destroy_domain(self, name: str) -> None:
        """Power off at once; a stopped or missing domain is left alone."""

    @abc.abstractmethod
    def undefine_domain(self, name: str) -> bool:
        """Remove the definition (stopping it first); returns False if it did not exist."""

    @abc.abstractmethod
    def domain_info(self, name: str) -> DomainInfo:
        """Raises DomainNotFound."""

    @abc.abstractmethod
    def list_domains(self) -> list[DomainInfo]: ...

    @abc.abstractmethod
    def graphics_ports(self, name: str) -> GraphicsPorts:
        """The console ports of a running domain, read from its live definition."""

    @abc.abstractmethod
    def set_console_password(self, name: str, *, protocol: str, password: str, valid_for_s: int) -> None:
        """Set the VNC or SPICE password of a running domain, valid for `valid_for_s` seconds
        for new connections; consoles already connected stay connected."""

    # -- moving between hosts ----------------------------------------------------------------
    @abc.abstractmethod
    def migrate_domain(self, name: str, *, destination: "HypervisorDriver", address: str | None = None,
                       on_progress=None, timeout_s: float = 600, destination_nic: NicSpec | None = None) -> None:
        """Live-migrate the running domain `name` to `destination` (the disks stay where they
        are: shared storage). The domain keeps running here until the switch-over; afterwards it
        is defined and running on the destination and gone from here. On failure it stays,
        running, here. `on_progress(MigrationProgress)` is called about twice a second;
        `address` is where the destination receives the memory stream (tcp://address).
        `destination_nic`: the domain's network card as the destination names the network (a
        host may call the same network a libvirt network, another a bridge); it keeps its MAC."""

    # -- memory ------------------------------------------------------------------------------
    @abc.abstractmethod
    def balloon_info(self, name: str) -> BalloonInfo:
        """The running domain's balloon; raises DomainNotFound."""

    @abc.abstractmethod
    def set_balloon_target(self, name: str, *, memory_mib: int) -> None:
        """Ask the running guest to give memory back down to `memory_mib` (or take it back up to
        its maximum); the guest's balloon driver does it within seconds."""
