"""Provisioning on the real libvirtd: clone, define, start; idempotent; clear failures."""

import threading

import pytest
from django.conf import settings
from django.db import connection

from broker.hypervisor import driver_for_uri
from broker.models import Desktop, DesktopState, GoldenImageVersion
from broker.services.provisioning import delete_desktop, desktop_name, provision_desktop
from broker.tasks import provision_desktop_task

S = DesktopState
pytestmark = pytest.mark.libvirt


def our_domains_and_volumes(name):
    driver = driver_for_uri("qemu:///system")
    domains = [d.name for d in driver.list_domains() if d.name == name]
    volumes = [v.name for v in driver.list_volumes(pool=settings.VDI_STORAGE_POOL) if v.name.startswith(name)]
    return domains, volumes


@pytest.fixture
def queued_desktop(pool, employee, host):
    desktop = Desktop.objects.create(pool=pool, user=employee, host=host, image_version=pool.image.current_version(),
                                     name=desktop_name(pool=pool, unique="prov"))
    yield desktop
    delete_desktop(desktop_id=desktop.pk)


def test_it_clones_defines_and_starts(queued_desktop):
    desktop = provision_desktop(desktop_id=queued_desktop.pk)
    assert desktop.state == S.RUNNING
    assert desktop.vnc_port and desktop.spice_port
    assert our_domains_and_volumes(desktop.name) == ([desktop.name], [desktop.volume_name])
    steps = list(desktop.events.order_by("created_at", "id").values_list("to_state", flat=True))
    assert steps == ["cloning", "starting", "running"]
    assert driver_for_uri("qemu:///system").domain_info(desktop.name).state == "running"


def test_a_duplicated_task_leaks_nothing(queued_desktop):
    provision_desktop_task.apply(args=[queued_desktop.pk])
    provision_desktop_task.apply(args=[queued_desktop.pk])
    queued_desktop.refresh_from_db()
    assert queued_desktop.state == S.RUNNING
    assert our_domains_and_volumes(queued_desktop.name) == ([queued_desktop.name], [queued_desktop.volume_name])


@pytest.mark.django_db(transaction=True)
def test_two_simultaneous_tasks_leak_nothing(queued_desktop):
    errors = []

    def run():
        try:
            provision_desktop_task.apply(args=[queued_desktop.pk], throw=True)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()  # each thread has its own; do not leave it to the garbage collector

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    queued_desktop.refresh_from_db()
    assert queued_desktop.state == S.RUNNING
    assert our_domains_and_volumes(queued_desktop.name) == ([queued_desktop.name], [queued_desktop.volume_name])
    assert queued_desktop.events.filter(to_state=S.RUNNING).count() == 1


def test_a_task_retried_after_a_worker_died_mid_clone_finishes_the_job(queued_desktop):
    # The first worker moved the desktop to cloning and created the volume, then died.
    queued_desktop.transition(S.CLONING)
    driver = driver_for_uri("qemu:///system")
    driver.clone_volume(pool=settings.VDI_STORAGE_POOL, name=queued_desktop.volume_name,
                        base_path=queued_desktop.image_version.path)
    provision_desktop_task.apply(args=[queued_desktop.pk])  # the redelivered task
    queued_desktop.refresh_from_db()
    assert queued_desktop.state == S.RUNNING
    assert our_domains_and_volumes(queued_desktop.name) == ([queued_desktop.name], [queued_desktop.volume_name])


def test_a_missing_golden_image_fails_with_a_clear_error_and_leaks_nothing(queued_desktop):
    GoldenImageVersion.objects.filter(pk=queued_desktop.image_version_id).update(
        path="/var/lib/vdi/images/vditest-deleted-by-someone.qcow2")
    provision_desktop_task.apply(args=[queued_desktop.pk])
    queued_desktop.refresh_from_db()
    assert queued_desktop.state == S.FAILED
    assert "vditest-deleted-by-someone.qcow2 is not on qemu:///system" in queued_desktop.last_error
    assert our_domains_and_volumes(queued_desktop.name) == ([], [])


def test_an_unreachable_host_is_retried_then_fails_with_a_clear_error(queued_desktop, host):
    real_uri = host.libvirt_uri
    host.libvirt_uri = "qemu+tcp://127.0.0.1:1/system"  # nothing listens there
    host.save(update_fields=["libvirt_uri"])
    try:
        result = provision_desktop_task.apply(args=[queued_desktop.pk])
    finally:
        host.libvirt_uri = real_uri
        host.save(update_fields=["libvirt_uri"])
    queued_desktop.refresh_from_db()
    assert queued_desktop.state == S.FAILED
    assert "the host is down" in queued_desktop.last_error
    assert result.successful()  # retries were used up and the failure recorded, not raised


def test_deleting_removes_domain_and_disk(queued_desktop):
    desktop = provision_desktop(desktop_id=queued_desktop.pk)
    delete_desktop(desktop_id=desktop.pk)
    desktop.refresh_from_db()
    assert desktop.state == S.DELETED
    assert our_domains_and_volumes(desktop.name) == ([], [])
