"""The sync keeps users and memberships in step with the directory, without waiting for logins."""

import subprocess
import sys
from pathlib import Path

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from identity.models import DirectoryAccount, DirectoryGroup, DirectorySyncRun
from tests.identity.conftest import group_names, login, run_sync
from tests.support.slapd import SUFFIX, group_dn, user_dn

User = get_user_model()
Status = DirectorySyncRun.Status
ROOT = Path(__file__).resolve().parents[2]


def test_the_sync_creates_the_members_of_entitled_groups_before_their_first_login(use_ldap, company):
    run = run_sync()

    assert run.status == Status.SUCCEEDED, run.errors
    members = {u.username: u for u in User.objects.filter(directory_account__isnull=False)}
    # Engineering (alice, bob, dave via Contractors; root collides with nobody here) and Finance (bob, carol).
    assert set(members) == {"alice", "bob", "carol", "dave", "root"}
    assert group_names(members["bob"]) == {"Engineering", "Finance"}
    assert group_names(members["dave"]) == {"Contractors", "Engineering"}
    assert members["carol"].get_full_name() == "Carol Cook" and members["carol"].email == "carol@example.com"
    assert all(u.is_active and not u.has_usable_password() for u in members.values())
    # erin (Marketing only) and frank (no group) get nothing until a group of theirs is entitled.
    assert not User.objects.filter(username__in=["erin", "frank"]).exists()
    assert (run.users_seen, run.groups_seen, run.users_created) == (7, 4, 5)
    assert run.memberships_added == 7 and run.started_at and run.finished_at


def test_the_sync_mirrors_every_directory_group_so_the_admin_can_entitle_it(use_ldap, company):
    run_sync()

    assert set(Group.objects.values_list("name", flat=True)) >= {"Contractors", "Engineering", "Finance", "Marketing"}
    assert DirectoryGroup.objects.get(name="Marketing").dn == "cn=marketing,ou=groups,dc=example,dc=com"


def test_entitling_a_group_brings_its_members_in_at_the_next_sync(use_ldap, company):
    from broker.models import Entitlement

    run_sync()
    Entitlement.objects.create(pool=company.fin_pool, group=Group.objects.get(name="Marketing"))

    run = run_sync()

    erin = User.objects.get(username="erin")
    assert run.users_created == 1 and erin.is_active and group_names(erin) == {"Marketing"}


def test_a_synced_user_logs_in_to_the_same_account(client, use_ldap, company):
    run_sync()
    alice = User.objects.get(username="alice")

    login(client, "alice")

    assert client.session["_auth_user_id"] == str(alice.pk)
    assert User.objects.filter(username__iexact="alice").count() == 1


def test_the_sync_updates_names_and_emails(use_ldap, company, directory):
    run_sync()
    directory.replace_values(user_dn("carol"), "sn", ["Cook-Smith"])
    directory.replace_values(user_dn("carol"), "mail", ["c.smith@example.com"])

    run = run_sync()

    carol = User.objects.get(username="carol")
    assert (carol.last_name, carol.email) == ("Cook-Smith", "c.smith@example.com")
    assert run.users_updated == 1


def test_a_rerun_without_directory_changes_changes_nothing(use_ldap, company):
    run_sync()

    run = run_sync()

    assert run.status == Status.SUCCEEDED
    assert (run.users_created, run.users_updated, run.users_deactivated, run.users_reactivated,
            run.memberships_added, run.memberships_removed, run.groups_created) == (0, 0, 0, 0, 0, 0, 0)


def test_a_user_gone_from_the_directory_is_deactivated_and_leaves_the_groups(use_ldap, company, directory):
    run_sync()
    directory.remove_value(group_dn("Finance"), "member", user_dn("carol"))
    directory.delete(user_dn("carol"))

    run = run_sync()

    carol = User.objects.get(username="carol")  # never deleted: her desktops and history point at her
    assert not carol.is_active and group_names(carol) == set()
    account = DirectoryAccount.objects.get(user=carol)
    assert account.inactive_reason == DirectoryAccount.InactiveReason.LEFT_DIRECTORY and account.missing_since
    assert run.users_deactivated == 1 and run.memberships_removed == 1


def test_a_user_who_left_every_entitled_group_is_deactivated_then_reactivated_on_return(use_ldap, company, directory):
    run_sync()
    directory.remove_value(group_dn("Finance"), "member", user_dn("carol"))

    run = run_sync()
    carol = User.objects.get(username="carol")
    assert run.users_deactivated == 1 and not carol.is_active and group_names(carol) == set()
    assert DirectoryAccount.objects.get(user=carol).inactive_reason == DirectoryAccount.InactiveReason.NO_ENTITLEMENT

    directory.add_value(group_dn("Finance"), "member", user_dn("carol"))
    run = run_sync()
    carol.refresh_from_db()
    assert run.users_reactivated == 1 and carol.is_active and group_names(carol) == {"Finance"}


def test_a_user_an_admin_deactivated_stays_deactivated(use_ldap, company):
    run_sync()
    User.objects.filter(username="alice").update(is_active=False)  # the admin's switch

    run_sync()

    assert not User.objects.get(username="alice").is_active


def test_staff_directory_users_stay_active_without_an_entitled_group(use_ldap, company, directory):
    run_sync()
    User.objects.filter(username="carol").update(is_staff=True)
    directory.remove_value(group_dn("Finance"), "member", user_dn("carol"))

    run_sync()

    carol = User.objects.get(username="carol")
    assert carol.is_active and group_names(carol) == set()


def test_nested_groups_count_at_any_depth_and_stop_counting_when_unnested(use_ldap, company, directory):
    directory.add(group_dn("Vendors"), {"objectClass": "groupOfNames", "cn": "Vendors", "member": user_dn("frank")})
    directory.add_value(group_dn("Contractors"), "member", group_dn("Vendors"))

    run_sync()
    frank = User.objects.get(username="frank")  # Vendors ⊂ Contractors ⊂ Engineering
    assert group_names(frank) == {"Vendors", "Contractors", "Engineering"}

    directory.remove_value(group_dn("Engineering"), "member", group_dn("Contractors"))
    run_sync()
    frank.refresh_from_db()
    assert not frank.is_active and group_names(frank) == set()
    assert not User.objects.get(username="dave").is_active


def test_a_cycle_of_nested_groups_does_not_hang_the_sync(use_ldap, company, directory):
    directory.add_value(group_dn("Contractors"), "member", group_dn("Engineering"))

    run = run_sync()

    assert run.status == Status.SUCCEEDED
    assert group_names(User.objects.get(username="alice")) == {"Engineering", "Contractors"}


def test_posix_groups_by_member_uid_and_primary_gid(use_ldap, company):
    from broker.models import Entitlement

    use_ldap(AUTH_LDAP_GROUP_TYPE="posixGroup", AUTH_LDAP_GROUP_SEARCH_BASE=f"ou=posixgroups,{SUFFIX}")
    run_sync()
    Entitlement.objects.create(pool=company.eng_pool, group=Group.objects.get(name="devs"))
    Entitlement.objects.create(pool=company.fin_pool, group=Group.objects.get(name="ops"))

    run_sync()

    assert group_names(User.objects.get(username="alice")) == {"devs"}  # primary gidNumber 5000
    assert group_names(User.objects.get(username="bob")) == {"ops"}  # primary gidNumber 5001
    assert group_names(User.objects.get(username="carol")) == {"devs"}  # memberUid


def test_group_of_unique_names(use_ldap, company, client):
    from broker.models import Entitlement

    use_ldap(AUTH_LDAP_GROUP_TYPE="groupOfUniqueNames", AUTH_LDAP_GROUP_SEARCH_BASE=f"ou=uniquegroups,{SUFFIX}")
    run_sync()
    Entitlement.objects.create(pool=company.eng_pool, group=Group.objects.get(name="Designers"))

    run_sync()

    assert set(User.objects.filter(groups__name="Designers").values_list("username", flat=True)) == {"alice", "carol"}
    login(client, "carol")  # a login reads the same membership
    assert group_names(User.objects.get(username="carol")) == {"Designers"}


def test_login_and_sync_agree_on_every_users_groups(client, use_ldap, company):
    for name in ["alice", "bob", "carol", "dave"]:
        login(client, name)
        client.logout()
    by_login = {u.username: group_names(u) for u in User.objects.filter(directory_account__isnull=False)}

    run = run_sync()

    assert run.memberships_removed == 0 and run.users_updated == 0
    assert run.users_created == run.memberships_added == 1  # root, who never logged in
    assert {u.username: group_names(u) for u in User.objects.filter(username__in=by_login)} == by_login


def test_local_accounts_and_local_groups_are_never_touched(use_ldap, company, django_user_model):
    local = django_user_model.objects.create_user("helpdesk", password="local-Pw-0042")
    local.groups.add(company.engineering)  # a local member of a directory-mirrored group
    helpdesk = Group.objects.create(name="Helpdesk")
    run_sync()
    alice = User.objects.get(username="alice")
    alice.groups.add(helpdesk)

    run_sync()

    local.refresh_from_db()
    assert local.is_active and group_names(local) == {"Engineering"}
    assert "Helpdesk" in group_names(alice)


def test_a_group_gone_from_the_directory_loses_its_members_but_keeps_its_entitlements(use_ldap, company, directory):
    from broker.models import Entitlement

    run_sync()
    directory.delete(group_dn("Finance"))

    run_sync()

    assert DirectoryGroup.objects.get(name="Finance").missing_since is not None
    assert not company.finance.user_set.exists()
    assert Entitlement.objects.filter(group=company.finance).exists()
    assert not User.objects.get(username="carol").is_active
    assert User.objects.get(username="bob").is_active  # still in Engineering


def test_two_syncs_never_run_at_once(use_ldap, company):
    from django.utils import timezone

    busy = DirectorySyncRun.objects.create(trigger="schedule", status=Status.RUNNING, started_at=timezone.now())

    run = run_sync()

    assert run.status == Status.SKIPPED and not User.objects.filter(username="alice").exists()
    DirectorySyncRun.objects.filter(pk=busy.pk).update(started_at=timezone.now() - timezone.timedelta(hours=2))
    assert run_sync().status == Status.SUCCEEDED  # a run left "running" by a dead worker no longer blocks


def test_a_duplicate_delivery_of_the_task_does_not_run_it_twice(use_ldap, company):
    from identity.services import sync

    run = run_sync()
    again = sync.run_directory_sync(run_id=run.pk)

    assert again.status == Status.SUCCEEDED and again.finished_at == run.finished_at


def test_the_periodic_task_runs_a_sync(use_ldap, company):
    from identity.tasks import sync_directory_task

    sync_directory_task.apply()

    run = DirectorySyncRun.objects.get()
    assert run.trigger == DirectorySyncRun.Trigger.SCHEDULE and run.status == Status.SUCCEEDED
    assert User.objects.filter(username="alice").exists()


def test_ldap_sync_command_runs_it_now_and_reports(use_ldap, company, capsys):
    from django.core.management import call_command

    call_command("ldap_sync")

    out = capsys.readouterr().out
    assert "succeeded: 7 users and 4 groups in the directory; 5 created" in out
    assert DirectorySyncRun.objects.get().trigger == DirectorySyncRun.Trigger.COMMAND


def test_the_beat_schedule_has_the_sync_only_when_ldap_is_configured(ldap_env):
    probe = "from django.conf import settings; print(sorted(settings.CELERY_BEAT_SCHEDULE)); " \
            "print(settings.AUTHENTICATION_BACKENDS)"

    def settings_with(env):
        result = subprocess.run([sys.executable, "-c", f"import django; django.setup(); {probe}"], cwd=ROOT,
                                env={"PATH": "/usr/bin:/bin", "DJANGO_SETTINGS_MODULE": "config.settings",
                                     "DJANGO_SECRET_KEY": "x" * 50, **env},
                                capture_output=True, text=True, check=True)
        return result.stdout

    with_ldap = settings_with(ldap_env)
    assert "identity-sync-directory" in with_ldap
    assert "['identity.backends.LoginThrottleBackend', 'identity.backends.DirectoryBackend', " \
           "'django.contrib.auth.backends.ModelBackend']" in with_ldap
    without = settings_with({})
    assert "identity-sync-directory" not in without and "DirectoryBackend" not in without


def test_people_added_to_the_directory_arrive_with_the_next_sync(use_ldap, company, directory):
    run_sync()
    for name in ["gina", "hank"]:
        directory.add(user_dn(name), {"objectClass": "inetOrgPerson", "uid": name, "cn": name.title(),
                                      "sn": "New", "givenName": name.title(), "mail": f"{name}@example.com"})
        directory.add_value(group_dn("Finance"), "member", user_dn(name))

    run = run_sync()

    assert run.users_created == 2 and run.memberships_added == 2
    assert set(company.finance.user_set.values_list("username", flat=True)) == {"bob", "carol", "gina", "hank"}
