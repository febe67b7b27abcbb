"""When the directory is down: logged-in users keep working, new logins are told so, local
accounts still log in, and a sync changes nothing."""

import socket
import time
from contextlib import contextmanager

from django.contrib.auth import get_user_model
from django.urls import reverse

from identity.models import DirectoryAccount, DirectorySyncRun, LoginLockout
from tests.identity.conftest import group_names, login, run_sync
from tests.support.slapd import group_dn, user_dn

User = get_user_model()
Status = DirectorySyncRun.Status
UNAVAILABLE = b"The company directory is unavailable right now; try again in a few minutes."


@contextmanager
def silent_server():
    """A server that accepts connections and never answers: the worst kind of "down"."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        yield f"ldap://127.0.0.1:{silent.getsockname()[1]}/"


def snapshot_of_accounts():
    return {u.username: (u.is_active, frozenset(group_names(u)))
            for u in User.objects.filter(directory_account__isnull=False)}


def test_a_login_while_the_directory_is_down_says_so(client, use_ldap, company, directory):
    directory.stop()

    response = login(client, "alice")

    assert UNAVAILABLE in response.content
    assert b"Please enter a correct username and password" not in response.content
    assert "_auth_user_id" not in client.session


def test_local_accounts_log_in_while_the_directory_is_down(client, use_ldap, company, directory, django_user_model):
    admin = django_user_model.objects.create_superuser("admin", password="break-Glass-77")
    directory.stop()

    login(client, "admin", "break-Glass-77")

    assert client.session["_auth_user_id"] == str(admin.pk)


def test_a_local_account_does_not_wait_for_a_hanging_directory(client, use_ldap, company, django_user_model):
    admin = django_user_model.objects.create_superuser("admin", password="break-Glass-77")
    with silent_server() as uri:
        use_ldap(AUTH_LDAP_SERVER_URI=uri, VDI_LDAP_TIMEOUT_SECONDS="5")
        started = time.monotonic()
        login(client, "admin", "break-Glass-77")
        elapsed = time.monotonic() - started

    assert client.session["_auth_user_id"] == str(admin.pk)
    assert elapsed < 5, "a local account's login waited for the directory"


def test_users_already_logged_in_keep_working_while_the_directory_is_down(client, use_ldap, company, directory):
    login(client, "alice")
    directory.stop()

    response = client.get(reverse("portal:home"))

    assert response.status_code == 200 and b"Engineering desktop" in response.content


def test_a_directory_that_hangs_is_reported_within_the_timeout(client, use_ldap, company):
    with silent_server() as uri:
        use_ldap(AUTH_LDAP_SERVER_URI=uri, VDI_LDAP_TIMEOUT_SECONDS="0.5")
        started = time.monotonic()
        response = login(client, "alice")
        elapsed = time.monotonic() - started

    assert UNAVAILABLE in response.content
    assert elapsed < 5, f"the login page waited {elapsed:.1f} s on a silent directory"


def test_a_login_refused_because_the_directory_is_down_does_not_count_as_a_failure(client, use_ldap, company,
                                                                                   directory, settings):
    directory.stop()
    for _ in range(settings.VDI_LOGIN_MAX_FAILURES_PER_ACCOUNT + 2):
        login(client, "alice")
    directory.start()

    login(client, "alice")

    assert client.session.get("_auth_user_id") == str(User.objects.get(username="alice").pk)
    assert not LoginLockout.objects.exists()


def test_a_sync_against_a_stopped_directory_fails_and_changes_nothing(use_ldap, company, directory):
    run_sync()
    before = snapshot_of_accounts()
    directory.stop()

    run = run_sync()

    assert run.status == Status.FAILED
    assert "cannot reach the directory" in run.errors[0]
    assert snapshot_of_accounts() == before and all(active for active, _ in before.values())


def test_a_sync_that_finds_no_users_changes_nothing(use_ldap, company):
    run_sync()
    before = snapshot_of_accounts()
    # A search base moved or emptied on the directory side: the search succeeds with nothing in it.
    use_ldap(AUTH_LDAP_USER_SEARCH_BASE="ou=services,dc=example,dc=com")

    run = run_sync()

    assert run.status == Status.FAILED and "returned no users" in run.errors[0]
    assert snapshot_of_accounts() == before


def test_a_sync_whose_group_search_fails_changes_nothing(use_ldap, company):
    run_sync()
    before = snapshot_of_accounts()
    use_ldap(AUTH_LDAP_GROUP_SEARCH_BASE="ou=gone,dc=example,dc=com")

    run = run_sync()

    assert run.status == Status.FAILED and "refused a search" in run.errors[0]
    assert snapshot_of_accounts() == before


def test_a_sync_with_a_wrong_bind_password_changes_nothing(use_ldap, company):
    run_sync()
    before = snapshot_of_accounts()
    use_ldap(AUTH_LDAP_BIND_PASSWORD="not-the-service-password")

    run = run_sync()

    assert run.status == Status.FAILED and "refused the bind DN" in run.errors[0]
    assert snapshot_of_accounts() == before


def test_groups_that_suddenly_look_empty_hold_back_the_removals(use_ldap, company, directory, settings):
    run_sync()
    before = snapshot_of_accounts()
    # What an ACL change hiding `member` from the service account looks like: every group empty.
    for cn in ["Engineering", "Finance", "Contractors", "Marketing"]:
        directory.replace_values(group_dn(cn), "member", ["cn=vdi-broker,ou=services,dc=example,dc=com"])

    held = run_sync()

    assert held.status == Status.HELD and held.removals_held > 0
    assert "looks like a directory fault" in held.errors[0]
    assert snapshot_of_accounts() == before

    applied = run_sync(allow_mass_removal=True)  # an admin checked: the directory is right
    assert applied.status == Status.SUCCEEDED
    assert not any(active for active, _ in snapshot_of_accounts().values())


def test_a_few_removals_at_once_are_not_held(use_ldap, company, directory):
    run_sync()
    directory.remove_value(group_dn("Engineering"), "member", user_dn("alice"))

    run = run_sync()

    assert run.status == Status.SUCCEEDED and run.users_deactivated == 1


def test_a_directory_lost_while_the_sync_reads_changes_nothing(use_ldap, company, directory, monkeypatch):
    """The directory really stops between the user search and the group search (the hook only
    picks the moment)."""
    from identity import directory as reader

    run_sync()
    before = snapshot_of_accounts()
    read_users = reader._read_users

    def read_users_then_lose_the_directory(connection, config):
        index = read_users(connection, config)
        directory.stop()
        return index

    monkeypatch.setattr(reader, "_read_users", read_users_then_lose_the_directory)
    run = run_sync()

    assert run.status == Status.FAILED and "stopped answering" in run.errors[0]
    assert snapshot_of_accounts() == before
    assert DirectoryAccount.objects.filter(missing_since__isnull=False).count() == 0


def test_a_directory_that_cuts_the_results_short_fails_the_sync(tmp_path, use_ldap, company):
    """A size limit the service account may not exceed: a cut-short list of users must fail the
    run, not read as users who left."""
    from tests.identity.conftest import seed_ldif
    from tests.support.slapd import Slapd

    limited = Slapd(tmp_path / "limited", size_limit=3, service_unlimited=False)
    limited.start(seed_ldif())
    try:
        use_ldap(AUTH_LDAP_SERVER_URI=limited.uri, AUTH_LDAP_BIND_PASSWORD=limited.service_password)
        run = run_sync()
    finally:
        limited.stop()

    assert run.status == Status.FAILED and "size limit" in run.errors[0]
    assert not User.objects.exists()
