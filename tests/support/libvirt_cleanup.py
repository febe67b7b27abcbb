from django.conf import settings

from broker.hypervisor import HypervisorError, driver_for_uri

URI = "qemu:///system"


def remove_test_leftovers() -> list[str]:
    prefix = settings.VDI_NAME_PREFIX
    assert prefix.startswith("vditest-")
    driver = driver_for_uri(URI)
    removed = []
    for domain in driver.list_domains():
        if domain.name.startswith(prefix):
            driver.undefine_domain(domain.name)
            removed.append(domain.name)
    try:
        volumes = driver.list_volumes(pool=settings.VDI_STORAGE_POOL)
    except HypervisorError:
        volumes = []
    for volume in volumes:
        if volume.name.startswith(prefix):
            driver.delete_volume(pool=settings.VDI_STORAGE_POOL, name=volume.name)
            removed.append(volume.name)
    return removed
