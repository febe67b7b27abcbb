"""Jobs through the API, and the actions the admin offers that the API lacked (reconcile a
pool, check a host now, fence a host, send a message to a desktop's user), against every role:
the same permissions as the admin's; operators act on their pools' desktops only."""

import pytest
from django.contrib.auth.models import Permission
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from broker.models import BrokerEvent, DesktopEvent, Host, Job
from broker.services.images import start_checksum
from broker.services.jobs import run_job

from .conftest import ROLES


def url(path):
    return f"/api/v1/{path}"


# Who may read jobs, and who may start and cancel a recompose.
READS_JOBS = {"superuser", "staff", "auditor"}
STARTS_JOBS = {"superuser", "staff"}


@pytest.mark.parametrize("role", ROLES)
def test_jobs_list_detail_start_and_cancel_by_role(clients, site, role, django_capture_on_commit_callbacks):
    a, _ = site
    theirs = start_checksum(version=a.version)
    client = clients[role]
    listing = client.get(url("jobs/"))
    detail = client.get(url(f"jobs/{theirs.pk}/"))
    if role in READS_JOBS:
        assert listing.status_code == 200 and [row["id"] for row in listing.json()["results"]] == [theirs.pk]
        assert detail.json()["kind"] == "image_checksum" and detail.json()["state"] == "queued"
    else:
        assert (listing.status_code, detail.status_code) == (403, 403)

    with django_capture_on_commit_callbacks() as callbacks:
        started = client.post(url("jobs/"), {"kind": "pool_recompose", "pool": a.pool.pk}, format="json")
    cancelled = client.post(url(f"jobs/{theirs.pk}/cancel/"))
    if role in STARTS_JOBS:
        assert started.status_code == 202, started.content
        assert started.json()["target_key"] == f"pool:{a.pool.pk}" and len(callbacks) == 1
        assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    else:
        assert started.status_code == 403 and cancelled.status_code == 403
        assert Job.objects.filter(kind=Job.Kind.POOL_RECOMPOSE).count() == 0
        theirs.refresh_from_db()
        assert theirs.state == Job.State.QUEUED and not theirs.cancel_requested


def test_view_only_staff_read_jobs_but_cannot_start_or_cancel(site, django_user_model):
    a, _ = site
    viewer = django_user_model.objects.create_user("viewer", is_staff=True)
    viewer.user_permissions.add(*Permission.objects.filter(content_type__app_label="broker",
                                                           codename__startswith="view_"))
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=viewer).key}")
    job = start_checksum(version=a.version)
    assert client.get(url(f"jobs/{job.pk}/")).status_code == 200
    assert client.post(url("jobs/"), {"kind": "host_drain", "host": a.host.pk}, format="json").status_code == 403
    assert client.post(url(f"jobs/{job.pk}/cancel/")).status_code == 403
    a.host.refresh_from_db()
    assert not a.host.in_maintenance


def test_starting_a_job_follows_it_to_its_result(clients, site, tmp_path):
    a, _ = site
    root = clients["superuser"]
    path = tmp_path / "v.qcow2"
    path.write_bytes(b"QFI\xfb" + b"\0" * 5 * 2**20)
    a.version.path = str(path)
    a.version.save(update_fields=["path"])
    started = root.post(url("jobs/"), {"kind": "image_checksum", "image_version": a.version.pk}, format="json")
    assert started.status_code == 202
    assert root.post(url("jobs/"), {"kind": "image_checksum", "image_version": a.version.pk},
                     format="json").status_code == 409  # one at a time
    run_job(job_id=started.json()["id"])  # what its task runs
    done = root.get(url(f"jobs/{started.json()['id']}/")).json()
    assert (done["state"], done["percent"], done["done"]) == ("succeeded", 100, path.stat().st_size)
    assert len(done["result"]["sha256"]) == 64
    assert root.post(url(f"jobs/{done['id']}/cancel/")).status_code == 409  # finished already


def test_a_job_needs_its_target(clients, site):
    root = clients["superuser"]
    answer = root.post(url("jobs/"), {"kind": "group_preprovision", "pool": site[0].pool.pk}, format="json")
    assert answer.status_code == 400 and "group" in answer.json()
    assert root.post(url("jobs/"), {"kind": "host_drain", "host": 999999}, format="json").status_code == 409
    assert root.post(url("jobs/"), {"kind": "nothing"}, format="json").status_code == 400


# -- the actions the admin offers ---------------------------------------------------------------

WRITERS = {"superuser", "staff"}


@pytest.mark.parametrize("role", ROLES)
def test_reconcile_a_pool_check_a_host_and_fence_it_by_role(clients, site, role):
    a, _ = site
    client = clients[role]
    reconcile = client.post(url(f"pools/{a.pool.pk}/reconcile/"))
    check = client.post(url(f"hosts/{a.host.pk}/check/"))
    if role in WRITERS:
        assert reconcile.status_code == 200 and "created" in reconcile.json()["done"]
        assert check.status_code == 200
        assert check.json()["is_online"] is True and check.json()["cpus"] > 0  # libvirt's test driver answered
    else:
        assert (reconcile.status_code, check.status_code) == (403, 403)
    fence = client.post(url(f"hosts/{a.host.pk}/fence/"))
    if role in WRITERS:
        assert fence.status_code == 409 and "it is not dead" in fence.json()["done"]
    else:
        assert fence.status_code == 403
    a.host.refresh_from_db()
    assert a.host.fenced_at is None


def test_fencing_an_offline_host_restarts_its_dedicated_desktops_elsewhere(clients, site):
    a, b = site  # b's pool is dedicated; its host and a's share a storage group
    Host.objects.filter(pk=b.host.pk).update(is_online=False)
    answer = clients["staff"].post(url(f"hosts/{b.host.pk}/fence/"))
    assert answer.status_code == 200, answer.content
    assert answer.json()["restarted"] == [b.desktop.name]
    b.host.refresh_from_db()
    assert b.host.fenced_at is not None and not b.host.is_enabled
    assert BrokerEvent.objects.filter(host=b.host, message__contains="confirmed it is powered off (API)").exists()


@pytest.mark.parametrize("role", ROLES)
def test_a_message_to_a_desktops_user_by_role(clients, site, role):
    a, b = site
    client = clients[role]
    mine = client.post(url(f"desktops/{a.desktop.pk}/message/"), {"text": "Maintenance at 18:00"}, format="json")
    other = client.post(url(f"desktops/{b.desktop.pk}/message/"), {"text": "Maintenance at 18:00"}, format="json")
    sent = DesktopEvent.objects.filter(message="message sent to the console: Maintenance at 18:00")
    if role in ("superuser", "staff"):
        assert (mine.status_code, other.status_code) == (200, 200)
        assert sent.count() == 2
    elif role in ("operator", "group_operator"):
        assert (mine.status_code, other.status_code) == (200, 404)  # pool B's desktop does not exist for them
        assert list(sent.values_list("desktop", flat=True)) == [a.desktop.pk]
    else:
        assert (mine.status_code, other.status_code) == (403, 403)
        assert not sent.exists()


def test_an_empty_message_is_refused_and_changes_nothing(clients, site):
    a, _ = site
    answer = clients["superuser"].post(url(f"desktops/{a.desktop.pk}/message/"), {"text": "   "}, format="json")
    assert answer.status_code in (400, 409)
    assert not DesktopEvent.objects.filter(message__startswith="message sent").exists()
