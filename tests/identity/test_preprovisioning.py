"""An admin can have a desktop made for each member of an entitled group before they log in."""

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from broker.models import Desktop, DesktopState, Job, Pool
from broker.services.jobs import run_job
from identity.models import AuditEvent, DirectoryGroup
from identity.services.preprovision import PreprovisionRefused, preprovision_pool_for_group
from tests.identity.conftest import run_sync

User = get_user_model()


def test_one_desktop_is_requested_per_active_member_and_only_once(use_ldap, company,
                                                                  django_capture_on_commit_callbacks):
    run_sync()  # Engineering: alice, bob, dave (through Contractors), root
    User.objects.filter(username="root").update(is_active=False)

    with django_capture_on_commit_callbacks(execute=False) as tasks:
        first = preprovision_pool_for_group(pool=company.eng_pool, group=company.engineering)
    with django_capture_on_commit_callbacks(execute=False) as again_tasks:
        again = preprovision_pool_for_group(pool=company.eng_pool, group=company.engineering)

    owners = set(Desktop.objects.filter(pool=company.eng_pool).values_list("user__username", flat=True))
    assert owners == {"alice", "bob", "dave"}
    assert all(d.state == DesktopState.QUEUED for d in Desktop.objects.all())
    assert (first.requested, len(tasks)) == (3, 3)  # one provisioning task each, sent on commit
    assert (again.requested, again.already_had_one, again_tasks) == (0, 3, [])


def test_a_group_not_entitled_to_the_pool_is_refused(use_ldap, company):
    run_sync()

    with pytest.raises(PreprovisionRefused):
        preprovision_pool_for_group(pool=company.fin_pool, group=company.engineering)
    assert not Desktop.objects.exists()


def test_a_floating_pool_is_refused(use_ldap, company):
    from broker.models import Entitlement

    floating = Pool.objects.create(name="float", display_name="Floating", image=company.image,
                                   kind=Pool.Kind.FLOATING)
    Entitlement.objects.create(pool=floating, group=company.finance)

    with pytest.raises(PreprovisionRefused):
        preprovision_pool_for_group(pool=floating, group=company.finance)


def test_the_admin_preprovisions_from_the_directory_groups_page(use_ldap, company, admin_client,
                                                                django_capture_on_commit_callbacks):
    run_sync()
    finance = DirectoryGroup.objects.get(name="Finance")

    with django_capture_on_commit_callbacks(execute=False) as tasks:
        response = admin_client.post(reverse("admin:identity_directorygroup_changelist"),
                                     {"action": "preprovision_desktops", "_selected_action": [finance.pk]},
                                     follow=True)

    # The action starts a job (a row with a progress bar); its task does the work.
    assert b"Finance \xe2\x86\x92 Finance desktop: pre-provisioning" in response.content
    job = Job.objects.get(kind=Job.Kind.GROUP_PREPROVISION)
    assert job.state == Job.State.QUEUED and len(tasks) == 1
    job = run_job(job_id=job.pk)  # what the task runs
    assert (job.state, job.done, job.total) == (Job.State.SUCCEEDED, 2, 2)
    assert job.result == {"requested": 2, "already_had_one": 0, "refused": []}
    assert set(Desktop.objects.values_list("user__username", flat=True)) == {"bob", "carol"}
    assert AuditEvent.objects.filter(kind=AuditEvent.Kind.PREPROVISION, actor__username="admin").exists()
