"""The dashboard and its JSON are for administrators, checked by the server on every request."""

import pytest
from django.contrib.auth.models import Permission
from tests.support.mfa import verified_session

LIVE, SERIES, PAGE = "/admin/dashboard/live.json", "/admin/dashboard/series.json", "/admin/dashboard/"


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_user("staffer", password="pw-staff-1", is_staff=True)


def test_anonymous_visitors_get_no_figures(client, db):
    assert client.get(LIVE).status_code == 401
    assert client.get(SERIES).status_code == 401
    page = client.get(PAGE)
    assert page.status_code == 302 and "/admin/login/" in page["Location"]


def test_an_employee_who_is_not_staff_is_refused(client, django_user_model):
    employee = django_user_model.objects.create_user("emp", password="pw-emp-1")
    client.force_login(employee)
    assert client.get(LIVE).status_code == 403
    assert client.get(SERIES + "?span=30d").status_code == 403
    assert client.get(PAGE).status_code == 302  # the admin's login page, as for any admin page


def test_staff_without_the_right_to_view_hosts_and_pools_is_refused(client, staff):
    verified_session(client, staff)
    assert client.get(LIVE).status_code == 403
    assert client.get(PAGE).status_code == 403
    staff.user_permissions.add(Permission.objects.get(codename="view_pool"))
    assert client.get(LIVE).status_code == 403  # hosts too


def test_staff_who_may_view_hosts_and_pools_see_everything(client, staff, site):
    staff.user_permissions.add(*Permission.objects.filter(codename__in=["view_pool", "view_host"]))
    verified_session(client, staff)
    live = client.get(LIVE)
    assert live.status_code == 200 and live["Cache-Control"].startswith("max-age=0")
    assert {h["name"] for h in live.json()["hosts"]} == {"big", "small"}
    page = client.get(PAGE)
    assert page.status_code == 200
    assert b'id="dashboard-figures"' in page.content and b"uPlot.iife.min.js" in page.content
    assert client.get(SERIES + "?span=24h").json()["series"]["t"] == []


def test_an_unknown_span_is_a_clear_error(admin_client):
    response = admin_client.get(SERIES + "?span=1y")
    assert response.status_code == 400 and "24h" in response.json()["error"]


def test_a_deactivated_admin_is_refused_at_once(client, django_user_model):
    admin = django_user_model.objects.create_superuser("root2", password="pw-root-2")
    verified_session(client, admin)
    assert client.get(LIVE).status_code == 200
    admin.is_active = False
    admin.save(update_fields=["is_active"])
    assert client.get(LIVE).status_code in (401, 403)


def test_failed_tasks_are_listed_in_the_admin_beside_the_dashboard(admin_client, db):
    from dashboard.services.samples import record_task_failure

    record_task_failure(task_name="broker.tasks.provision_desktop_task", task_id="abc",
                        exception=RuntimeError("storage pool vdi is full"))
    page = admin_client.get("/admin/dashboard/taskfailure/")
    assert page.status_code == 200 and b"storage pool vdi is full" in page.content
    index = admin_client.get("/admin/").content.decode()
    assert 'href="/admin/dashboard/"' in index and "VDI broker administration" in index
