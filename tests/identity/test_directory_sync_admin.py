"""The admin sees the directory sync's last run, counts and errors, and can run it now."""

from django.urls import reverse

from broker.models import Job
from identity.models import DirectorySyncRun
from tests.identity.conftest import run_sync
from tests.support.mfa import verified_session

Status = DirectorySyncRun.Status


def test_the_admin_sees_the_last_run_with_its_counts_and_errors(use_ldap, company, admin_client, directory):
    run_sync()
    directory.stop()
    failed = run_sync()

    page = admin_client.get(reverse("admin:identity_directorysyncrun_changelist")).content.decode()

    last_run_line = page[page.index(f"Last run #{failed.pk}"):].split("</p>")[0]
    assert "failed:" in last_run_line and "1 error(s): cannot reach the directory" in last_run_line
    detail = admin_client.get(reverse("admin:identity_directorysyncrun_change", args=[failed.pk])).content.decode()
    assert "cannot reach the directory" in detail


def test_the_admin_runs_the_sync_now(use_ldap, company, admin_client, django_capture_on_commit_callbacks):
    from config.celery import app

    app.conf.task_always_eager = True  # the worker's part runs here, in the test's database
    try:
        with django_capture_on_commit_callbacks(execute=True):
            response = admin_client.post(reverse("admin:identity_directorysyncrun_run_now"), follow=True)
    finally:
        app.conf.task_always_eager = False

    run = DirectorySyncRun.objects.get()
    assert b"Directory sync started" in response.content
    job = Job.objects.get(kind=Job.Kind.DIRECTORY_SYNC)
    assert (job.state, job.done, job.total, job.result["run"]) == (Job.State.SUCCEEDED, 2, 2, run.pk)
    assert (run.trigger, run.requested_by.username, run.status) == ("admin", "admin", Status.SUCCEEDED)
    assert run.users_created == 5


def test_after_held_removals_the_admin_can_apply_them(use_ldap, company, admin_client, directory,
                                                       django_capture_on_commit_callbacks):
    from tests.support.slapd import SERVICE_DN, group_dn

    run_sync()
    for cn in ["Engineering", "Finance"]:
        directory.replace_values(group_dn(cn), "member", [SERVICE_DN])
    run_sync()

    page = admin_client.get(reverse("admin:identity_directorysyncrun_changelist")).content.decode()
    assert "Run now, applying removals" in page

    with django_capture_on_commit_callbacks(execute=False) as tasks:
        admin_client.post(reverse("admin:identity_directorysyncrun_run_now"), {"allow_mass_removal": "1"})
    queued = Job.objects.get(kind=Job.Kind.DIRECTORY_SYNC, state=Job.State.QUEUED)
    assert queued.params["allow_mass_removal"] and len(tasks) == 1


def test_only_admins_with_the_permission_may_run_it(use_ldap, company, client, django_user_model):
    from django.contrib.auth.models import Permission

    clerk = django_user_model.objects.create_user("clerk", password="clerk-Pw-1", is_staff=True)
    clerk.user_permissions.add(Permission.objects.get(codename="view_directorysyncrun"))
    verified_session(client, clerk)  # staff: a second factor, as in production (tests/support/mfa.py)

    page = client.get(reverse("admin:identity_directorysyncrun_changelist")).content.decode()
    client.post(reverse("admin:identity_directorysyncrun_run_now"))

    assert "Run the directory sync now" not in page
    assert not DirectorySyncRun.objects.exists() and not Job.objects.exists()


def test_every_identity_page_of_the_admin_opens(use_ldap, company, admin_client, client):
    from identity.models import AuditEvent, DirectoryAccount, DirectoryGroup, LoginLockout
    from tests.identity.conftest import login

    run_sync()
    for _ in range(5):
        login(client, "nobody", "wrong-password")
    objects = {
        "directorysyncrun": DirectorySyncRun.objects.first(),
        "directorygroup": DirectoryGroup.objects.get(name="Engineering"),
        "directoryaccount": DirectoryAccount.objects.get(user__username="alice"),
        "loginlockout": LoginLockout.objects.get(),
        "auditevent": AuditEvent.objects.first(),
    }
    for model, obj in objects.items():
        listing = admin_client.get(reverse(f"admin:identity_{model}_changelist"))
        detail = admin_client.get(reverse(f"admin:identity_{model}_change", args=[obj.pk]))
        assert (model, listing.status_code, detail.status_code) == (model, 200, 200)
    groups = admin_client.get(reverse("admin:identity_directorygroup_changelist")).content.decode()
    assert "cn=engineering,ou=groups,dc=example,dc=com" in groups
