"""A host's and a pool's list actions are buttons on their change pages too, for whoever may run
them; someone who may only look gets none, and a forged post of one changes nothing."""

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from broker.models import Host
from tests.support.mfa import verified_session


@pytest.fixture
def viewer(client, django_user_model):
    user = django_user_model.objects.create_user("viewer", password="pw-viewer-1", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=["view_host", "view_pool"]))
    verified_session(client, user)
    return user


def test_an_admin_sees_the_actions_on_the_change_pages(admin_client, site):
    page = admin_client.get(reverse("admin:broker_host_change", args=[site["big"].pk])).content.decode()
    for action in ("drain", "end_maintenance", "check_now", "drain_and_move"):
        assert f'data-action="{action}"' in page
    assert 'data-action="delete_selected"' not in page  # the page has its own Delete
    page = admin_client.get(reverse("admin:broker_pool_change", args=[site["office"].pk])).content.decode()
    assert 'data-action="reconcile_now"' in page and 'data-action="recompose_now"' in page


def test_a_viewer_gets_no_buttons_and_a_forged_post_changes_nothing(client, viewer, site):
    page = client.get(reverse("admin:broker_host_change", args=[site["big"].pk]))
    assert page.status_code == 200 and b"vdi-object-actions" not in page.content
    client.post(reverse("admin:broker_host_changelist"),
                {"action": "drain", "_selected_action": [site["small"].pk, site["big"].pk], "index": 0})
    assert not Host.objects.get(pk=site["big"].pk).in_maintenance


def test_the_button_runs_the_action_on_its_object_only(admin_client, site):
    response = admin_client.post(reverse("admin:broker_host_changelist"),
                                 {"action": "drain", "_selected_action": [site["big"].pk], "index": 0})
    assert response.status_code == 302
    assert Host.objects.get(pk=site["big"].pk).in_maintenance
    assert Host.objects.filter(in_maintenance=True).count() == 2  # small was draining already
