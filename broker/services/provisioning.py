"""Building and starting a desktop on its host. Called by Celery tasks, never by a request.

Each step checks where the desktop is and does only what is left, so a duplicated or
retried task finishes the job instead of repeating it, and leaks neither domain nor volume:
domain and volume names are derived from the desktop, the clone returns the volume that is
already there, and the state moves by compare-and-set.
"""

import logging

from django.conf import settings

from ..hypervisor import DomainSpec, HypervisorError, driver_for_host
from ..models import Desktop, DesktopState

log = logging.getLogger(__name__)
S = DesktopState


def _load(desktop_id: int) -> Desktop | None:
    return Desktop.objects.select_related("host", "pool", "image_version").filter(pk=desktop_id).first()


def prepare_host_storage(host) -> None:
    """Make sure the host has the broker's image and desktop storage pools (idempotent)."""
    driver = driver_for_host(host)
    driver.ensure_storage_pool(name=host.image_pool, path=host.image_path)
    driver.ensure_storage_pool(name=host.storage_pool, path=host.storage_path)


def domain_spec(desktop: Desktop) -> DomainSpec:
    host, pool = desktop.host, desktop.pool
    volume_path = f"{host.storage_path.rstrip('/')}/{desktop.volume_name}"
    return DomainSpec(
        name=desktop.name,
        uuid=str(desktop.uuid),
        domain_type=host.domain_type,
        vcpus=pool.vcpus,
        memory_mib=pool.memory_mib,
        system_disk_path=volume_path,
        serial_log_path=desktop.serial_log_path,
        metadata={"desktop": str(desktop.pk), "pool": pool.name},
    )


def provision_desktop(*, desktop_id: int) -> Desktop | None:
    """Clone, define and start a queued desktop, as far as it has not been done yet."""
    desktop = _load(desktop_id)
    if desktop is None:
        log.info("desktop %s is gone; nothing to provision", desktop_id)
        return None
    driver = driver_for_host(desktop.host)

    if desktop.state == S.QUEUED:
        desktop.transition(S.CLONING, expected=S.QUEUED, message="worker picked up the launch")
        desktop = _load(desktop_id)

    if desktop.state == S.CLONING:
        host = desktop.host
        prepare_host_storage(host)
        volume = driver.clone_volume(
            pool=host.storage_pool,
            name=desktop.volume_name,
            base_path=desktop.image_version.path,
            linked=desktop.pool.linked_clones,
        )
        spec = domain_spec(desktop)
        if volume.path != spec.system_disk_path:
            raise HypervisorError(
                f"storage pool {host.storage_pool} on {host.name} is at {volume.path.rsplit('/', 1)[0]}, "
                f"not {host.storage_path}; fix the host's storage path"
            )
        driver.define_domain(spec)
        desktop.transition(S.STARTING, expected=S.CLONING, message=f"disk {volume.name} cloned, domain defined")
        desktop = _load(desktop_id)

    if desktop.state == S.STARTING:
        return _start(desktop, driver)
    return desktop


def start_desktop(*, desktop_id: int) -> Desktop | None:
    """Power on a stopped desktop that a user launched again."""
    desktop = _load(desktop_id)
    if desktop is None:
        return None
    if desktop.state == S.STOPPED:
        desktop.transition(S.STARTING, expected=S.STOPPED, message="powering on for launch")
        desktop = _load(desktop_id)
    if desktop.state == S.STARTING:
        return _start(desktop, driver_for_host(desktop.host))
    return desktop


def _start(desktop: Desktop, driver) -> Desktop:
    driver.start_domain(desktop.name)
    ports = driver.graphics_ports(desktop.name)
    if ports.vnc is None and ports.spice is None:
        raise HypervisorError(f"{desktop.name} runs but its definition shows no console port")
    desktop.transition(
        S.RUNNING,
        expected=S.STARTING,
        message=f"running; console ports vnc={ports.vnc} spice={ports.spice}",
        vnc_port=ports.vnc,
        spice_port=ports.spice,
        last_error="",
    )
    return desktop


def mark_failed(*, desktop_id: int, error: str) -> None:
    desktop = _load(desktop_id)
    if desktop is None or desktop.state in (S.FAILED, S.DELETED):
        return
    desktop.transition(S.FAILED, message=error, last_error=error)


def delete_desktop(*, desktop_id: int, actor=None) -> Desktop | None:
    """Power off, undefine and remove the disk; the row stays as history in state deleted."""
    desktop = _load(desktop_id)
    if desktop is None or desktop.state == S.DELETED:
        return desktop
    if desktop.state != S.DELETING:
        if not desktop.transition(S.DELETING, message="deletion requested", actor=actor):
            return _load(desktop_id)
    driver = driver_for_host(desktop.host)
    driver.undefine_domain(desktop.name)
    driver.delete_volume(pool=desktop.host.storage_pool, name=desktop.volume_name)
    desktop.transition(S.DELETED, expected=S.DELETING, message="domain and disk removed", vnc_port=None,
                       spice_port=None)
    return desktop


def desktop_name(*, pool, unique: str) -> str:
    return f"{settings.VDI_NAME_PREFIX}{pool.name}-{unique}"
