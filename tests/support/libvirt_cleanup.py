"""Test runs name their domains and volumes `vditest-p<pid>-...`, so runs that overlap on one
machine (a developer's and CI's, or two helpers') never delete each other's guests."""

import os
import re

from django.conf import settings

from broker.hypervisor import HypervisorError, driver_for_uri

URI = "qemu:///system"
_RUN = re.compile(r"^vditest-p(\d+)-")


def run_prefix() -> str:
    return f"vditest-p{os.getpid()}-"


def _belongs_to_a_finished_run(name: str) -> bool:
    match = _RUN.match(name)
    if not match:
        return name.startswith("vditest-")  # an older naming scheme: nobody owns it any more
    pid = int(match.group(1))
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


SECOND_DAEMONS = "/var/lib/vdi/hosts"


def second_daemon_uris() -> list[str]:
    """The URIs of this machine's second libvirt daemons (scripts/start-second-libvirtd.sh)."""
    if not os.path.isdir(SECOND_DAEMONS):
        return []
    return [f"qemu+unix:///system?socket={SECOND_DAEMONS}/{name}/run/libvirt-sock"
            for name in sorted(os.listdir(SECOND_DAEMONS))
            if os.path.exists(f"{SECOND_DAEMONS}/{name}/run/libvirt-sock")]


def remove_test_leftovers(*, only_ours: bool = False) -> list[str]:
    prefix = settings.VDI_NAME_PREFIX
    assert prefix.startswith("vditest-")

    def doomed(name: str) -> bool:
        return name.startswith(prefix) if only_ours else _belongs_to_a_finished_run(name)

    removed = []
    for uri in [URI, *second_daemon_uris()]:
        try:
            driver = driver_for_uri(uri)
            domains = driver.list_domains()
        except HypervisorError:
            continue  # a second daemon that is not running holds nothing
        for domain in domains:
            if doomed(domain.name):
                driver.undefine_domain(domain.name)
                removed.append(domain.name)
    driver = driver_for_uri(URI)
    for pool in (settings.VDI_STORAGE_POOL, settings.VDI_BACKUP_POOL):
        try:
            volumes = driver.list_volumes(pool=pool)
        except HypervisorError:
            volumes = []
        for volume in volumes:
            if doomed(volume.name):
                driver.delete_volume(pool=pool, name=volume.name)
                removed.append(volume.name)
    return removed
