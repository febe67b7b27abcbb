"""Long actions as jobs: a row per run whose progress moves from start to result, that the
admin watches (the progress endpoint the page's script asks), cancels where that is safe, and
reads the result of later; only admins whose role allows the action start or cancel it."""

import hashlib
import threading
import time

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.urls import reverse

from broker.models import Desktop, DesktopState, GoldenImage, GoldenImageVersion, Host, Job, LiveMigration, Pool
from broker.services import jobs
from broker.services.images import start_checksum
from broker.services.jobs import JobRefused, request_cancel, run_job
from broker.services.live_migration import start_drain
from broker.services.recompose import start_recompose
from tests.support.tasks import tasks_among
from tests.support.mfa import verified_session
from tests.support.waiting import wait_until

S = DesktopState


def sparse_image(path, size: int, head: bytes = b"QFI\xfb") -> str:
    with open(path, "wb") as handle:
        handle.write(head)
        handle.truncate(size)
    return str(path)


def sha256_of(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


@pytest.fixture
def admin_client(client, django_user_model):
    verified_session(client, django_user_model.objects.create_superuser("root", password="admin-pass-1"))
    client.user = django_user_model.objects.get(username="root")
    return client


@pytest.fixture
def version(db, tmp_path):
    image = GoldenImage.objects.create(name="linux", display_name="Linux")
    return GoldenImageVersion.objects.create(image=image, number=1,
                                             path=sparse_image(tmp_path / "linux.qcow2", 24 * 2**20))


def test_a_checksum_job_goes_from_queued_to_its_result(version, django_user_model,
                                                       django_capture_on_commit_callbacks):
    root = django_user_model.objects.create_superuser("root", password="admin-pass-1")
    with django_capture_on_commit_callbacks() as callbacks:
        job = start_checksum(version=version, actor=root)
    assert (job.state, job.started_by, job.target_label) == (Job.State.QUEUED, root, f"{version} ({version.path})")
    assert len(tasks_among(callbacks)) == 1  # its task, once committed

    job = run_job(job_id=job.pk)
    size = 24 * 2**20
    assert (job.state, job.done, job.total, job.percent) == (Job.State.SUCCEEDED, size, size, 100)
    assert job.result == {"sha256": sha256_of(version.path), "path": version.path}
    version.refresh_from_db()
    assert version.sha256 == sha256_of(version.path)
    assert job.started_at <= job.finished_at
    assert run_job(job_id=job.pk).state == Job.State.SUCCEEDED  # a second delivery does nothing


def test_a_file_not_on_this_machine_fails_the_job_with_the_reason(db):
    image = GoldenImage.objects.create(name="far", display_name="Far")
    far = GoldenImageVersion.objects.create(image=image, number=1, path="/nowhere/far.qcow2")
    job = run_job(job_id=start_checksum(version=far).pk)
    assert job.state == Job.State.FAILED
    assert job.message == "/nowhere/far.qcow2 is not on this machine: checksum it on its host"


def test_one_job_at_a_time_per_target(version):
    start_checksum(version=version)
    with pytest.raises(JobRefused, match="already under way"):
        start_checksum(version=version)


def test_a_queued_job_is_cancelled_at_once_and_a_directory_sync_is_not_stopped_midway(version):
    job = request_cancel(job=start_checksum(version=version))
    assert job.state == Job.State.CANCELLED and job.finished_at is not None
    assert run_job(job_id=job.pk).state == Job.State.CANCELLED  # its task comes and does nothing
    sync = Job.objects.create(kind=Job.Kind.DIRECTORY_SYNC, target_key="directory", target_label="the directory",
                              state=Job.State.RUNNING)
    with pytest.raises(JobRefused, match="cannot be stopped once running"):
        request_cancel(job=sync)
    with pytest.raises(JobRefused, match="has finished already"):
        request_cancel(job=Job.objects.create(kind=Job.Kind.IMAGE_CHECKSUM, target_key="x", target_label="x",
                                              state=Job.State.SUCCEEDED))


@pytest.mark.django_db(transaction=True)
def test_the_admin_watches_a_checksum_move_and_cancels_it_between_blocks(tmp_path, client, django_user_model):
    """The job runs in a thread (as in a worker); the admin's page script asks the progress
    endpoint; the bar moves; a cancel stops it at its next block and records no checksum."""
    root = django_user_model.objects.create_superuser("root", password="admin-pass-1")
    verified_session(client, root)
    image = GoldenImage.objects.create(name="big", display_name="Big")
    big = GoldenImageVersion.objects.create(image=image, number=1,
                                            path=sparse_image(tmp_path / "big.qcow2", 6 * 2**30))
    job = start_checksum(version=big, actor=root)

    def work():
        try:
            run_job(job_id=job.pk)
        finally:
            connection.close()

    worker = threading.Thread(target=work)
    worker.start()
    progress_url = reverse("admin:broker_job_progress") + f"?ids={job.pk}"
    seen = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        [row] = client.get(progress_url).json()["jobs"]
        seen.append(row["percent"])
        if row["state"] == "running" and row["percent"] and row["percent"] >= 5:
            break
        time.sleep(0.05)
    assert row["state"] == "running" and 0 < row["percent"] < 100, seen
    listing = client.get(reverse("admin:broker_job_changelist")).content.decode()
    assert f'data-job-id="{job.pk}" data-job-state="running" data-job-active' in listing
    assert "broker/admin/job-progress.js" in listing

    client.post(reverse("admin:broker_job_changelist"), {"action": "cancel_jobs", "_selected_action": [job.pk]})
    worker.join(60)
    assert not worker.is_alive()
    # Whoever runs it stops at its next block: this thread, or the live stack's worker when one
    # runs for other tests of the session (its task was sent too; the first to claim it runs it).
    wait_until(lambda: Job.objects.get(pk=job.pk).state != Job.State.RUNNING, timeout=60, what="the job to stop")
    job.refresh_from_db()
    assert job.state == Job.State.CANCELLED and job.cancel_requested
    assert 0 < job.done < job.total == 6 * 2**30
    big.refresh_from_db()
    assert big.sha256 == ""  # nothing half-read was recorded
    [row] = client.get(progress_url).json()["jobs"]
    assert (row["state"], row["active"]) == ("cancelled", False)


# -- a rolling recompose, on the real libvirtd ---------------------------------------------------

@pytest.fixture
def stopped_desktops(image, host, settings):
    """Two desktops of a dedicated pool built for real (clone + define), powered off."""
    from broker.services.provisioning import new_desktop, provision_desktop

    pool = Pool.objects.create(name="roll", display_name="Rolling", image=image, spares_powered_on=False,
                               data_disk_gib=0)
    built = []
    for _ in range(2):
        desktop = new_desktop(pool=pool, host=host, version=image.current_version())
        built.append(provision_desktop(desktop_id=desktop.pk))
    assert [d.state for d in built] == [S.STOPPED, S.STOPPED]
    yield pool, built
    from broker.services.provisioning import delete_desktop

    for desktop in built:
        delete_desktop(desktop_id=desktop.pk)


@pytest.mark.libvirt
def test_a_rolling_recompose_rebuilds_a_few_at_a_time_and_reports_each(stopped_desktops, image, host, settings,
                                                                      golden_image_path):
    from broker.services.images import publish_image_version
    from broker.services.provisioning import recompose_desktop

    settings.VDI_RECOMPOSE_BATCH = 1
    pool, (first, second) = stopped_desktops
    new = publish_image_version(image=image, path=golden_image_path, host=host, notes="v2")
    job = start_recompose(pool=pool)

    job = run_job(job_id=job.pk)  # first look: one desktop at a time
    assert (job.state, job.done, job.total) == (Job.State.RUNNING, 0, 2)
    assert [Desktop.objects.get(pk=d.pk).state for d in (first, second)] == [S.RECOMPOSING, S.STOPPED]
    recompose_desktop(desktop_id=first.pk)  # the worker's part, with the real driver
    job = run_job(job_id=job.pk)
    assert (job.done, job.message) == (1, "1 of 2 desktop(s) done, 1 being rebuilt")
    recompose_desktop(desktop_id=second.pk)
    job = run_job(job_id=job.pk)
    assert (job.state, job.done, job.total) == (Job.State.SUCCEEDED, 2, 2)
    assert job.result == {"recomposed": [first.name, second.name], "failed": [], "skipped": [], "version": str(new)}
    assert set(Desktop.objects.filter(pool=pool).values_list("image_version", flat=True)) == {new.pk}


@pytest.mark.libvirt
def test_a_stopped_recompose_finishes_the_one_being_rebuilt_and_leaves_the_rest(stopped_desktops, image, host,
                                                                              settings, golden_image_path):
    from broker.services.images import publish_image_version
    from broker.services.provisioning import recompose_desktop

    settings.VDI_RECOMPOSE_BATCH = 1
    pool, (first, second) = stopped_desktops
    old = second.image_version_id
    publish_image_version(image=image, path=golden_image_path, host=host)
    job = run_job(job_id=start_recompose(pool=pool).pk)
    request_cancel(job=job)
    job = run_job(job_id=job.pk)
    assert job.state == Job.State.RUNNING  # the one being rebuilt is not cut off midway
    recompose_desktop(desktop_id=first.pk)
    job = run_job(job_id=job.pk)
    assert job.state == Job.State.CANCELLED
    assert job.result["recomposed"] == [first.name]
    assert job.message == "stopped: 1 recomposed, 1 left as they were"
    second.refresh_from_db()
    assert (second.state, second.image_version_id) == (S.STOPPED, old)


# -- drains --------------------------------------------------------------------------------------

def test_a_drain_job_follows_its_moves_and_a_cancel_drops_those_still_waiting(db, django_user_model):
    image = GoldenImage.objects.create(name="w", display_name="W")
    v1 = GoldenImageVersion.objects.create(image=image, number=1, path="/images/w.qcow2")
    source = Host.objects.create(name="hv-a", libvirt_uri="test:///default", storage_group="shared", cpus=8,
                                 memory_mib=16384)
    Host.objects.create(name="hv-b", libvirt_uri="test:///default", storage_group="shared", cpus=8,
                        memory_mib=16384)
    pool = Pool.objects.create(name="p", display_name="P", image=image)
    running = [Desktop.objects.create(pool=pool, host=source, image_version=v1, name=f"d-{n}", state=S.RUNNING)
               for n in range(2)]
    lonely = Host.objects.create(name="hv-alone", libvirt_uri="test:///default", cpus=8, memory_mib=16384)
    Desktop.objects.create(pool=pool, host=lonely, image_version=v1, name="d-alone", state=S.RUNNING)

    job = run_job(job_id=start_drain(host=source).pk)
    source.refresh_from_db()
    assert source.in_maintenance
    assert (job.state, job.done, job.total) == (Job.State.RUNNING, 0, 2)
    moves = LiveMigration.objects.filter(source=source).order_by("desktop__name")
    assert [m.desktop for m in moves] == running
    # One move ends (the source's worker would have copied it); the admin stops the drain.
    LiveMigration.objects.filter(pk=moves[0].pk).update(state=LiveMigration.State.COMPLETED)
    request_cancel(job=job)
    job = run_job(job_id=job.pk)
    assert job.state == Job.State.CANCELLED
    assert job.result["moved"] == ["d-0"] and job.result["cancelled"] == ["d-1"]
    assert LiveMigration.objects.get(pk=moves[1].pk).state == LiveMigration.State.CANCELLED

    # A host whose desktops cannot move: drained at once, the job says who stays.
    job = run_job(job_id=start_drain(host=lonely).pk)
    assert job.state == Job.State.SUCCEEDED
    assert job.result["staying"] == ["d-alone cannot move: hv-alone has no shared storage (no storage group)."]


# -- the admin ----------------------------------------------------------------------------------

def test_the_admin_recompose_action_starts_a_job_and_links_to_it(admin_client, django_capture_on_commit_callbacks):
    image = GoldenImage.objects.create(name="w", display_name="W")
    GoldenImageVersion.objects.create(image=image, number=1, path="/images/w.qcow2")
    pool = Pool.objects.create(name="p", display_name="P", image=image)
    with django_capture_on_commit_callbacks() as callbacks:
        response = admin_client.post(reverse("admin:broker_pool_changelist"),
                                     {"action": "recompose_now", "_selected_action": [pool.pk]}, follow=True)
    job = Job.objects.get(kind=Job.Kind.POOL_RECOMPOSE)
    assert job.started_by == admin_client.user and len(tasks_among(callbacks)) == 1
    assert reverse("admin:broker_job_change", args=[job.pk]) in response.content.decode()
    again = admin_client.post(reverse("admin:broker_pool_changelist"),
                              {"action": "recompose_now", "_selected_action": [pool.pk]}, follow=True)
    assert "already under way" in again.content.decode()
    job = run_job(job_id=job.pk)  # nothing stale: done at once
    assert job.state == Job.State.SUCCEEDED and job.result["recomposed"] == []
    page = admin_client.get(reverse("admin:broker_job_change", args=[job.pk])).content.decode()
    assert "Succeeded" in page and "&quot;recomposed&quot;: []" in page


def test_view_only_staff_see_jobs_but_cannot_cancel_them(client, version, django_user_model):
    viewer = django_user_model.objects.create_user("viewer", password="viewer-pass-1", is_staff=True)
    viewer.user_permissions.add(*Permission.objects.filter(codename__in=["view_job", "view_goldenimageversion"]))
    verified_session(client, viewer)
    job = start_checksum(version=version)
    listing = client.get(reverse("admin:broker_job_changelist"))
    assert listing.status_code == 200 and "cancel_jobs" not in listing.content.decode()
    client.post(reverse("admin:broker_job_changelist"), {"action": "cancel_jobs", "_selected_action": [job.pk]})
    job.refresh_from_db()
    assert job.state == Job.State.QUEUED and not job.cancel_requested
    assert not jobs.may_run(viewer, Job.Kind.IMAGE_CHECKSUM)
    assert client.get(reverse("admin:broker_job_progress") + f"?ids={job.pk}").status_code == 200
    assert client.get(reverse("admin:broker_job_progress") + "?ids=x").status_code == 400
    nobody = django_user_model.objects.create_user("nobody", password="nobody-pass-1", is_staff=True)
    verified_session(client, nobody)
    assert client.get(reverse("admin:broker_job_progress") + f"?ids={job.pk}").status_code == 403


def test_a_job_whose_worker_died_no_longer_blocks_a_new_run(version):
    from datetime import timedelta

    from django.utils import timezone

    lost = start_checksum(version=version)
    Job.objects.filter(pk=lost.pk).update(state=Job.State.RUNNING,
                                          updated_at=timezone.now() - jobs.STALE_AFTER - timedelta(seconds=1))
    again = start_checksum(version=version)
    lost.refresh_from_db()
    assert lost.state == Job.State.FAILED and "its worker stopped" in lost.error
    assert again.state == Job.State.QUEUED
