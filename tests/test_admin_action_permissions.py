"""The admin's own actions (drain, reconcile, reset, pre-provision, ...) change things: a staff
user who may only look at a page may not run them."""

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from broker.models import DataDiskBackup, Desktop, DesktopState
from identity.models import DirectoryGroup
from tests.support.tasks import tasks_among
from tests.support.mfa import verified_session

ACTIONS = [
    ("broker_host", "drain"),
    ("broker_host", "end_maintenance"),
    ("broker_host", "check_now"),
    ("broker_pool", "reconcile_now"),
    ("broker_pool", "recompose_now"),
    ("broker_desktop", "delete_desktops_on_host"),
    ("broker_desktop", "reset_desktops"),
    ("broker_desktop", "log_off_sessions"),
    ("broker_desktop", "send_message"),
    ("broker_desktop", "back_up_now"),
    ("broker_datadiskbackup", "restore_to_its_desktop"),
    ("broker_datadiskbackup", "restore_to_another_desktop"),
    ("identity_directorygroup", "preprovision_desktops"),
]


def staff_with(django_user_model, client, name, codenames):
    user = django_user_model.objects.create_user(name, password="staff-pass-1", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    verified_session(client, user)  # staff: a second factor, as in production (tests/support/mfa.py)
    return client


@pytest.fixture
def viewer(client, django_user_model):
    return staff_with(django_user_model, client, "viewer",
                      ["view_host", "view_pool", "view_desktop", "view_directorygroup",
                       "view_datadiskbackup"])


@pytest.fixture
def operator(client, django_user_model):
    return staff_with(django_user_model, client, "operator",
                      ["view_host", "change_host", "view_pool", "change_pool", "view_desktop", "change_desktop",
                       "view_directorygroup", "view_datadiskbackup", "change_datadiskbackup"])


@pytest.fixture
def things(pool, employee, host, employees_group):
    """One of each row an action works on, with a state any action would change."""
    desktop = Desktop.objects.create(pool=pool, user=employee, host=host, image_version=pool.image.current_version(),
                                     name="vditest-perm")
    desktop.transition(DesktopState.CLONING, message="worker picked up the launch")
    group = DirectoryGroup.objects.create(dn="cn=employees,ou=groups", name="Employees", group=employees_group)
    Desktop.objects.filter(pk=desktop.pk).update(data_volume_name="vditest-perm-data.qcow2")
    backup = DataDiskBackup.objects.create(desktop=desktop, host=host, storage_pool="vdi-backups",
                                           volume_name="vditest-perm-data-1.qcow2", state=DataDiskBackup.State.DONE)
    return {"broker_host": host, "broker_pool": pool, "broker_desktop": desktop, "identity_directorygroup": group,
            "broker_datadiskbackup": backup}


def offered_actions(client, model):
    form = client.get(reverse(f"admin:{model}_changelist")).context["action_form"]
    return {name for name, _ in form.fields["action"].choices} if form else set()


def snapshot(host, desktop):
    host.refresh_from_db()
    return (host.in_maintenance, host.last_checked_at, list(Desktop.objects.order_by("pk").values_list("pk", "state")))


@pytest.mark.parametrize("model,action", ACTIONS)
def test_a_staff_user_who_may_only_view_cannot_run_an_action(viewer, things, model, action,
                                                             django_capture_on_commit_callbacks):
    host, desktop = things["broker_host"], things["broker_desktop"]
    if action == "end_maintenance":
        host.in_maintenance = True
        host.save(update_fields=["in_maintenance"])
    before = snapshot(host, desktop)

    assert action not in offered_actions(viewer, model)
    with django_capture_on_commit_callbacks(execute=False) as tasks:
        viewer.post(reverse(f"admin:{model}_changelist"), {"action": action, "_selected_action": [things[model].pk]})

    assert snapshot(host, desktop) == before
    assert tasks_among(tasks) == []


def test_a_staff_user_who_may_change_is_offered_every_action(operator, things):
    offered = set().union(*(offered_actions(operator, model) for model in {m for m, _ in ACTIONS}))

    assert offered >= {action for _, action in ACTIONS}


def test_a_staff_user_who_may_change_runs_them(operator, things, django_capture_on_commit_callbacks):
    host, desktop = things["broker_host"], things["broker_desktop"]

    operator.post(reverse("admin:broker_host_changelist"), {"action": "drain", "_selected_action": [host.pk]})
    with django_capture_on_commit_callbacks(execute=False) as tasks:
        operator.post(reverse("admin:broker_desktop_changelist"),
                      {"action": "delete_desktops_on_host", "_selected_action": [desktop.pk]})

    host.refresh_from_db()
    desktop.refresh_from_db()
    assert host.in_maintenance
    assert desktop.state == DesktopState.DELETING and len(tasks_among(tasks)) == 1
