"""Why isn't it ready? Each cause, from real rows, with placement itself deciding: the admin
sees the reason with each host's refusal, the last error and the guest's serial log; the
employee sees the reason in plain words and nothing of the hosts or the guest's output."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from broker import selectors
from broker.models import Desktop, DesktopState, Entitlement, GoldenImage, GoldenImageVersion, Host, Pool
from broker.readiness import why_not_ready, why_pool_short
from broker.services.farm_sessions import place_waiting_sessions
from broker.services.hosts import set_host_maintenance
from broker.services.provisioning import mark_failed
from tests.support.mfa import verified_session

S = DesktopState


@pytest.fixture
def image(db):
    image = GoldenImage.objects.create(name="win", display_name="Windows")
    GoldenImageVersion.objects.create(image=image, number=1, path="/images/win.qcow2")
    return image


def hypervisor(name, **fields):
    values = {"libvirt_uri": "test:///default", "cpus": 4, "memory_mib": 4096, "vcpu_overcommit": 1.0,
              "memory_overcommit": 1.0}
    values.update(fields)
    return Host.objects.create(name=name, **values)


@pytest.fixture
def pool(image):
    return Pool.objects.create(name="office", display_name="Office", image=image, kind=Pool.Kind.DEDICATED,
                               vcpus=2, memory_mib=2048, min_spares=2, max_desktops=10)


@pytest.fixture
def employee(django_user_model, pool):
    user = django_user_model.objects.create_user("alice", password="correct-horse-9")
    Entitlement.objects.create(pool=pool, user=user)
    return user


@pytest.fixture
def admin_client(client, django_user_model):
    verified_session(client, django_user_model.objects.create_superuser("root", password="admin-pass-1"))
    return client


def place(pool, host, name, state=S.RUNNING, user=None):
    return Desktop.objects.create(pool=pool, host=host, user=user, name=name, state=state,
                                  image_version=pool.image.current_version())


def test_no_host_has_capacity_and_each_host_says_why(pool):
    full_memory = hypervisor("hv-mem", memory_mib=3000)
    place(pool, full_memory, "d-1")  # 2048 of 3000 MiB: no room for another 2048
    full_cpu = hypervisor("hv-cpu", cpus=3)
    place(Pool.objects.create(name="tiny", display_name="Tiny", image=pool.image, vcpus=2, memory_mib=256),
          full_cpu, "d-2")  # 2 of 3 vCPUs: no room for 2 more
    draining = hypervisor("hv-drain")
    set_host_maintenance(host=draining, in_maintenance=True)
    hypervisor("hv-off", is_online=False, last_error="Connection refused")
    hypervisor("hv-disabled", is_enabled=False)

    assert selectors.pick_host(pool=pool) is None  # the placement decision itself
    [reason] = [r for r in why_pool_short(pool) if r.code == "no_host_capacity"]
    assert reason.summary == "1 of 2 spares ready: no host has room for another desktop."
    details = "\n".join(reason.details)
    assert "hv-mem: full: memory (2048 of 3000 MiB placed, a desktop needs 2048 MiB)" in details
    assert "hv-cpu: full: vCPUs (2 of 3 placed, a desktop needs 2)" in details
    assert "hv-drain: draining (in maintenance)" in details
    assert "hv-off: offline: its libvirt does not answer (Connection refused)" in details
    assert "hv-disabled: disabled by an admin" in details

    # The drained host comes back: placement picks it, and the reason changes with it.
    set_host_maintenance(host=draining, in_maintenance=False)
    assert selectors.pick_host(pool=pool) == draining
    codes = [r.code for r in why_pool_short(pool)]
    assert "no_host_capacity" not in codes and "building" in codes


def test_a_pinned_pool_reports_only_its_host(pool):
    pinned = hypervisor("hv-pinned", memory_mib=1024)
    hypervisor("hv-roomy")
    Pool.objects.filter(pk=pool.pk).update(host=pinned)
    pool.refresh_from_db()
    [reason] = [r for r in why_pool_short(pool) if r.code == "no_host_capacity"]
    assert reason.details == ["hv-pinned: full: memory (0 of 1024 MiB placed, a desktop needs 2048 MiB)"]


def test_a_pool_backing_off_after_failures_says_the_last_error_and_when_it_retries(pool, employee):
    host = hypervisor("hv-1")
    desktops = [place(pool, host, f"d-{n}", state=S.CLONING) for n in range(3)]
    for n, desktop in enumerate(desktops):
        mark_failed(desktop_id=desktop.pk, error=f"clone failed: no space left on device ({n})")
    pool.refresh_from_db()
    assert pool.backoff_until > timezone.now()  # the provisioning service decided to back off

    Desktop.objects.filter(pk=desktops[0].pk).update(user=employee)
    desktop = Desktop.objects.select_related("pool", "host").get(pk=desktops[0].pk)
    reason = why_not_ready(desktop)
    assert reason.code == "pool_backing_off"
    assert reason.retry_at == pool.backoff_until
    assert reason.last_error == "clone failed: no space left on device (2)"
    assert f"{timezone.localtime(pool.backoff_until):%H:%M}" in reason.summary
    assert "no space" not in str(reason.for_employee())
    pool_reasons = {r.code: r for r in why_pool_short(pool)}
    assert pool_reasons["pool_backing_off"].last_error == "clone failed: no space left on device (2)"
    assert pool_reasons["failed_desktops"].summary == "3 desktop(s) failed."


def test_a_guest_that_does_not_answer_shows_its_serial_log_to_the_admin_only(
        pool, employee, tmp_path, admin_client, client, django_user_model):
    host = hypervisor("hv-1", serial_log_dir=str(tmp_path))
    desktop = place(pool, host, "d-guest", state=S.STARTING, user=employee)
    (tmp_path / "d-guest.log").write_text("SeaBIOS (version 1.16)\nBooting from Hard Disk...\n"
                                          "Kernel panic - not syncing: VFS: Unable to mount root fs\n")
    assert why_not_ready(desktop).code == "starting"  # not yet: it has only just been started
    Desktop.objects.filter(pk=desktop.pk).update(state_changed_at=timezone.now() - timedelta(minutes=5))
    desktop.refresh_from_db()

    reason = why_not_ready(desktop)
    assert reason.code == "guest_not_answering"
    assert reason.serial_log[-1] == "Kernel panic - not syncing: VFS: Unable to mount root fs"

    page = admin_client.get(reverse("admin:broker_desktop_change", args=[desktop.pk])).content.decode()
    assert "has not answered yet" in page and "Kernel panic - not syncing" in page

    root = django_user_model.objects.get(username="root")
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=root).key}")
    detail = api.get(f"/api/v1/desktops/{desktop.pk}/").json()
    assert detail["not_ready_reason"]["code"] == "guest_not_answering"
    assert "Kernel panic - not syncing: VFS: Unable to mount root fs" in detail["not_ready_reason"]["serial_log"]
    assert "not_ready_reason" not in api.get("/api/v1/desktops/").json()["results"][0]

    client.force_login(employee)
    progress = client.get(reverse("portal:desktop-status", args=[desktop.pk])).json()
    assert progress["why"]["code"] == "guest_not_answering"
    assert "has not answered yet" in progress["why"]["summary"]
    assert "Kernel" not in str(progress) and "hv-1" not in str(progress)
    home = client.get(reverse("portal:home")).content.decode()
    assert 'data-why="guest_not_answering"' in home and "Kernel" not in home


def test_a_failed_start_keeps_the_serial_log_for_the_admin(pool, employee, tmp_path):
    host = hypervisor("hv-1", serial_log_dir=str(tmp_path))
    desktop = place(pool, host, "d-fail", state=S.STARTING, user=employee)
    (tmp_path / "d-fail.log").write_text("grub rescue>\n")
    mark_failed(desktop_id=desktop.pk, error="start failed: internal error: qemu unexpectedly closed the monitor")
    desktop.refresh_from_db()
    reason = why_not_ready(desktop)
    assert reason.code == "guest_not_answering"
    assert reason.last_error.startswith("start failed: internal error")
    assert reason.serial_log == ["grub rescue>"]
    assert set(reason.for_employee()) == {"code", "summary", "retry_at"}


def test_queued_behind_others_on_a_host_that_builds_a_few_at_once(pool, employee, django_user_model):
    host = hypervisor("hv-1", max_parallel_provisioning=2)
    for n in range(2):
        place(pool, host, f"d-ahead-{n}", state=S.CLONING)
    mine = place(pool, host, "d-mine", state=S.QUEUED, user=employee)
    reason = why_not_ready(mine)
    assert reason.code == "queued_behind_others"
    assert reason.summary.startswith("2 desktops ahead of yours")
    assert reason.details == ["hv-1 builds at most 2 at once; 2 ahead in the queue"]


def test_a_queued_desktop_nobody_picked_up_says_no_worker_took_it(pool, employee, settings):
    host = hypervisor("hv-1")
    mine = place(pool, host, "d-mine", state=S.QUEUED, user=employee)
    assert why_not_ready(mine).code == "queued"
    Desktop.objects.filter(pk=mine.pk).update(
        state_changed_at=timezone.now() - timedelta(seconds=settings.VDI_QUEUED_RETRY_SECONDS + 5))
    mine.refresh_from_db()
    assert why_not_ready(mine).code == "no_worker"


def test_a_desktop_on_a_host_that_went_offline(pool, employee):
    host = hypervisor("hv-1")
    mine = place(pool, host, "d-mine", state=S.CLONING, user=employee)
    assert why_not_ready(mine).code == "cloning"
    Host.objects.filter(pk=host.pk).update(is_online=False, last_error="No route to host")
    mine = Desktop.objects.select_related("host", "pool").get(pk=mine.pk)
    reason = why_not_ready(mine)
    assert reason.code == "host_unavailable"
    assert reason.details == ["hv-1: offline: its libvirt does not answer (No route to host)"]


def test_a_farm_session_waits_for_a_session_host_and_each_host_says_why(image, django_user_model):
    farm = Pool.objects.create(name="farm", display_name="Farm", kind=Pool.Kind.FARM, max_sessions_per_host=1,
                               max_concurrent_logons_per_host=1)
    full = Host.objects.create(name="sh-full", kind=Host.Kind.SESSION_HOST, farm=farm)
    Host.objects.create(name="sh-drain", kind=Host.Kind.SESSION_HOST, farm=farm, in_maintenance=True)
    users = [django_user_model.objects.create_user(f"u{n}") for n in range(3)]
    sessions = [Desktop.objects.create(pool=farm, user=user, name=f"s-{n}", state=S.QUEUED)
                for n, user in enumerate(users)]
    assert place_waiting_sessions(pool_id=farm.pk) == 1  # the placement decision: one fits
    sessions = [Desktop.objects.select_related("pool", "host").get(pk=s.pk) for s in sessions]
    assert sessions[0].host == full and sessions[0].state == S.STARTING
    reason = why_not_ready(sessions[2])
    assert reason.code == "no_host_capacity"
    assert "number 2 in the queue" in reason.summary
    assert reason.details == ["sh-drain: draining (in maintenance): it takes no new sessions",
                              "sh-full: full: 1 of 1 sessions"]
    [pool_reason] = why_pool_short(farm)
    assert pool_reason.summary.startswith("2 session(s) wait: No server has room")


def test_the_pool_page_and_the_api_show_why_it_is_short(pool, admin_client, django_user_model):
    host = hypervisor("hv-only", memory_mib=1024)
    page = admin_client.get(reverse("admin:broker_pool_change", args=[pool.pk])).content.decode()
    assert "no host has room for another desktop" in page
    assert f"{host.name}: full: memory (0 of 1024 MiB placed" in page
    api = APIClient()
    api.force_authenticate(user=django_user_model.objects.get(username="root"))
    reasons = api.get(f"/api/v1/pools/{pool.pk}/").json()["not_ready_reasons"]
    assert [r["code"] for r in reasons] == ["no_host_capacity"]
    assert reasons[0]["details"] == ["hv-only: full: memory (0 of 1024 MiB placed, a desktop needs 2048 MiB)"]
