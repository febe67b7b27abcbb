"""Employees log in with their directory account; local accounts keep working beside it."""

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.urls import reverse

from identity.models import DirectoryAccount
from tests.identity.conftest import PASSWORDS, group_names, login, run_sync

User = get_user_model()


def test_a_directory_user_logs_in_and_sees_the_desktops_of_their_groups(client, use_ldap, company):
    response = login(client, "alice", follow=True)

    assert response.redirect_chain[-1][0] == reverse("portal:home")
    assert b"Engineering desktop" in response.content
    assert b"Finance desktop" not in response.content
    alice = User.objects.get(username="alice")
    assert (alice.first_name, alice.last_name, alice.email) == ("Alice", "Archer", "alice@example.com")
    assert not alice.has_usable_password()  # the directory holds the password, never the broker
    assert DirectoryAccount.objects.get(user=alice).dn == "uid=alice,ou=people,dc=example,dc=com"


def test_login_mirrors_the_directory_groups_including_nested_ones(client, use_ldap, company):
    login(client, "dave")

    dave = User.objects.get(username="dave")
    # dave is in Contractors, which is a member of Engineering.
    assert group_names(dave) == {"Contractors", "Engineering"}
    assert b"Engineering desktop" in client.get(reverse("portal:home")).content


def test_a_user_name_is_matched_whatever_its_case(client, use_ldap, company):
    login(client, "Alice", PASSWORDS["alice"])
    login(client, "ALICE", PASSWORDS["alice"])

    assert list(User.objects.filter(username__iexact="alice").values_list("username", flat=True)) == ["alice"]


def test_a_wrong_directory_password_reads_as_a_wrong_password(client, use_ldap, company):
    response = login(client, "alice", "not-her-password")

    assert response.status_code == 200
    assert b"Please enter a correct username and password" in response.content
    assert "_auth_user_id" not in client.session


def test_an_unknown_user_reads_as_a_wrong_password(client, use_ldap, company):
    response = login(client, "mallory", "whatever-1")

    assert b"Please enter a correct username and password" in response.content
    assert not User.objects.filter(username="mallory").exists()


def test_local_accounts_log_in_beside_the_directory(client, use_ldap, company, django_user_model):
    django_user_model.objects.create_user("helpdesk", password="local-Pw-0042")

    response = login(client, "helpdesk", "local-Pw-0042", follow=True)

    assert response.redirect_chain[-1][0] == reverse("portal:home")
    assert not DirectoryAccount.objects.exists()


def test_a_directory_entry_cannot_take_over_a_local_account_of_the_same_name(client, use_ldap, company,
                                                                              django_user_model):
    root = django_user_model.objects.create_superuser("root", password="local-root-Pw-1")

    refused = login(client, "root", PASSWORDS["root"])  # the directory's "root" password
    assert b"Please enter a correct username and password" in refused.content
    assert "_auth_user_id" not in client.session

    run = run_sync()  # the directory's root is in Engineering, an entitled group
    root.refresh_from_db()
    assert root.check_password("local-root-Pw-1") and root.is_active
    assert not DirectoryAccount.objects.filter(user=root).exists()
    assert any("root: a local account" in error for error in run.errors)

    login(client, "root", "local-root-Pw-1")
    assert client.session["_auth_user_id"] == str(root.pk)


def test_a_directory_user_in_no_entitled_group_is_told_to_ask_for_access(client, use_ldap, company):
    response = login(client, "erin")  # only in Marketing, which has no pool

    assert b"Your account has no access to any desktop. Ask your administrator for access." in response.content
    assert "_auth_user_id" not in client.session
    erin = User.objects.get(username="erin")  # known now, so an admin can entitle her directly
    assert not erin.is_active and group_names(erin) == set()


def test_a_user_entitled_directly_may_log_in_without_an_entitled_group(client, use_ldap, company):
    from broker.models import Entitlement

    login(client, "erin")
    Entitlement.objects.create(pool=company.fin_pool, user=User.objects.get(username="erin"))

    response = login(client, "erin", follow=True)

    assert b"Finance desktop" in response.content
    assert User.objects.get(username="erin").is_active


def test_login_keeps_local_group_memberships(client, use_ldap, company, django_user_model):
    run_sync()
    alice = User.objects.get(username="alice")
    helpdesk = Group.objects.create(name="Helpdesk")  # a group of the broker's own, not the directory's
    alice.groups.add(helpdesk)

    login(client, "alice")

    assert group_names(alice) == {"Engineering", "Helpdesk"}


def test_leaving_a_group_in_the_directory_counts_at_the_next_login(client, use_ldap, company, directory):
    from tests.support.slapd import group_dn, user_dn

    login(client, "bob")
    assert group_names(User.objects.get(username="bob")) == {"Engineering", "Finance"}
    client.logout()

    directory.remove_value(group_dn("Finance"), "member", user_dn("bob"))
    login(client, "bob")

    assert group_names(User.objects.get(username="bob")) == {"Engineering"}


def test_directory_values_longer_than_the_fields_are_cut_not_fatal(client, use_ldap, company, directory):
    from tests.support.slapd import user_dn

    directory.replace_values(user_dn("alice"), "givenName", ["A" * 200])

    login(client, "alice")
    run = run_sync()

    assert client.session["_auth_user_id"]
    assert User.objects.get(username="alice").first_name == "A" * 150
    assert run.users_updated == 0 and not run.errors
