"""A small site in known states: two hypervisors (libvirt's test driver: no guest is needed for
figures read from the database), a session host, three pools, desktops in chosen states."""

from datetime import timedelta

import pytest
from django.utils import timezone

from broker.models import ConsoleSession, Desktop, GoldenImage, GoldenImageVersion, Host, Pool

TEST_URI = "test:///default"


@pytest.fixture
def site(db, django_user_model):
    now = timezone.now()
    on_test_driver = {"libvirt_uri": TEST_URI, "domain_type": "qemu", "storage_pool": "default-pool"}
    big = Host.objects.create(name="big", cpus=8, memory_mib=16384, vcpu_overcommit=2.0, memory_overcommit=1.5,
                              **on_test_driver)
    small = Host.objects.create(name="small", cpus=2, memory_mib=4096, in_maintenance=True, **on_test_driver)
    image = GoldenImage.objects.create(name="linux", display_name="Linux")
    version = GoldenImageVersion.objects.create(image=image, number=1, path="/images/linux.qcow2",
                                                size_bytes=10 * 2**30, sha256="0" * 64, is_published=True)
    office = Pool.objects.create(name="office", display_name="Office", image=image, vcpus=2, memory_mib=2048,
                                 kind=Pool.Kind.FLOATING, min_spares=3, max_desktops=20)
    lab = Pool.objects.create(name="lab", display_name="Lab", image=image, vcpus=1, memory_mib=1024,
                              kind=Pool.Kind.DEDICATED, max_desktops=10, consecutive_failures=4, data_disk_gib=5,
                              backoff_until=now + timedelta(minutes=5))
    users = [django_user_model.objects.create_user(f"user{i}") for i in range(6)]
    made = []

    def desktop(pool, state, *, host=big, user=None):
        name = f"d{len(made)}"
        d = Desktop.objects.create(pool=pool, host=host, user=user, image_version=version, state=state, name=name,
                                   data_volume_name=f"{name}-data.qcow2" if pool.kind == Pool.Kind.DEDICATED else "")
        made.append(d)
        return d

    # office on big: 2 in use (running), 1 spare running, 1 spare stopped, 1 cloning, 1 failed, 1 deleted.
    in_use = [desktop(office, "running", user=users[0]), desktop(office, "running", user=users[1])]
    desktop(office, "running")
    desktop(office, "stopped")
    desktop(office, "cloning")
    desktop(office, "failed")
    desktop(office, "deleted", user=users[2])
    # lab: one in use on small (starting), one queued on small.
    desktop(lab, "starting", host=small, user=users[3])
    desktop(lab, "queued", host=small)
    # Two consoles open to the desktops in use, one closed.
    ConsoleSession.objects.create(user=users[0], desktop=in_use[0], protocol="vnc")
    ConsoleSession.objects.create(user=users[1], desktop=in_use[1], protocol="spice")
    ConsoleSession.objects.create(user=users[1], desktop=in_use[1], protocol="vnc", closed_at=now)
    return {"big": big, "small": small, "office": office, "lab": lab, "users": users, "version": version,
            "in_use": in_use}
