"""A host's own use read through the one door (broker/hypervisor): against libvirt's test driver
and the real libvirtd with a real guest running, and what the dashboard makes of two readings."""

import time

import pytest

from broker.hypervisor import HostUnreachable
from broker.hypervisor.libvirt_driver import LibvirtDriver
from dashboard.selectors import host_figures
from dashboard.services.samples import record_host_reading


def test_the_test_driver_reports_cpu_memory_storage_and_its_running_domain():
    usage = LibvirtDriver("test:///default").host_usage(storage_pool="default-pool")
    assert usage.cpu_total_ns > usage.cpu_busy_ns >= 0
    assert usage.memory_total_kib > 0
    assert usage.storage_capacity_bytes > 0 and usage.storage_available_bytes <= usage.storage_capacity_bytes
    assert usage.running_domains >= 1  # the test driver's own "test" domain


def test_a_missing_storage_pool_leaves_the_storage_figures_empty():
    usage = LibvirtDriver("test:///default").host_usage(storage_pool="no-such-pool")
    assert usage.storage_capacity_bytes is None and usage.memory_total_kib > 0


def test_an_unreachable_host_is_an_error_the_dashboard_shows(db):
    from broker.models import Host

    host = Host.objects.create(name="gone", libvirt_uri="qemu+unix:///system?socket=/nonexistent/sock")
    with pytest.raises(HostUnreachable):
        LibvirtDriver(host.libvirt_uri).host_usage(storage_pool="vdi")
    record_host_reading(host=host)
    usage = next(h for h in host_figures() if h["name"] == "gone")["usage"]
    assert "cannot connect" in usage["error"]


@pytest.mark.libvirt
def test_the_real_libvirtd_reports_a_running_guests_disk_and_the_hosts_cpu(host, running_desktop):
    """A booting TCG guest reads its disk; two readings a moment apart give the host's CPU use."""
    record_host_reading(host=host)
    time.sleep(1.5)
    record_host_reading(host=host)
    usage = next(h for h in host_figures() if h["name"] == host.name)["usage"]
    assert usage["error"] == ""
    assert usage["running_domains"] >= 1
    assert 0 < usage["cpu_percent"] <= 100  # a TCG guest booting keeps a CPU busy
    assert usage["memory_total_mib"] > usage["memory_used_mib"] > 0
    assert usage["storage_capacity_bytes"] > 0
    assert usage["disk_read_bps"] is not None and usage["disk_read_bps"] >= 0
    reading = host.readings.first()
    assert reading.disk_read_bytes > 0  # the guest has read its disk since it started
