"""Brute force is throttled per account and per client address, briefly, visibly, and clearably."""

import time

import pytest
from django.core.management import call_command
from django.urls import reverse

from identity.models import LoginLockout
from tests.identity.conftest import PASSWORDS, login

LOCKED = b"Too many failed attempts; try again in 15 minutes."


@pytest.fixture
def alice(django_user_model):
    return django_user_model.objects.create_user("alice", password="alice-local-Pw-1")


def fail(client, username, times, address="10.0.0.66"):
    for _ in range(times):
        response = login(client, username, "wrong-password", REMOTE_ADDR=address)
        assert response.status_code == 200
    return response


def test_five_failures_lock_the_account_with_a_clear_message(client, alice):
    fail(client, "alice", 4)
    assert LOCKED not in fail(client, "alice", 1).content  # the fifth failure says "wrong password"...

    response = login(client, "alice", "alice-local-Pw-1", REMOTE_ADDR="10.0.0.66")  # ...then even the right one

    assert LOCKED in response.content
    assert "_auth_user_id" not in client.session
    lockout = LoginLockout.objects.get()
    assert (lockout.scope, lockout.key, lockout.failures) == ("account", "alice", 5)


def test_the_account_counter_ignores_the_case_of_the_user_name(client, alice):
    for name in ["alice", "Alice", "ALICE", "aLiCe", "alicE"]:
        fail(client, name, 1)

    assert LOCKED in login(client, "alice", "alice-local-Pw-1", REMOTE_ADDR="10.0.0.66").content


def test_a_lockout_ends_by_itself(client, alice, settings):
    settings.VDI_LOGIN_LOCKOUT_SECONDS = 1
    fail(client, "alice", 5)
    assert b"Too many failed attempts; try again in 1 minute." in login(client, "alice", "alice-local-Pw-1").content

    time.sleep(1.1)
    login(client, "alice", "alice-local-Pw-1", REMOTE_ADDR="10.0.0.66")

    assert client.session["_auth_user_id"] == str(alice.pk)


def test_failures_before_a_lockout_do_not_count_again_after_it(client, alice, settings):
    settings.VDI_LOGIN_LOCKOUT_SECONDS = 1
    fail(client, "alice", 5)
    time.sleep(1.1)

    fail(client, "alice", 1)  # one new failure within the window is one, not six

    assert LoginLockout.objects.count() == 1
    login(client, "alice", "alice-local-Pw-1", REMOTE_ADDR="10.0.0.66")
    assert client.session["_auth_user_id"] == str(alice.pk)


def test_an_attacker_elsewhere_cannot_lock_the_owner_out_where_they_logged_in_before(client, alice):
    login(client, "alice", "alice-local-Pw-1", REMOTE_ADDR="192.0.2.10")  # the owner's usual address
    client.logout()

    fail(client, "alice", 5, address="10.0.0.66")
    assert LOCKED in login(client, "alice", "alice-local-Pw-1", REMOTE_ADDR="10.0.0.66").content

    login(client, "alice", "alice-local-Pw-1", REMOTE_ADDR="192.0.2.10")
    assert client.session["_auth_user_id"] == str(alice.pk)


def test_twenty_failures_from_one_address_lock_that_address_only(client, alice, django_user_model):
    for n in range(20):
        fail(client, f"guess{n}", 1, address="10.0.0.66")

    assert LOCKED in login(client, "alice", "alice-local-Pw-1", REMOTE_ADDR="10.0.0.66").content

    login(client, "alice", "alice-local-Pw-1", REMOTE_ADDR="10.0.0.7")
    assert client.session["_auth_user_id"] == str(alice.pk)
    assert LoginLockout.objects.filter(scope="address", key="10.0.0.66").exists()


def test_a_locked_account_costs_the_directory_nothing(client, use_ldap, company, directory):
    fail(client, "alice", 5)
    directory.stop()  # a refused login must not even reach the directory

    response = login(client, "alice", PASSWORDS["alice"], REMOTE_ADDR="10.0.0.66")

    assert LOCKED in response.content


def test_wrong_directory_passwords_are_counted(client, use_ldap, company):
    fail(client, "alice", 5)

    assert LOCKED in login(client, "alice", PASSWORDS["alice"], REMOTE_ADDR="10.0.0.66").content


def test_the_admin_login_page_is_throttled_too(client, django_user_model):
    # The admin logs in through the portal's login (and its second step, identity/mfa/).
    django_user_model.objects.create_superuser("root", password="root-Pw-0001")
    admin_login = client.post(reverse("admin:login"), {"username": "root", "password": "nope"})
    assert admin_login.status_code == 302 and admin_login["Location"].startswith(reverse("portal:login"))
    for _ in range(5):
        client.post(reverse("portal:login"), {"username": "root", "password": "nope"}, REMOTE_ADDR="10.0.0.66")

    response = client.post(reverse("portal:login"), {"username": "root", "password": "root-Pw-0001"},
                           REMOTE_ADDR="10.0.0.66")

    assert LOCKED in response.content and "_auth_user_id" not in client.session


def test_the_admin_sees_and_clears_lockouts(client, alice, admin_client):
    fail(client, "alice", 5)

    listing = admin_client.get(reverse("admin:identity_loginlockout_changelist") + "?state=active")
    assert b"alice" in listing.content

    lockout = LoginLockout.objects.get()
    admin_client.post(reverse("admin:identity_loginlockout_changelist"),
                      {"action": "clear_lockouts", "_selected_action": [lockout.pk]})
    lockout.refresh_from_db()
    assert lockout.cleared_at is not None and lockout.cleared_by.username == "admin"

    login(client, "alice", "alice-local-Pw-1", REMOTE_ADDR="10.0.0.66")
    assert client.session["_auth_user_id"] == str(alice.pk)


def test_a_break_glass_command_clears_lockouts(client, alice, capsys):
    fail(client, "alice", 5)

    call_command("clear_login_lockouts", "--account", "Alice")

    assert "cleared 1 lockout(s)" in capsys.readouterr().out
    login(client, "alice", "alice-local-Pw-1", REMOTE_ADDR="10.0.0.66")
    assert client.session["_auth_user_id"] == str(alice.pk)
