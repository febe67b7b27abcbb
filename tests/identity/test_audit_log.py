"""Logins, failures, launches and admin changes land in an audit log the admin can filter."""

from django.contrib.auth.models import Group
from django.urls import reverse

from identity.models import AuditEvent
from tests.identity.conftest import login

Kind = AuditEvent.Kind


def test_logins_failures_logouts_and_launches_are_audited(client, use_ldap, company,
                                                          django_capture_on_commit_callbacks):
    login(client, "alice", "wrong-password", REMOTE_ADDR="192.0.2.44")
    login(client, "alice", REMOTE_ADDR="192.0.2.44")
    with django_capture_on_commit_callbacks(execute=False):  # the provisioning task is not sent
        client.post(reverse("portal:launch", args=[company.eng_pool.pk]), REMOTE_ADDR="192.0.2.44")
    client.post(reverse("portal:logout"), REMOTE_ADDR="192.0.2.44")

    events = list(AuditEvent.objects.order_by("id").values_list("kind", "username", "client_address"))
    assert events == [
        (Kind.LOGIN_FAILED, "alice", "192.0.2.44"),
        (Kind.LOGIN, "alice", "192.0.2.44"),
        (Kind.LAUNCH, "alice", "192.0.2.44"),
        (Kind.LOGOUT, "alice", "192.0.2.44"),
    ]
    launch = AuditEvent.objects.get(kind=Kind.LAUNCH)
    assert launch.target.startswith("desktop vditest-") and "Engineering desktop" in launch.message
    assert AuditEvent.objects.get(kind=Kind.LOGIN).message == "via directory"


def test_a_login_refused_while_the_directory_is_down_is_audited_as_refused(client, use_ldap, company, directory):
    directory.stop()

    login(client, "alice", REMOTE_ADDR="192.0.2.44")

    event = AuditEvent.objects.get()
    assert event.kind == Kind.LOGIN_REFUSED and "directory is unavailable" in event.message


def test_admin_changes_are_audited_and_the_log_filters_by_kind(client, admin_client):
    admin_client.post(reverse("admin:auth_group_add"), {"name": "Auditors"})
    login(client, "nobody", "wrong-password")

    page = admin_client.get(reverse("admin:identity_auditevent_changelist") + "?kind__exact=admin_change")

    content = page.content.decode()
    assert page.status_code == 200
    assert "auth.group #" in content and "Auditors" in content
    assert "nobody" not in content  # the failed login is another kind
    event = AuditEvent.objects.get(kind=Kind.ADMIN_CHANGE)
    assert event.username == "admin" and event.message.startswith("added")


def test_deleting_several_objects_at_once_in_the_admin_is_audited(admin_client):
    groups = [Group.objects.create(name=f"Temp {n}") for n in range(3)]

    admin_client.post(reverse("admin:auth_group_changelist"),
                      {"action": "delete_selected", "_selected_action": [g.pk for g in groups], "post": "yes"})
    admin_client.get(reverse("admin:identity_auditevent_changelist"))

    deleted = AuditEvent.objects.filter(kind=Kind.ADMIN_CHANGE, message__startswith="deleted")
    assert sorted(e.target.split(" ", 2)[2] for e in deleted) == ["Temp 0", "Temp 1", "Temp 2"]


def test_the_audit_log_cannot_be_edited_or_deleted_in_the_admin(admin_client, client):
    login(client, "nobody", "wrong-password")
    event = AuditEvent.objects.get(kind=Kind.LOGIN_FAILED)

    page = admin_client.get(reverse("admin:identity_auditevent_change", args=[event.pk]))
    admin_client.post(reverse("admin:identity_auditevent_delete", args=[event.pk]), {"post": "yes"})

    assert page.status_code == 200 and b'name="_save"' not in page.content
    assert AuditEvent.objects.filter(pk=event.pk).exists()
