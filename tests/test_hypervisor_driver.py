"""The libvirt driver against libvirt's test driver and against the real libvirtd."""

import socket
import subprocess
import uuid

import pytest
from django.conf import settings

from broker.hypervisor import DomainNotFound, DomainSpec, HostUnreachable, ImageUnavailable, driver_for_uri
from broker.hypervisor.libvirt_driver import LibvirtDriver

TEST_URI = "test:///default"
REAL_URI = "qemu:///system"


def unique(kind="drv-"):
    return f"{settings.VDI_NAME_PREFIX}{kind}{uuid.uuid4().hex[:8]}"


def spec_for(name, disk, domain_type, serial=None):
    return DomainSpec(name=name, uuid=str(uuid.uuid4()), domain_type=domain_type, vcpus=1, memory_mib=128,
                      system_disk_path=disk, serial_log_path=serial)


# --- libvirt's test driver: the whole API, no guest ------------------------------------------

def test_it_runs_a_domain_through_its_lifecycle_on_the_test_driver():
    driver = LibvirtDriver(TEST_URI)
    golden = driver.create_volume(pool="default-pool", name=unique() + ".qcow2", capacity_bytes=2**30)
    clone = driver.clone_volume(pool="default-pool", name=unique() + ".qcow2", base_path=golden.path)
    assert clone.capacity_bytes == golden.capacity_bytes

    name = unique()
    driver.define_domain(spec_for(name, clone.path, "test"))
    assert driver.domain_info(name).state == "shutoff"
    driver.start_domain(name)
    driver.start_domain(name)  # a duplicate start is harmless
    assert driver.domain_info(name).state == "running"
    assert name in {d.name for d in driver.list_domains()}
    driver.destroy_domain(name)
    driver.destroy_domain(name)
    assert driver.domain_info(name).state == "shutoff"
    assert driver.undefine_domain(name) is True
    assert driver.undefine_domain(name) is False
    with pytest.raises(DomainNotFound):
        driver.domain_info(name)
    assert driver.delete_volume(pool="default-pool", name=clone.name) is True
    assert driver.delete_volume(pool="default-pool", name=clone.name) is False


def test_it_lists_every_domain_with_its_state_and_every_volume_by_name():
    driver = LibvirtDriver(TEST_URI)
    volume = driver.create_volume(pool="default-pool", name=unique() + ".qcow2", capacity_bytes=2**20)
    running, off = unique(), unique()
    for name in (running, off):
        driver.define_domain(spec_for(name, volume.path, "test"))
    driver.start_domain(running)
    try:
        listed = {d.name: d for d in driver.list_domains()}
        assert (listed[running].state, listed[off].state) == ("running", "shutoff")
        assert listed[off].uuid == driver.domain_info(off).uuid
        names = driver.list_volume_names(pool="default-pool")
        assert volume.name in names
        assert sorted(names) == sorted(v.name for v in driver.list_volumes(pool="default-pool"))
    finally:
        for name in (running, off):
            driver.undefine_domain(name)
        driver.delete_volume(pool="default-pool", name=volume.name)


def test_it_returns_the_existing_volume_when_a_clone_is_repeated():
    driver = LibvirtDriver(TEST_URI)
    golden = driver.create_volume(pool="default-pool", name=unique() + ".qcow2", capacity_bytes=2**30)
    name = unique() + ".qcow2"
    first = driver.clone_volume(pool="default-pool", name=name, base_path=golden.path)
    second = driver.clone_volume(pool="default-pool", name=name, base_path=golden.path)
    assert first.path == second.path
    assert [v.name for v in driver.list_volumes(pool="default-pool")].count(name) == 1


def test_it_makes_a_full_copy_when_asked():
    driver = LibvirtDriver(TEST_URI)
    golden = driver.create_volume(pool="default-pool", name=unique() + ".qcow2", capacity_bytes=2**30)
    copy = driver.clone_volume(pool="default-pool", name=unique() + ".qcow2", base_path=golden.path, linked=False)
    assert copy.capacity_bytes == golden.capacity_bytes and copy.path != golden.path


def test_it_refuses_a_missing_golden_image():
    driver = LibvirtDriver(TEST_URI)
    with pytest.raises(ImageUnavailable, match="is not on"):
        driver.clone_volume(pool="default-pool", name=unique(), base_path="/default-pool/no-such-image.qcow2")


def test_it_reports_an_unreachable_host():
    # Nothing listens on port 1: libvirt's remote driver fails to connect.
    driver = LibvirtDriver("qemu+tcp://127.0.0.1:1/system")
    with pytest.raises(HostUnreachable, match="cannot connect"):
        driver.list_domains()


def test_it_creates_a_storage_pool_once():
    driver = LibvirtDriver(TEST_URI)
    name = unique("pool-")
    driver.ensure_storage_pool(name=name, path=f"/{name}")
    driver.ensure_storage_pool(name=name, path=f"/{name}")
    assert driver.list_volumes(pool=name) == []


def test_only_one_module_imports_libvirt():
    found = subprocess.run(
        ["grep", "-rlE", r"^\s*(import libvirt|from libvirt)", "broker", "portal", "config"],
        capture_output=True, text=True, cwd=settings.BASE_DIR,
    ).stdout.split()
    assert found == ["broker/hypervisor/libvirt_driver.py"]


# --- the real libvirtd: a linked clone of the golden image, booted under TCG ---------------

@pytest.mark.libvirt
def test_it_boots_a_linked_clone_with_consoles_on_loopback(golden_image_path):
    driver = driver_for_uri(REAL_URI)
    pool = settings.VDI_STORAGE_POOL
    driver.ensure_storage_pool(name=settings.VDI_IMAGE_POOL, path=settings.VDI_IMAGE_PATH)
    driver.ensure_storage_pool(name=pool, path=settings.VDI_STORAGE_PATH)
    name = unique()
    volume = driver.clone_volume(pool=pool, name=f"{name}.qcow2", base_path=golden_image_path)
    try:
        info = subprocess.run(["qemu-img", "info", "-U", volume.path], capture_output=True, text=True).stdout
        assert f"backing file: {golden_image_path}" in info  # linked, not copied
        assert volume.allocation_bytes < 5 * 2**20

        driver.define_domain(spec_for(name, volume.path, "qemu"))
        driver.start_domain(name)
        ports = driver.graphics_ports(name)
        assert ports.listen == "127.0.0.1"
        assert ports.vnc >= 5900 and ports.spice >= 5900 and ports.vnc != ports.spice
        with socket.create_connection(("127.0.0.1", ports.vnc), timeout=5) as sock:
            assert sock.recv(12) == b"RFB 003.008\n"
        # Not reachable on another address of this machine.
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.2", ports.vnc), timeout=1).close()
    finally:
        driver.undefine_domain(name)
        driver.delete_volume(pool=pool, name=f"{name}.qcow2")
    assert name not in {d.name for d in driver.list_domains()}
    assert f"{name}.qcow2" not in {v.name for v in driver.list_volumes(pool=pool)}
