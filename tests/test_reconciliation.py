"""The periodic reconciliation against the real libvirtd: what a crash leaves behind is
removed, vanished domains are noticed, stuck desktops are retried, and each action is an
event an admin can read."""

import uuid
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from broker.hypervisor import DomainSpec, driver_for_uri
from broker.models import BrokerEvent, Desktop, DesktopState
from broker.services.hosts import MAX_PROVISIONING_ATTEMPTS, check_host, reconcile_host
from broker.services.provisioning import desktop_name

S = DesktopState
pytestmark = [pytest.mark.django_db, pytest.mark.libvirt]


@pytest.fixture
def driver(host):
    from broker.services.provisioning import prepare_host_storage

    prepare_host_storage(host)
    return driver_for_uri("qemu:///system")


def test_orphan_domains_and_volumes_with_our_prefix_are_removed(host, driver, golden_image_path,
                                                                 django_capture_on_commit_callbacks):
    name = f"{settings.VDI_NAME_PREFIX}orphan-{uuid.uuid4().hex[:6]}"
    volume = driver.clone_volume(pool=host.storage_pool, name=f"{name}.qcow2", base_path=golden_image_path)
    driver.define_domain(DomainSpec(name=name, uuid=str(uuid.uuid4()), domain_type="qemu", vcpus=1,
                                    memory_mib=64, system_disk_path=volume.path))
    stray_volume = driver.create_volume(pool=host.storage_pool, name=f"{name}-lost-data.qcow2",
                                        capacity_bytes=2**20)
    # Not ours: another prefix is left alone.
    foreign = driver.create_volume(pool=host.storage_pool, name=f"someone-else-{uuid.uuid4().hex[:6]}.qcow2",
                                   capacity_bytes=2**20)
    try:
        later = timezone.now() + timedelta(minutes=5)  # past the grace for fresh rows
        done = reconcile_host(host_id=host.pk, now=later)
        assert done["orphan_domains"] == [name]
        assert set(done["orphan_volumes"]) == {f"{name}.qcow2", stray_volume.name}
        assert name not in {d.name for d in driver.list_domains()}
        assert foreign.name in {v.name for v in driver.list_volumes(pool=host.storage_pool)}
        assert BrokerEvent.objects.filter(host=host, message=f"removed orphan domain {name} (no desktop owns it)"
                                          ).exists()
    finally:
        driver.delete_volume(pool=host.storage_pool, name=foreign.name)


def test_a_desktop_whose_domain_vanished_is_marked_failed(running_desktop, driver, host):
    driver.undefine_domain(running_desktop.name)  # behind the broker's back
    done = reconcile_host(host_id=host.pk)
    assert done["vanished"] == [running_desktop.name]
    running_desktop.refresh_from_db()
    assert running_desktop.state == S.FAILED
    assert "vanished" in running_desktop.last_error


def test_a_guest_that_powered_itself_off_is_recorded_as_stopped(running_desktop, driver, host):
    driver.destroy_domain(running_desktop.name)
    done = reconcile_host(host_id=host.pk)
    assert done["powered_off"] == [running_desktop.name]
    running_desktop.refresh_from_db()
    assert running_desktop.state == S.STOPPED and running_desktop.vnc_port is None


def test_a_stuck_desktop_is_retried_then_failed(pool, host, driver, django_capture_on_commit_callbacks):
    desktop = Desktop.objects.create(pool=pool, host=host, image_version=pool.image.current_version(),
                                     name=desktop_name(pool=pool, unique="stuck"), state=S.CLONING,
                                     provisioning_attempts=1,
                                     state_changed_at=timezone.now() - timedelta(minutes=11))
    with django_capture_on_commit_callbacks() as sent:
        done = reconcile_host(host_id=host.pk)
    assert done["retried"] == [desktop.name] and len(sent) == 1
    desktop.refresh_from_db()
    assert desktop.provisioning_attempts == 2

    Desktop.objects.filter(pk=desktop.pk).update(provisioning_attempts=MAX_PROVISIONING_ATTEMPTS,
                                                 state_changed_at=timezone.now() - timedelta(minutes=11))
    done = reconcile_host(host_id=host.pk)
    assert done["failed"] == [desktop.name]
    desktop.refresh_from_db()
    assert desktop.state == S.FAILED and "stuck in cloning" in desktop.last_error


def test_a_fresh_desktop_is_not_mistaken_for_an_orphan(pool, host, driver, golden_image_path):
    desktop = Desktop.objects.create(pool=pool, host=host, image_version=pool.image.current_version(),
                                     name=desktop_name(pool=pool, unique="fresh"), state=S.CLONING)
    driver.clone_volume(pool=host.storage_pool, name=desktop.volume_name, base_path=golden_image_path)
    done = reconcile_host(host_id=host.pk)
    assert done["orphan_volumes"] == []


def test_checking_a_host_records_its_size(host):
    host = check_host(host_id=host.pk)
    assert host.is_online and host.cpus >= 1 and host.memory_mib > 0 and host.last_checked_at
