"""The admin sees and edits hosts, images, pools, entitlements, desktops with history, sessions."""

import pytest
from django.urls import reverse

from broker.models import ConsoleSession, Desktop, DesktopState, Entitlement
from tests.support.mfa import verified_session


@pytest.fixture
def admin(client, django_user_model):
    user = django_user_model.objects.create_superuser("root", password="admin-pass-1")
    verified_session(client, user)  # staff: a second factor, as in production (tests/support/mfa.py)
    return client


@pytest.fixture
def desktop(pool, employee, host):
    desktop = Desktop.objects.create(pool=pool, user=employee, host=host, image_version=pool.image.current_version(),
                                     name="vditest-admin")
    desktop.transition(DesktopState.CLONING, message="worker picked up the launch")
    ConsoleSession.objects.create(user=employee, desktop=desktop, protocol="vnc")
    return desktop


@pytest.mark.parametrize("model", ["host", "goldenimage", "pool", "entitlement", "desktop", "desktopevent",
                                   "consolesession"])
def test_every_broker_model_has_a_list_page(admin, desktop, model):
    response = admin.get(reverse(f"admin:broker_{model}_changelist"))
    assert response.status_code == 200


def test_the_desktop_page_shows_its_state_and_history(admin, desktop):
    content = admin.get(reverse("admin:broker_desktop_change", args=[desktop.pk])).content.decode()
    assert "Cloning disk" in content
    assert "worker picked up the launch" in content


def test_the_image_page_shows_its_versions(admin, pool):
    version = pool.image.current_version()
    content = admin.get(reverse("admin:broker_goldenimage_change", args=[pool.image.pk])).content.decode()
    assert version.path in content
    assert "v1" in admin.get(reverse("admin:broker_goldenimage_changelist")).content.decode()


def test_the_admin_entitles_a_group_to_a_pool_inline(admin, pool, employees_group):
    from django.forms.models import model_to_dict

    Entitlement.objects.all().delete()
    data = {k: ("on" if v is True else "" if v is None or v is False else v) for k, v in model_to_dict(pool).items()}
    data = {k: v for k, v in data.items() if v != ""}
    data.update({
        "vcpus": 2, "memory_mib": 512,
        "entitlements-TOTAL_FORMS": "1", "entitlements-INITIAL_FORMS": "0",
        "entitlements-MIN_NUM_FORMS": "0", "entitlements-MAX_NUM_FORMS": "1000",
        "entitlements-0-group": employees_group.pk, "entitlements-0-user": "",
        "schedule_rules-TOTAL_FORMS": "0", "schedule_rules-INITIAL_FORMS": "0",  # the page's other inlines
        "networks-TOTAL_FORMS": "0", "networks-INITIAL_FORMS": "0",
    })
    response = admin.post(reverse("admin:broker_pool_change", args=[pool.pk]), data)
    if response.status_code != 302:
        errors = response.context["adminform"].form.errors, [f.errors for f in response.context["inline_admin_formsets"][0].formset]
        raise AssertionError(f"the admin refused the form: {errors}")
    pool.refresh_from_db()
    assert pool.vcpus == 2 and pool.memory_mib == 512
    assert Entitlement.objects.get().group == employees_group


def test_an_entitlement_for_both_a_user_and_a_group_is_refused(admin, pool, employees_group, employee):
    response = admin.post(reverse("admin:broker_entitlement_add"),
                          {"pool": pool.pk, "user": employee.pk, "group": employees_group.pk})
    assert response.status_code == 200
    assert b"Entitle either one user or one group." in response.content


def test_the_admin_cannot_edit_a_desktops_state_by_hand(admin, desktop):
    admin.post(reverse("admin:broker_desktop_change", args=[desktop.pk]),
               {"user": desktop.user_id, "state": "running"})
    desktop.refresh_from_db()
    assert desktop.state == DesktopState.CLONING


def test_publishing_a_version_checks_the_file_on_the_host(admin, pool, host, golden_image_path,
                                                          django_capture_on_commit_callbacks):
    url = reverse("admin:broker_goldenimageversion_add")
    missing = admin.post(url, {"image": pool.image.pk, "path": "/var/lib/vdi/images/vditest-nope.qcow2",
                               "check_on_host": host.pk, "notes": ""})
    assert missing.status_code == 200
    assert b"Not published: golden image /var/lib/vdi/images/vditest-nope.qcow2 is not on" in missing.content
    assert pool.image.versions.count() == 1

    with django_capture_on_commit_callbacks(execute=False):
        published = admin.post(url, {"image": pool.image.pk, "path": golden_image_path, "check_on_host": host.pk,
                                     "notes": "monthly patches"})
    assert published.status_code == 302
    version = pool.image.current_version()
    assert version.number == 2 and version.size_bytes > 0 and version.notes == "monthly patches"


def test_the_pool_overview_shows_desktops_by_state(admin, pool, desktop):
    content = admin.get(reverse("admin:broker_pool_change", args=[pool.pk])).content.decode()
    assert "cloning: 1" in content
    listing = admin.get(reverse("admin:broker_pool_changelist")).content.decode()
    assert "0 / 10" not in listing or "1 / 10" in listing


def test_draining_a_host_stops_placements_there_and_is_recorded(admin, pool, host):
    from broker.models import BrokerEvent
    from broker.selectors import pick_host

    url = reverse("admin:broker_host_changelist")
    admin.post(url, {"action": "drain", "_selected_action": [host.pk]})
    host.refresh_from_db()
    assert host.in_maintenance and pick_host(pool=pool) is None
    assert BrokerEvent.objects.filter(host=host, message="drained by root").exists()
    admin.post(url, {"action": "end_maintenance", "_selected_action": [host.pk]})
    host.refresh_from_db()
    assert not host.in_maintenance and pick_host(pool=pool) == host
    assert BrokerEvent.objects.filter(host=host, kind=BrokerEvent.Kind.HOST).count() == 2
