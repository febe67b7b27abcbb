"""Building, starting, stopping, recomposing and deleting desktops on their hosts.

Called by Celery tasks, never by a web request. Each step checks where the desktop is and
does only what is left, so a duplicated or retried task finishes the job instead of
repeating it, and leaks neither domain nor volume: names are derived from the desktop, the
clone returns the volume that is already there, and the state moves by compare-and-set.
"""

import logging
import time
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from ..capacity import pool_capacity
from ..hypervisor import DomainNotFound, DomainSpec, HypervisorError, NicSpec, driver_for_host
from ..models import BrokerEvent, Desktop, DesktopState, Pool, PoolNetwork
from ..models.networks import new_mac_address
from ..console import control as console_control
from ..console.close_codes import CloseCode
from ..enqueue import enqueue_after_commit

log = logging.getLogger(__name__)
S = DesktopState
SHUTDOWN_GRACE_S = 20
# After this many provisioning failures in a row a pool stops creating desktops for a while.
FAILURES_BEFORE_BACKOFF = 3
MAX_BACKOFF = timedelta(minutes=30)


def _load(desktop_id: int) -> Desktop | None:
    return Desktop.objects.select_related("host", "pool", "image_version").filter(pk=desktop_id).first()


def prepare_host_storage(host) -> None:
    """Make sure the host has the broker's image and desktop storage pools (idempotent)."""
    driver = driver_for_host(host)
    driver.ensure_storage_pool(name=host.image_pool, path=host.image_path)
    driver.ensure_storage_pool(name=host.storage_pool, path=host.storage_path)


def _volume_path(desktop: Desktop, volume_name: str) -> str:
    return f"{desktop.host.storage_path.rstrip('/')}/{volume_name}"


def desktop_nic(desktop: Desktop, *, driver=None) -> NicSpec | None:
    """The desktop's network card on its host, from the pool's network row for that host (none:
    no card). With `driver`, a libvirt network is checked on the host and, unless the row names
    a DHCP server, its own address (its dnsmasq) becomes the one the traffic filter believes."""
    pool = desktop.pool
    row = PoolNetwork.for_desktop(pool=pool, host=desktop.host)
    if row is None:
        return None
    dhcp_server = row.dhcp_server or None
    if row.kind == PoolNetwork.Kind.NETWORK and driver is not None:
        network = driver.network_info(row.name)
        if not network.active:
            raise HypervisorError(f"libvirt network {row.name!r} on {desktop.host} is not running "
                                  f"(virsh net-start {row.name}; net-autostart keeps it so)")
        dhcp_server = dhcp_server or network.ipv4_address
    return NicSpec(kind=row.kind, source=row.name, mac_address=desktop.mac_address, vlan_tag=row.vlan_tag,
                   isolated=pool.desktops_isolated, clean_traffic=pool.filter_traffic, dhcp_server=dhcp_server)


def domain_spec(desktop: Desktop, *, driver=None) -> DomainSpec:
    pool = desktop.pool
    return DomainSpec(
        name=desktop.name,
        uuid=str(desktop.uuid),
        domain_type=desktop.host.domain_type,
        vcpus=pool.vcpus,
        memory_mib=pool.memory_mib,
        system_disk_path=_volume_path(desktop, desktop.volume_name),
        data_disk_path=_volume_path(desktop, desktop.data_volume_name) if desktop.data_volume_name else None,
        serial_log_path=desktop.serial_log_path,
        metadata={"desktop": str(desktop.pk), "pool": pool.name},
        nic=desktop_nic(desktop, driver=driver),
    )


# -- creating desktop rows ---------------------------------------------------------------------

def desktop_name(*, pool, unique: str) -> str:
    return f"{settings.VDI_NAME_PREFIX}{pool.name}-{unique}"


def new_desktop(*, pool: Pool, host, version, user=None, application=None) -> Desktop:
    """Insert a queued desktop named by the pool's pattern; the caller enqueues provisioning
    (a farm session: placement, with no host or image yet)."""
    for _attempt in range(20):
        Pool.objects.filter(pk=pool.pk).update(desktop_counter=F("desktop_counter") + 1)
        number = Pool.objects.values_list("desktop_counter", flat=True).get(pk=pool.pk)
        name = settings.VDI_NAME_PREFIX + pool.naming_pattern.format(pool=pool.name, n=number)
        mac_address = new_mac_address()
        try:
            with transaction.atomic():
                desktop = Desktop.objects.create(
                    pool=pool,
                    user=user,
                    host=host,
                    image_version=version,
                    application=application,
                    name=name,
                    state=S.QUEUED,
                    mac_address=mac_address,
                    assigned_at=timezone.now() if user else None,
                    data_volume_name=f"{name}-data.qcow2"
                    if pool.kind == Pool.Kind.DEDICATED and pool.data_disk_gib else "",
                )
        except IntegrityError:
            if Desktop.objects.filter(name=name).exists():
                continue  # the pattern met an existing name: take the next number
            if Desktop.objects.filter(mac_address=mac_address).exclude(state=S.DELETED).exists():
                continue  # 1 in 16 million per live desktop: draw another MAC
            raise  # the one-desktop-per-user constraint: the caller handles it
        return desktop
    raise HypervisorError(f"could not find a free desktop name with pattern {pool.naming_pattern!r}")


# -- provisioning --------------------------------------------------------------------------------

def provision_desktop(*, desktop_id: int, now: datetime | None = None) -> Desktop | None:
    """Clone, define and start (or keep off, for a spare while the pool's capacity at `now`
    says spares are powered off) a queued desktop."""
    desktop = _load(desktop_id)
    if desktop is None:
        log.info("desktop %s is gone; nothing to provision", desktop_id)
        return None
    driver = driver_for_host(desktop.host)

    if desktop.state == S.QUEUED:
        desktop.transition(S.CLONING, expected=S.QUEUED, message="worker picked up the desktop",
                           provisioning_attempts=desktop.provisioning_attempts + 1)
        desktop = _load(desktop_id)

    if desktop.state == S.CLONING:
        _build_disks_and_define(desktop, driver)
        if desktop.is_spare and not pool_capacity(pool=desktop.pool, now=now).powered_on:
            if desktop.transition(S.STOPPED, expected=S.CLONING, message="spare ready (kept powered off)"):
                _provisioning_succeeded(desktop.pool)
            return _load(desktop_id)
        desktop.transition(S.STARTING, expected=S.CLONING, message="disks ready, domain defined")
        desktop = _load(desktop_id)

    if desktop.state == S.STARTING:
        return _start(desktop, driver)
    return desktop


def _build_disks_and_define(desktop: Desktop, driver) -> None:
    host = desktop.host
    prepare_host_storage(host)
    volume = driver.clone_volume(
        pool=host.storage_pool,
        name=desktop.volume_name,
        base_path=desktop.image_version.path,
        linked=desktop.pool.linked_clones,
    )
    spec = domain_spec(desktop, driver=driver)
    if volume.path != spec.system_disk_path:
        raise HypervisorError(
            f"storage pool {host.storage_pool} on {host.name} is at {volume.path.rsplit('/', 1)[0]}, "
            f"not {host.storage_path}; fix the host's storage path"
        )
    if desktop.data_volume_name:
        driver.create_volume(pool=host.storage_pool, name=desktop.data_volume_name,
                             capacity_bytes=desktop.pool.data_disk_gib * 2**30)
    driver.define_domain(spec)


def start_desktop(*, desktop_id: int) -> Desktop | None:
    """Power on a stopped desktop (a launch, or a powered-off spare being claimed)."""
    desktop = _load(desktop_id)
    if desktop is None:
        return None
    if desktop.state == S.STOPPED:
        desktop.transition(S.STARTING, expected=S.STOPPED, message="powering on")
        desktop = _load(desktop_id)
    if desktop.state == S.STARTING:
        return _start(desktop, driver_for_host(desktop.host))
    return desktop


def _start(desktop: Desktop, driver) -> Desktop:
    try:
        driver.start_domain(desktop.name)
    except DomainNotFound:
        # Its disks are here but its definition is not: it was brought to this host from a
        # dead one (same storage group), or the definition was lost. Define it again.
        prepare_host_storage(desktop.host)
        driver.define_domain(domain_spec(desktop))
        desktop.note(f"defined on {desktop.host} again (its disks were there)")
        driver.start_domain(desktop.name)
    ports = driver.graphics_ports(desktop.name)
    if ports.vnc is None and ports.spice is None:
        raise HypervisorError(f"{desktop.name} runs but its definition shows no console port")
    if desktop.transition(
        S.RUNNING,
        expected=S.STARTING,
        message=f"running; console ports vnc={ports.vnc} spice={ports.spice}",
        vnc_port=ports.vnc,
        spice_port=ports.spice,
        last_error="",
    ):
        _provisioning_succeeded(desktop.pool)
    return desktop


def stop_desktop(*, desktop_id: int, reason: str = "powering off") -> Desktop | None:
    """Ask the guest to shut down; power it off if it has not within SHUTDOWN_GRACE_S."""
    desktop = _load(desktop_id)
    if desktop is None:
        return None
    if desktop.state == S.RUNNING:
        if not desktop.transition(S.STOPPING, expected=S.RUNNING, message=reason):
            return _load(desktop_id)
    if desktop.state != S.STOPPING:
        return desktop
    console_control.close_consoles(group=console_control.desktop_group(desktop.pk), code=CloseCode.DESKTOP_CLOSED,
                                   reason="The desktop is shutting down.")
    driver = driver_for_host(desktop.host)
    driver.shutdown_domain(desktop.name)
    deadline = time.monotonic() + SHUTDOWN_GRACE_S
    while time.monotonic() < deadline and driver.domain_info(desktop.name).state == "running":
        time.sleep(0.5)
    if driver.domain_info(desktop.name).state == "running":
        driver.destroy_domain(desktop.name)
        desktop.note(f"guest did not shut down within {SHUTDOWN_GRACE_S} s; powered off")
    desktop.transition(S.STOPPED, expected=S.STOPPING, message="powered off", vnc_port=None, spice_port=None)
    return desktop


def recompose_desktop(*, desktop_id: int) -> Desktop | None:
    """Rebuild the system disk from the pool's current image version; keep the data disk.

    The caller moved the desktop to `recomposing` and recorded whether it should run after.
    """
    desktop = _load(desktop_id)
    if desktop is None or desktop.state != S.RECOMPOSING:
        return desktop
    version = desktop.pool.image.current_version()
    driver = driver_for_host(desktop.host)
    console_control.close_consoles(group=console_control.desktop_group(desktop.pk), code=CloseCode.DESKTOP_CLOSED,
                                   reason="The desktop is being updated to a new image.")
    driver.destroy_domain(desktop.name)
    if version and version.pk != desktop.image_version_id:
        driver.delete_volume(pool=desktop.host.storage_pool, name=desktop.volume_name)
        Desktop.objects.filter(pk=desktop.pk).update(image_version=version)
        desktop = _load(desktop_id)
    _build_disks_and_define(desktop, driver)
    message = f"system disk rebuilt from {desktop.image_version}; user data kept"
    if desktop.user_id is not None and desktop.pool.kind == Pool.Kind.DEDICATED:
        # Back to running only if a user had it running; the data disk is untouched.
        desktop.transition(S.STARTING, expected=S.RECOMPOSING, message=message)
        return _start(_load(desktop_id), driver)
    desktop.transition(S.STOPPED, expected=S.RECOMPOSING, message=message, vnc_port=None, spice_port=None)
    return desktop


def mark_failed(*, desktop_id: int, error: str) -> None:
    desktop = _load(desktop_id)
    if desktop is None or desktop.state in (S.FAILED, S.DELETED):
        return
    was_provisioning = desktop.state in (S.QUEUED, S.CLONING, S.STARTING, S.RECOMPOSING)
    if desktop.transition(S.FAILED, message=error, last_error=error) and was_provisioning:
        _provisioning_failed(desktop.pool, error)


def delete_desktop(*, desktop_id: int, actor=None) -> Desktop | None:
    """Power off, undefine and remove the disks; the row stays as history in state deleted."""
    desktop = _load(desktop_id)
    if desktop is None or desktop.state == S.DELETED:
        return desktop
    if desktop.pool.is_farm:  # a session, not a VM: its agent ends it
        from .farm_sessions import log_off_session

        if desktop.state == S.DELETING and desktop.host_id:
            enqueue_after_commit("broker.session_tasks.end_farm_session_task", desktop.pk,
                                 queue=desktop.host.agent_queue)
        else:
            log_off_session(session=desktop, actor=actor, reason="deleted")
        return _load(desktop_id)
    if desktop.state != S.DELETING:
        if not desktop.transition(S.DELETING, message="deletion requested", actor=actor):
            return _load(desktop_id)
    console_control.close_consoles(group=console_control.desktop_group(desktop.pk), code=CloseCode.DESKTOP_CLOSED,
                                   reason="The desktop was reset or deleted.")
    driver = driver_for_host(desktop.host)
    driver.undefine_domain(desktop.name)
    driver.delete_volume(pool=desktop.host.storage_pool, name=desktop.volume_name)
    if desktop.data_volume_name:
        driver.delete_volume(pool=desktop.host.storage_pool, name=desktop.data_volume_name)
    desktop.transition(S.DELETED, expected=S.DELETING, message="domain and disks removed", vnc_port=None,
                       spice_port=None)
    return desktop


def domain_exists(desktop: Desktop) -> bool:
    try:
        driver_for_host(desktop.host).domain_info(desktop.name)
        return True
    except DomainNotFound:
        return False


# -- pool provisioning health --------------------------------------------------------------------

def _provisioning_succeeded(pool: Pool) -> None:
    Pool.objects.filter(pk=pool.pk, consecutive_failures__gt=0).update(consecutive_failures=0, backoff_until=None)
    _refill_soon(pool)


def _refill_soon(pool: Pool) -> None:
    """A provisioning slot on the host just freed up: let the pool fill it now, not at the next
    periodic pass (with 4 clones in flight and a 30 s beat, 20 spares took 121 s that way)."""
    if pool_capacity(pool=pool).spares:
        enqueue_after_commit("broker.tasks.reconcile_pool_task", pool.pk)


def _provisioning_failed(pool: Pool, error: str) -> None:
    Pool.objects.filter(pk=pool.pk).update(consecutive_failures=F("consecutive_failures") + 1)
    _refill_soon(pool)  # after three failures in a row the pool backs off instead
    failures = Pool.objects.values_list("consecutive_failures", flat=True).get(pk=pool.pk)
    if failures >= FAILURES_BEFORE_BACKOFF:
        wait = min(timedelta(minutes=2 ** (failures - FAILURES_BEFORE_BACKOFF)), MAX_BACKOFF)
        Pool.objects.filter(pk=pool.pk).update(backoff_until=timezone.now() + wait)
        BrokerEvent.objects.create(
            kind=BrokerEvent.Kind.POOL, pool=pool,
            message=f"{failures} provisioning failures in a row; no new desktops for {wait}. Last error: {error}",
        )
